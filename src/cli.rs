//! Operator commands on the service's own binary, for when Stripe and our records must be compared
//! by hand: `entitle reconcile --since 72h`, `entitle replay <event_id>`, `entitle order <id>`,
//! `entitle failed-events`, `entitle review`, `entitle user <id>`, `entitle deliveries`,
//! `entitle redeliver`, `entitle verify`; `entitle <command> --help` documents each.
//! They use the same configuration and the same functions as the server; `entitle` alone serves.

use std::{ffi::OsString, fmt::Write, time::Duration};

use chrono::{DateTime, Utc};
use clap::{
    ArgGroup, CommandFactory, Parser, Subcommand,
    error::{ContextKind, ContextValue},
};
use uuid::Uuid;

use crate::{
    config::Config,
    credits::{self, Balance, GrantRow, LedgerRow},
    domain_error::DomainError,
    fulfillment::process_event,
    metrics::Metrics,
    outbox::{operator, payload::parse_webhook_id},
    reconcile::{
        drift::{self, Finding, VerifyReport},
        missed_events::reconcile_since,
    },
    startup::{StartupError, check_service_mode, connect, stripe_client},
    store::{
        order_history::{self, AppliedEvent, OrderDetail},
        outbox_deliveries::Redelivery,
        processed_events, reconciler,
    },
    stripe::retrieve::retrieve_event,
};

/// `entitle` and its operator commands, parsed by clap so each command documents itself.
#[derive(Debug, Parser)]
#[command(
    name = "entitle",
    about = "Turns Stripe Checkout payments into credits and entitlements, granted exactly once.",
    long_about = "Turns Stripe Checkout payments into credits and entitlements, granted exactly once.\n\n\
                  Without a command it serves. The operator commands use the server's environment; in\n\
                  emulator mode they talk to the running server's emulator."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// Parses `entitle`'s arguments (the first is the program's name). A refused value also shows
    /// its command's usage, which clap itself prints only for a missing or unknown argument.
    pub fn try_parse_args(args: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Self, clap::Error> {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        Self::try_parse_from(&args).map_err(|mut err| {
            if err.use_stderr() && err.get(ContextKind::Usage).is_none() {
                let mut cli = Self::command();
                cli.build();
                let usage = match args.get(1).and_then(|name| cli.find_subcommand_mut(name)) {
                    Some(command) => command.render_usage(),
                    None => cli.render_usage(),
                };
                err.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
            }
            err
        })
    }

    /// What to run: `entitle` alone serves.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve)
    }
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the API, the webhook and the reconciler (also what `entitle` alone does)
    Serve,
    #[command(flatten)]
    Operator(OperatorCommand),
}

#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum OperatorCommand {
    /// Apply every missed event of a recent period, oldest first
    Reconcile {
        /// How far back to list Stripe's events: a number and s, m, h or d (90m, 72h, 7d)
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        since: Duration,
    },
    /// Compare our records with Stripe's objects as they are now, and optionally fix them
    ///
    /// Every live subscription (status, period end, cancel at period end, its latest paid
    /// invoice) and every order paid or opened in the window (amount refunded, disputes, a pending
    /// checkout Stripe completed or expired; checkouts of the last 10 minutes are left to their
    /// webhook). Prints each disagreement and exits 1 when there is any. With --fix, Stripe's
    /// state is applied through the webhook's own event path (each fix shows in `entitle order`
    /// as an event `verify_…`), everything is compared again, and it exits 0 when nothing is left.
    Verify {
        /// How far back to look at orders: a number and s, m, h or d (72h, 30d)
        #[arg(long, value_name = "AGE", value_parser = parse_age, default_value = "30d")]
        since: Duration,
        /// Apply Stripe's state where it differs from ours
        #[arg(long)]
        fix: bool,
    },
    /// Fetch one event from Stripe and apply it, unless it was already applied
    Replay {
        /// The Stripe event id (evt_…)
        #[arg(value_parser = parse_event_id)]
        event_id: String,
    },
    /// Show an order, each event applied to it and what each changed
    Order {
        /// The order id (a UUID)
        #[arg(value_parser = parse_order_id)]
        order_id: Uuid,
    },
    /// List missed events the reconciler could not apply: why, and how to retry them
    FailedEvents,
    /// List orders whose payment did not match them, waiting for a person
    Review,
    /// Show a user's credits: the balance, the grants in the order they are spent, the latest
    /// ledger rows
    ///
    /// Expiries that fell due (a grant past its date, a reservation past its TTL) are written
    /// first, as any read of the balance does, so what is shown is what the user can spend.
    User {
        /// The user id, as your app's tokens carry it in `sub`
        #[arg(value_parser = parse_user_id)]
        user_id: String,
        /// How many of the latest ledger rows to show (1-1000)
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// List the app's webhook endpoints and the latest deliveries to them, newest first
    ///
    /// Each delivery shows its message (msg_…, the webhook-id the app receives), type and user,
    /// where it goes, where it stands (delivered, pending with its next attempt, abandoned), its
    /// attempts and what the last one met, and its own id for `entitle redeliver`.
    Deliveries {
        /// Only those that failed: abandoned, or pending after a failed attempt
        #[arg(long)]
        failed: bool,
        /// Only this user's messages
        #[arg(long, value_name = "USER_ID", value_parser = parse_user_id)]
        user: Option<String>,
        /// How many deliveries to show (1-1000)
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
    },
    /// Send webhook messages again: one delivery, one message to every endpoint, or everything
    /// written in a recent period
    ///
    /// The deliveries become pending and due now, whatever they were (delivered, abandoned, waiting
    /// for a retry), with the same webhook-id and body as before. A disabled endpoint they go to is
    /// enabled again, and the report says so.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "since"])))]
    Redeliver {
        /// A delivery id (a UUID) or a message id (msg_…), as `entitle deliveries` shows them
        #[arg(value_name = "ID", value_parser = parse_delivery_or_message_id)]
        id: Option<DeliveryOrMessage>,
        /// Every delivery of the messages written this recently: a number and s, m, h or d (1h, 3d)
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        since: Option<Duration>,
    },
}

