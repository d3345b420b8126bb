//! `job_runs`: one row per run of a periodic job, written by the instance that held the job's lock
//! (`store::job_locks`) for the whole run. Times are `clock_timestamp()`, not the transaction's
//! `now()`, so a row's start and finish are when they happened.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Records that `instance` started a run of `job`; the run's id.
pub async fn start(conn: &mut PgConnection, job: &str, instance: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into job_runs (job, instance_id) values ($1, $2) returning id",
        job,
        instance
    )
    .fetch_one(conn)
    .await
}

/// Records how the run ended (`ok` or `failed`).
pub async fn finish(conn: &mut PgConnection, run: i64, outcome: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update job_runs set finished_at = clock_timestamp(), outcome = $2 where id = $1",
        run,
        outcome
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct JobRun {
    pub job: String,
    pub instance_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// Every recorded run, oldest first within each job.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<JobRun>, sqlx::Error> {
    sqlx::query_as!(
        JobRun,
        "select job, instance_id, started_at, finished_at, outcome from job_runs order by job, started_at, id"
    )
    .fetch_all(conn)
    .await
}

/// Whether a run of `job` started within the last `within_secs`: the fleet's last run, on
/// whichever instance.
pub async fn started_within(conn: &mut PgConnection, job: &str, within_secs: f64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (
             select 1 from job_runs
             where job = $1 and started_at > clock_timestamp() - make_interval(secs => $2)
           ) as "recent!""#,
        job,
        within_secs
    )
    .fetch_one(conn)
    .await
}
