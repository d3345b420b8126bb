//! Operator commands on the service's own binary, for when Stripe and our records must be compared
//! by hand: `entitle reconcile --since 72h`, `entitle replay <event_id>`, `entitle order <id>`,
//! `entitle failed-events`.
//! They use the same configuration and the same functions as the server; `entitle` alone serves.

use std::{fmt::Write, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    config::Config,
    error::AppError,
    fulfillment::process_event,
    reconcile::missed_events::reconcile_since,
    startup::{StartupError, check_service_mode, connect, stripe_client},
    store::{
        order_history::{self, AppliedEvent, OrderSummary},
        reconciler,
    },
    stripe::{ProviderError, retrieve::retrieve_event},
};

pub const USAGE: &str = "usage: entitle [serve]
       entitle reconcile --since <age, e.g. 90m, 72h, 7d>
       entitle replay <stripe event id>
       entitle order <order id>
       entitle review
       entitle failed-events       (missed events the reconciler could not apply)";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Help,
    Operator(OperatorCommand),
}

#[derive(Debug, PartialEq, Eq)]
pub enum OperatorCommand {
    Reconcile {
        since: Duration,
    },
    Replay {
        event_id: String,
    },
    Order {
        order_id: Uuid,
    },
    FailedEvents,
    /// Orders whose payment did not match them, waiting for a person.
    Review,
}

pub fn parse_command(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = match args.as_slice() {
        [] | ["serve"] => return Ok(Command::Serve),
        ["help" | "--help" | "-h"] => return Ok(Command::Help),
        ["reconcile", "--since", age] => parse_age(age).map(|since| OperatorCommand::Reconcile { since }),
        ["replay", event_id] if event_id.starts_with("evt_") => Ok(OperatorCommand::Replay {
            event_id: (*event_id).to_owned(),
        }),
        ["review"] => Ok(OperatorCommand::Review),
        ["order", id] => Uuid::parse_str(id)
            .map(|order_id| OperatorCommand::Order { order_id })
            .map_err(|_| format!("`{id}` is not an order id (a UUID)")),
        ["failed-events"] => Ok(OperatorCommand::FailedEvents),
        _ => Err(format!("unknown command `{}`", args.join(" "))),
    };
    operator.map(Command::Operator)
}

/// `90m`, `72h`, `7d`, `30s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not an age like 90m, 72h or 7d");
    let split = text.len().checked_sub(1).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86_400,
        _ => return Err(invalid()),
    };
    Ok(Duration::from_secs(seconds))
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    App(#[from] AppError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
}

/// Runs an operator command and returns its report.
pub async fn run_operator_command(config: Config, command: OperatorCommand) -> Result<String, CommandError> {
    let db = connect(&config).await?;
    check_service_mode(&db, &config).await?;
    let stripe = stripe_client(&config, config.bind_addr).map_err(StartupError::from)?;
    match command {
        OperatorCommand::Reconcile { since } => {
            let since = Utc::now().timestamp() - since.as_secs() as i64;
            let report = reconcile_since(&db, &stripe, since, config.reconciler_max_attempts).await?;
            let mut out = format!(
                "listed {} events since {}; applied {} that had not been processed\n",
                report.listed,
                DateTime::<Utc>::from_timestamp(since, 0).unwrap_or_default(),
                report.applied
            );
            if report.failed > 0 || report.skipped_set_aside > 0 {
                let _ = writeln!(
                    out,
                    "{} failed ({} now set aside); {} skipped as set aside earlier: see `entitle failed-events`",
                    report.failed, report.set_aside, report.skipped_set_aside
                );
            }
            Ok(out)
        }
        OperatorCommand::Replay { event_id } => {
            let done: Option<(String, DateTime<Utc>)> =
                sqlx::query_as("select outcome, received_at from processed_webhook_events where event_id = $1")
                    .bind(&event_id)
                    .fetch_optional(&db)
                    .await?;
            if let Some((outcome, at)) = done {
                return Ok(format!(
                    "{event_id} was already applied at {at} ({outcome}); events apply once, so nothing changed\n"
                ));
            }
            let event = retrieve_event(&stripe, &event_id)
                .await
                .map_err(|err| AppError::PaymentProvider(ProviderError::Stripe(err)))?;
            let outcome = process_event(&db, &stripe, &event).await?;
            Ok(format!(
                "{event_id} ({}) applied: {}\n",
                event.event_type,
                outcome.as_str()
            ))
        }
        OperatorCommand::Order { order_id } => describe_order(&db, order_id).await,
        OperatorCommand::Review => orders_under_review(&db).await,
        OperatorCommand::FailedEvents => describe_failed_events(&db, config.reconciler_max_attempts).await,
    }
}