/// `entitle verify`'s report, and whether it found nothing left to fix.
fn verify_report(report: &VerifyReport, since: DateTime<Utc>, fix: bool) -> (String, bool) {
    let mut out = format!(
        "compared {} orders (since {}) and {} live subscriptions with Stripe\n",
        report.orders_checked,
        since.format("%Y-%m-%d %H:%M UTC"),
        report.subscriptions_checked
    );
    let line = |out: &mut String, finding: &Finding, hint: &str| {
        let _ = writeln!(
            out,
            "  {:<18} {}: ours {}; Stripe {}{hint}",
            finding.kind.as_str(),
            finding.subject,
            finding.ours,
            finding.stripe
        );
    };
    if !fix {
        for finding in &report.found {
            let hint = if finding.fixable() {
                ""
            } else {
                " (a person must look: --fix cannot)"
            };
            line(&mut out, finding, hint);
        }
        let fixable = report.found.iter().filter(|f| f.fixable()).count();
        match report.found.len() {
            0 => out.push_str("no drift: our records agree with Stripe\n"),
            n => {
                let _ = writeln!(
                    out,
                    "{n} disagreements; {fixable} can be fixed with `entitle verify --fix`"
                );
            }
        }
        return (out, report.found.is_empty());
    }
    if !report.found.is_empty() {
        let _ = writeln!(
            out,
            "found {} disagreements; applied {} events built from Stripe's objects as they are now",
            report.found.len(),
            report.events_applied
        );
        for finding in &report.found {
            line(&mut out, finding, "");
        }
    }
    if report.remaining.is_empty() {
        out.push_str("no drift left: our records agree with Stripe\n");
    } else {
        let _ = writeln!(out, "{} disagreements left, for a person:", report.remaining.len());
        for finding in &report.remaining {
            line(&mut out, finding, "");
        }
    }
    (out, report.remaining.is_empty())
}

/// What `entitle redeliver <ID>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOrMessage {
    /// A bare UUID: a delivery's id, else a message's.
    Either(Uuid),
    /// `msg_…`: a message, to every endpoint.
    Message(Uuid),
}

fn parse_delivery_or_message_id(text: &str) -> Result<DeliveryOrMessage, String> {
    let invalid = || format!("`{text}` is not a delivery id (a UUID) or a message id (msg_…)");
    match text.strip_prefix("msg_") {
        Some(_) => parse_webhook_id(text)
            .map(DeliveryOrMessage::Message)
            .ok_or_else(invalid),
        None => Uuid::try_parse(text)
            .map(DeliveryOrMessage::Either)
            .map_err(|_| invalid()),
    }
}

/// `90m`, `72h`, `7d`, `30s`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not an age like 90m, 72h or 7d");
    let split = text.len().checked_sub(1).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    // An absurd age would overflow; Stripe keeps 30 days of events anyway.
    let seconds = number.checked_mul(unit_seconds).ok_or_else(invalid)?;
    Ok(Duration::from_secs(seconds))
}

