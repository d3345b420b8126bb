//! Operator commands on the service's own binary, for when Stripe and our records must be compared
//! by hand: `entitle reconcile --since 72h`, `entitle replay <event_id>`, `entitle order <id>`.
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
    stripe::{ProviderError, retrieve::retrieve_event},
};

pub const USAGE: &str = "usage: entitle [serve]
       entitle reconcile --since <age, e.g. 90m, 72h, 7d>
       entitle replay <stripe event id>
       entitle order <order id>";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Help,
    Operator(OperatorCommand),
}

#[derive(Debug, PartialEq, Eq)]
pub enum OperatorCommand {
    Reconcile { since: Duration },
    Replay { event_id: String },
    Order { order_id: Uuid },
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
        ["order", id] => Uuid::parse_str(id)
            .map(|order_id| OperatorCommand::Order { order_id })
            .map_err(|_| format!("`{id}` is not an order id (a UUID)")),
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
            let report = reconcile_since(&db, &stripe, since).await?;
            Ok(format!(
                "listed {} events since {}; applied {} that had not been processed\n",
                report.listed,
                DateTime::<Utc>::from_timestamp(since, 0).unwrap_or_default(),
                report.applied
            ))
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
    }
}

/// The order, each event applied to it with what that event changed, then changes made by other
/// paths (the return page's sync).
async fn describe_order(db: &sqlx::PgPool, order_id: Uuid) -> Result<String, CommandError> {
    type OrderRow = (
        String,
        String,
        String,
        i64,
        i64,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let order: Option<OrderRow> = sqlx::query_as(
        "select user_id, plan_id, status, amount, amount_refunded, currency, created_at, paid_at
         from orders where id = $1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    let Some((user_id, plan_id, status, amount, refunded, currency, created_at, paid_at)) = order else {
        return Err(CommandError::NotFound(format!("no order {order_id}")));
    };
    let events: Vec<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
        "select event_id, event_type, outcome, received_at from processed_webhook_events
         where order_id = $1 order by received_at, event_id",
    )
    .bind(order_id)
    .fetch_all(db)
    .await?;
    let changes: Vec<(Option<String>, String)> = sqlx::query_as(
        "select stripe_event_id, format('credits %s (%s)', case when delta > 0 then '+' || delta else delta::text end, kind), created_at
         from credit_ledger where order_id = $1
         union all
         select stripe_event_id, format('entitlement %s: %s%s', key, change, coalesce(' - ' || detail, '')), created_at
         from entitlement_history where order_id = $1
         order by 3",
    )
    .bind(order_id)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|(event, change, _): (Option<String>, String, DateTime<Utc>)| (event, change))
    .collect();

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
    for (event_id, event_type, outcome, at) in &events {
        let _ = writeln!(out, "  {at}  {event_id}  {event_type} -> {outcome}");
        for (_, change) in changes.iter().filter(|(cause, _)| cause.as_deref() == Some(event_id)) {
            let _ = writeln!(out, "      {change}");
        }
    }
    let others: Vec<_> = changes
        .iter()
        .filter(|(cause, _)| !events.iter().any(|(id, ..)| cause.as_deref() == Some(id)))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "changes by other paths:");
        for (cause, change) in others {
            let _ = writeln!(out, "      {change}  [{}]", cause.as_deref().unwrap_or("-"));
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
    fn the_three_operator_commands_and_serve_parse() {
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
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("order {id}")),
            Ok(Command::Operator(OperatorCommand::Order { order_id: id }))
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
            "dance",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }
}