/// Each missed event the reconciler could not apply: set aside (skipped from now on) or still
/// retried, why it failed, and how to apply it by hand once the cause is fixed.
async fn describe_failed_events(db: &sqlx::PgPool, max_attempts: u32) -> Result<String, CommandError> {
    let failed = reconciler::unresolved(db).await?;
    if failed.is_empty() {
        return Ok("no missed event is failing: the reconciler applied everything it found\n".to_owned());
    }
    let mut out = String::new();
    for event in &failed {
        let created = DateTime::<Utc>::from_timestamp(event.event_created, 0).unwrap_or_default();
        let state = match event.set_aside_at {
            Some(at) => format!(
                "set aside at {at} after {}: later runs skip it",
                attempts(event.attempts)
            ),
            None => format!(
                "retrying: {} of {max_attempts} failed, the next run tries again",
                attempts(event.attempts)
            ),
        };
        let _ = writeln!(out, "{}  {} (created {created})", event.event_id, event.event_type);
        let _ = writeln!(out, "    {state}");
        let _ = writeln!(
            out,
            "    failed first at {}, last at {}: {}",
            event.first_failed_at, event.last_failed_at, event.last_error
        );
        let _ = writeln!(out, "    retry: entitle replay {}", event.event_id);
    }
    Ok(out)
}

fn attempts(count: i32) -> String {
    match count {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

/// Every order whose payment did not match it: nothing was granted, and someone must refund the
/// payment at Stripe or grant by hand.
async fn orders_under_review(db: &sqlx::PgPool) -> Result<String, CommandError> {
    let rows = order_history::under_review(db).await?;
    if rows.is_empty() {
        return Ok("no order is under review\n".to_owned());
    }
    let mut out = format!(
        "{} order(s) under review: the payment did not match; refund it at Stripe or grant by hand\n",
        rows.len()
    );
    for row in rows {
        let _ = writeln!(
            out,
            "  {}  user {}, plan {}, since {}: {}",
            row.id,
            row.user_id,
            row.plan_id,
            row.updated_at,
            row.review_reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    Ok(out)
}

/// The order, each event applied to it with what that event changed, then changes made by other
/// paths (the return page's sync).
async fn describe_order(db: &sqlx::PgPool, order_id: Uuid) -> Result<String, CommandError> {
    let Some(OrderSummary {
        user_id,
        plan_id,
        status,
        amount,
        amount_refunded: refunded,
        currency,
        created_at,
        paid_at,
    }) = order_history::summary(db, order_id).await?
    else {
        return Err(CommandError::NotFound(format!("no order {order_id}")));
    };
    let events = order_history::applied_events(db, order_id).await?;
    let changes = order_history::changes(db, order_id).await?;

    let mut out = String::new();
    let _ = writeln!(out, "order {order_id}: {status}");
    let _ = writeln!(
        out,
        "  user {user_id}, plan {plan_id}, {amount} {currency}, refunded {refunded}"
    );
    let _ = writeln!(
        out,
        "  created {created_at}, paid {}",
        paid_at.map_or("-".into(), |t| t.to_string())
    );
    let _ = writeln!(out, "events applied:");
    for AppliedEvent {
        event_id,
        event_type,
        outcome,
        received_at: at,
    } in &events
    {
        let _ = writeln!(out, "  {at}  {event_id}  {event_type} -> {outcome}");
        for change in changes
            .iter()
            .filter(|c| c.stripe_event_id.as_deref() == Some(event_id))
        {
            let _ = writeln!(out, "      {}", change.change);
        }
    }
    let others: Vec<_> = changes
        .iter()
        .filter(|c| !events.iter().any(|e| c.stripe_event_id.as_deref() == Some(&e.event_id)))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "changes by other paths:");
        for change in others {
            let cause = change.stripe_event_id.as_deref().unwrap_or("-");
            let _ = writeln!(out, "      {}  [{cause}]", change.change);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        parse_command(&line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn the_operator_commands_and_serve_parse() {
        assert_eq!(parse(""), Ok(Command::Serve));
        assert_eq!(parse("serve"), Ok(Command::Serve));
        assert_eq!(parse("--help"), Ok(Command::Help));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(
            parse("reconcile --since 72h"),
            Ok(Command::Operator(OperatorCommand::Reconcile {
                since: Duration::from_secs(72 * 3600)
            }))
        );
        assert_eq!(
            parse("replay evt_123"),
            Ok(Command::Operator(OperatorCommand::Replay {
                event_id: "evt_123".into()
            }))
        );
        assert_eq!(parse("review"), Ok(Command::Operator(OperatorCommand::Review)));
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("order {id}")),
            Ok(Command::Operator(OperatorCommand::Order { order_id: id }))
        );
        assert_eq!(
            parse("failed-events"),
            Ok(Command::Operator(OperatorCommand::FailedEvents))
        );
    }

    #[test]
    fn malformed_commands_are_refused() {
        for line in [
            "reconcile",
            "reconcile --since 72",
            "reconcile --since h",
            "replay 123",
            "order 42",
            "failed-events evt_123",
            "failed_events",
            "dance",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }
}
