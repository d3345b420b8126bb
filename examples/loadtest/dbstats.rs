//! What a measured phase cost PostgreSQL, from its cumulative statistics: blocks found in
//! `shared_buffers` and blocks it had to read (from the OS's cache or the disk), WAL written and
//! the full-page images in it (the first change of a page after a checkpoint logs the whole page).
//! Per request these say why the same path slows on a larger database: more of its pages miss the
//! buffer cache, and more of its changes touch a page for the first time since the checkpoint.
//! The blocks are the database's (the outbox's and the generator's checks included) and the WAL
//! the server's (autovacuum's and the checkpointer's too), so they are close, not exact.

use std::time::Duration;

use sqlx::PgPool;

#[derive(Clone, Copy, Default)]
struct Counters {
    blocks_hit: i64,
    blocks_read: i64,
    wal_fpi: i64,
    wal_bytes: i64,
}

pub struct Meter {
    db: PgPool,
    start: Counters,
}

/// A phase's cost per request.
#[derive(Clone, Copy, Default)]
pub struct PerRequest {
    pub blocks_hit: f64,
    pub blocks_read: f64,
    pub wal_fpi: f64,
    pub wal_bytes: f64,
}

impl PerRequest {
    pub fn describe(&self) -> String {
        format!(
            "{:.1} blocks hit, {:.2} read, {:.2} full-page images, {:.1} kB WAL",
            self.blocks_hit,
            self.blocks_read,
            self.wal_fpi,
            self.wal_bytes / 1024.0
        )
    }
}

async fn counters(db: &PgPool) -> Counters {
    // Backends publish their statistics at most once a second and when they go idle: the reading
    // at a phase's end waits for the last second's to arrive.
    let read = sqlx::query_as::<_, (i64, i64, i64, i64)>(
        "select d.blks_hit, d.blks_read, w.wal_fpi, w.wal_bytes::bigint
         from pg_stat_database d, pg_stat_wal w where d.datname = current_database()",
    )
    .fetch_one(db)
    .await;
    match read {
        Ok((blocks_hit, blocks_read, wal_fpi, wal_bytes)) => Counters {
            blocks_hit,
            blocks_read,
            wal_fpi,
            wal_bytes,
        },
        Err(_) => Counters::default(),
    }
}

impl Meter {
    pub async fn start(db: &PgPool) -> Self {
        // The phase before's statistics are in before this one's start.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        Self {
            db: db.clone(),
            start: counters(db).await,
        }
    }

    pub async fn stop(self, requests: usize) -> PerRequest {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let end = counters(&self.db).await;
        let per = |end: i64, start: i64| (end - start).max(0) as f64 / requests.max(1) as f64;
        PerRequest {
            blocks_hit: per(end.blocks_hit, self.start.blocks_hit),
            blocks_read: per(end.blocks_read, self.start.blocks_read),
            wal_fpi: per(end.wal_fpi, self.start.wal_fpi),
            wal_bytes: per(end.wal_bytes, self.start.wal_bytes),
        }
    }
}