/// Stripe would answer anything else with a 404; refused here, the operator learns what was wrong.
fn parse_event_id(text: &str) -> Result<String, String> {
    if text.starts_with("evt_") {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not a Stripe event id (evt_…)"))
    }
}

fn parse_order_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| format!("`{text}` is not an order id (a UUID)"))
}

/// The rule the server API holds user ids to, so an id no call could have used is refused here.
fn parse_user_id(text: &str) -> Result<String, String> {
    match credits::check_user_id("userId", text) {
        Ok(()) => Ok(text.to_owned()),
        Err(_) => Err(format!(
            "`{}` is not a user id (1 to 255 bytes without control characters)",
            text.escape_debug()
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Domain(#[from] DomainError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    NotFound(String),
    /// A report that is also a failure (`entitle verify` found drift): printed like a report,
    /// exit status 1.
    #[error("{0}")]
    Findings(String),
}

/// Runs an operator command and returns its report.
pub async fn run_operator_command(config: Config, command: OperatorCommand) -> Result<String, CommandError> {
    let db = connect(&config).await?;
    check_service_mode(&db, &config).await?;
    // A one-shot command: what its Stripe calls record is not scraped by anyone.
    let stripe = stripe_client(&config, config.bind_addr, Metrics::default()).map_err(StartupError::from)?;
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
        OperatorCommand::Verify { since, fix } => {
            // An age past 1970 means "everything" (and must not overflow, nor leave Postgres' range).
            let since = chrono::Duration::from_std(since)
                .ok()
                .and_then(|age| Utc::now().checked_sub_signed(age))
                .map_or(DateTime::UNIX_EPOCH, |since| since.max(DateTime::UNIX_EPOCH));
            let report = drift::verify(&db, &stripe, since, fix).await?;
            let (out, clean) = verify_report(&report, since, fix);
            if clean {
                Ok(out)
            } else {
                Err(CommandError::Findings(out))
            }
        }
        OperatorCommand::Replay { event_id } => {
            if let Some(done) = processed_events::applied(&db, &event_id).await? {
                return Ok(format!(
                    "{event_id} was already applied at {} ({}); events apply once, so nothing changed\n",
                    done.received_at, done.outcome
                ));
            }
            let event = retrieve_event(&stripe, &event_id).await.map_err(DomainError::from)?;
            let outcome = process_event(&db, &stripe, &event, None).await?;
            Ok(format!(
                "{event_id} ({}) applied: {}\n",
                event.event_type,
                outcome.as_str()
            ))
        }
        OperatorCommand::Order { order_id } => describe_order(&db, order_id).await,
        OperatorCommand::Review => orders_under_review(&db).await,
        OperatorCommand::FailedEvents => describe_failed_events(&db, config.reconciler_max_attempts).await,
        OperatorCommand::User { user_id, limit } => describe_user(&db, &user_id, limit).await,
        OperatorCommand::Deliveries { failed, user, limit } => {
            Ok(operator::describe_deliveries(&db, failed, user.as_deref(), limit).await?)
        }
        OperatorCommand::Redeliver { id, since } => redeliver(&db, id, since).await,
    }
}

async fn redeliver(
    db: &sqlx::PgPool,
    id: Option<DeliveryOrMessage>,
    since: Option<Duration>,
) -> Result<String, CommandError> {
    let tries: Vec<Redelivery> = match (id, since) {
        (Some(DeliveryOrMessage::Either(id)), _) => vec![Redelivery::Delivery(id), Redelivery::Message(id)],
        (Some(DeliveryOrMessage::Message(id)), _) => vec![Redelivery::Message(id)],
        (None, Some(since)) => {
            let since = chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
            vec![Redelivery::WrittenSince(
                Utc::now().checked_sub_signed(since).unwrap_or(DateTime::<Utc>::MIN_UTC),
            )]
        }
        (None, None) => unreachable!("clap requires an id or --since"),
    };
    for what in &tries {
        if let Some(report) = operator::redeliver(db, what).await? {
            return Ok(report);
        }
    }
    Err(CommandError::NotFound(match id {
        Some(_) => "no delivery or message has that id (see `entitle deliveries`)".to_owned(),
        None => "no message was written in that period, so nothing was sent again".to_owned(),
    }))
}

/// A user's credits as support needs them: what they can spend, what it is made of and in which
/// order it goes, and the latest changes with what caused each.
async fn describe_user(db: &sqlx::PgPool, user_id: &str, limit: i64) -> Result<String, CommandError> {
    // The balance first: it writes what fell due, so the grants read after it are spendable.
    let Balance {
        available,
        reserved,
        overdrawn,
        ..
    } = credits::balance(db, user_id).await?;
    let grants = credits::spendable_grants(db, user_id).await?;
    let rows = credits::latest_ledger_rows(db, user_id, limit).await?;

    let mut out = format!("user {user_id}: {available} available, {reserved} reserved, {overdrawn} overdrawn\n");
    if grants.is_empty() && rows.is_empty() {
        let _ = writeln!(
            out,
            "  no grants and no ledger rows: this user has never held credits (is it the id your tokens carry in `sub`?)"
        );
        return Ok(out);
    }
    if overdrawn > 0 {
        let _ = writeln!(
            out,
            "  owes {overdrawn}: a refund or dispute took back credits already spent; new credits pay it first"
        );
    }
    if grants.is_empty() {
        let _ = writeln!(out, "grants: nothing left to spend");
    } else {
        let _ = writeln!(
            out,
            "grants, in the order they are spent (expiring first, then oldest):"
        );
        for grant in &grants {
            let _ = writeln!(out, "  {}", describe_grant(grant));
        }
    }
    let _ = writeln!(out, "latest ledger rows, newest first (at most {limit}):");
    if rows.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for row in &rows {
        let _ = writeln!(out, "  {}", describe_ledger_row(row));
    }
    Ok(out)
}

fn describe_grant(grant: &GrantRow) -> String {
    let expires = grant
        .expires_at
        .map_or("never expires".to_owned(), |at| format!("expires {}", short_time(at)));
    let mut line = format!(
        "{}  {:<8}  {} of {} left, {expires}, granted {}",
        grant.id,
        grant.source.as_str(),
        grant.remaining,
        grant.granted,
        short_time(grant.created_at)
    );
    if let Some(order_id) = grant.order_id {
        let _ = write!(line, ", order {order_id}");
    }
    if let Some(reason) = &grant.reason {
        let _ = write!(line, ", reason {reason:?}");
    }
    line
}

fn describe_ledger_row(row: &LedgerRow) -> String {
    let causes: Vec<String> = [
        row.order_id.map(|id| format!("order {id}")),
        row.grant_id.map(|id| format!("grant {id}")),
        row.spend_id.map(|id| format!("spend {id}")),
        row.stripe_event_id.as_ref().map(|id| format!("event {id}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "{}  {:<19}  {:>+7}  {}",
        short_time(row.created_at),
        row.kind.as_str(),
        row.delta,
        if causes.is_empty() {
            "-".to_owned()
        } else {
            causes.join(", ")
        }
    )
}

/// To the second: the rows are read by people, side by side.
fn short_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
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
    let Some(OrderDetail {
        user_id,
        plan_id,
        status,
        amount,
        amount_refunded: refunded,
        currency,
        created_at,
        paid_at,
        ..
    }) = order_history::detail(db, order_id).await?
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
    use clap::error::ErrorKind;

    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_args(std::iter::once("entitle").chain(line.split_whitespace())).map(Cli::into_command)
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_operator_commands_and_serve_parse() {
        assert_eq!(parse("").unwrap(), Command::Serve);
        assert_eq!(parse("serve").unwrap(), Command::Serve);
        for (age, seconds) in [("72h", 72 * 3600), ("90m", 90 * 60), ("7d", 7 * 86_400), ("30s", 30)] {
            assert_eq!(
                parse(&format!("reconcile --since {age}")).unwrap(),
                Command::Operator(OperatorCommand::Reconcile {
                    since: Duration::from_secs(seconds)
                })
            );
        }
        assert_eq!(
            parse("replay evt_123").unwrap(),
            Command::Operator(OperatorCommand::Replay {
                event_id: "evt_123".into()
            })
        );
        assert_eq!(parse("review").unwrap(), Command::Operator(OperatorCommand::Review));
        let id = Uuid::new_v4();
        assert_eq!(
            parse(&format!("order {id}")).unwrap(),
            Command::Operator(OperatorCommand::Order { order_id: id })
        );
        assert_eq!(
            parse("failed-events").unwrap(),
            Command::Operator(OperatorCommand::FailedEvents)
        );
        assert_eq!(
            parse("user alice").unwrap(),
            Command::Operator(OperatorCommand::User {
                user_id: "alice".into(),
                limit: 20
            })
        );
        assert_eq!(
            parse("deliveries --failed --user alice --limit 5").unwrap(),
            Command::Operator(OperatorCommand::Deliveries {
                failed: true,
                user: Some("alice".into()),
                limit: 5
            })
        );
        assert_eq!(
            parse("deliveries").unwrap(),
            Command::Operator(OperatorCommand::Deliveries {
                failed: false,
                user: None,
                limit: 20
            })
        );
        let message = Uuid::new_v4();
        assert_eq!(
            parse(&format!("redeliver msg_{}", message.simple())).unwrap(),
            Command::Operator(OperatorCommand::Redeliver {
                id: Some(DeliveryOrMessage::Message(message)),
                since: None
            })
        );
        assert_eq!(
            parse(&format!("redeliver {message}")).unwrap(),
            Command::Operator(OperatorCommand::Redeliver {
                id: Some(DeliveryOrMessage::Either(message)),
                since: None
            })
        );
        assert_eq!(
            parse("redeliver --since 1h").unwrap(),
            Command::Operator(OperatorCommand::Redeliver {
                id: None,
                since: Some(Duration::from_secs(3600))
            })
        );
        assert_eq!(
            parse("user user_42 --limit 5").unwrap(),
            Command::Operator(OperatorCommand::User {
                user_id: "user_42".into(),
                limit: 5
            })
        );
    }

    #[test]
    fn malformed_commands_are_refused_as_usage_errors_that_say_why() {
        for (line, why, usage) in [
            ("reconcile", "--since", "Usage: entitle reconcile --since <AGE>"),
            ("reconcile --since 72", "`72` is not an age", "Usage: entitle reconcile"),
            ("reconcile --since h", "`h` is not an age", "Usage: entitle reconcile"),
            (
                "reconcile --since 99999999999999999d",
                "is not an age",
                "Usage: entitle reconcile",
            ),
            ("reconcile --since 3w", "`3w` is not an age", "Usage: entitle reconcile"),
            (
                "replay 123",
                "`123` is not a Stripe event id",
                "Usage: entitle replay <EVENT_ID>",
            ),
            ("replay", "<EVENT_ID>", "Usage: entitle replay <EVENT_ID>"),
            ("order 42", "`42` is not an order id", "Usage: entitle order <ORDER_ID>"),
            ("user", "<USER_ID>", "Usage: entitle user <USER_ID>"),
            ("user alice --limit 0", "0 is not in 1..=1000", "Usage: entitle user"),
            ("user alice --limit x", "invalid value 'x'", "Usage: entitle user"),
            ("failed-events evt_123", "'evt_123'", "Usage: entitle failed-events"),
            (
                "redeliver",
                "required arguments were not provided",
                "Usage: entitle redeliver",
            ),
            (
                "redeliver msg_x",
                "`msg_x` is not a delivery id",
                "Usage: entitle redeliver",
            ),
            ("redeliver 42", "`42` is not a delivery id", "Usage: entitle redeliver"),
            ("redeliver --since 1y", "`1y` is not an age", "Usage: entitle redeliver"),
            (
                "deliveries --limit 0",
                "0 is not in 1..=1000",
                "Usage: entitle deliveries",
            ),
            (
                "failed_events",
                "similar subcommand exists: 'failed-events'",
                "Usage: entitle [COMMAND]",
            ),
            ("dance", "'dance'", "Usage: entitle [COMMAND]"),
        ] {
            let err = parse(line).expect_err(line);
            assert_eq!(err.exit_code(), 2, "{line}");
            let text = err.to_string();
            let first_line = text.lines().next().unwrap_or_default();
            assert!(
                first_line.starts_with("error: ") && text.contains(why),
                "{line}: {text}"
            );
            assert!(text.contains(usage), "{line}: {text}");
        }
    }

    #[test]
    fn help_is_shown_for_the_binary_and_for_each_command() {
        for (line, shows) in [
            ("--help", "Commands:"),
            ("-h", "Commands:"),
            ("help", "failed-events"),
            ("reconcile --help", "--since <AGE>"),
            ("help reconcile", "--since <AGE>"),
            ("replay --help", "<EVENT_ID>"),
            ("order --help", "<ORDER_ID>"),
            ("review --help", "Usage: entitle review"),
            ("failed-events --help", "Usage: entitle failed-events"),
            ("user --help", "--limit <N>"),
            ("deliveries --help", "--failed"),
            ("help redeliver", "enabled again"),
            ("help user", "Expiries that fell due"),
            ("serve --help", "Usage: entitle serve"),
        ] {
            let help = parse(line).expect_err(line);
            assert_eq!(help.kind(), ErrorKind::DisplayHelp, "{line}");
            assert_eq!(help.exit_code(), 0, "{line}");
            assert!(help.to_string().contains(shows), "{line}: {help}");
        }
    }
}
