//! Closed-loop load: a number of workers each run one operation after another, and every
//! operation's latency is recorded. Percentiles come from the sorted samples (exact, no buckets).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// When a run stops: after a fixed number of operations, or when time is up.
#[derive(Clone, Copy)]
pub enum Until {
    Count(usize),
    Elapsed(Duration),
}

pub struct Run {
    pub elapsed: Duration,
    /// Operations that reported failure (for HTTP: a non-2xx answer or no answer).
    pub failed: usize,
    latencies: Vec<Duration>,
}

impl Run {
    /// A run measured elsewhere (pgbench's log), its latencies in any order.
    pub fn from_latencies(elapsed: Duration, failed: usize, mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            elapsed,
            failed,
            latencies,
        }
    }

    pub fn requests(&self) -> usize {
        self.latencies.len()
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at quantile `q` (0.5 = median), in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1000.0
    }
}

/// Runs `operation(i)` for i = 0, 1, 2, … on `workers` concurrent tasks. The operation returns
/// whether it succeeded.
pub async fn drive<F, Fut>(workers: usize, until: Until, operation: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let operation = Arc::new(operation);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (operation, next, failed) = (operation.clone(), next.clone(), failed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let done = match until {
                        Until::Count(count) => i >= count,
                        Until::Elapsed(limit) => started.elapsed() >= limit,
                    };
                    if done {
                        return latencies;
                    }
                    let sent = Instant::now();
                    if !operation(i).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a load worker panicked"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Run {
        elapsed,
        failed: failed.load(Ordering::Relaxed),
        latencies,
    }
}

/// The most memory the process has held (VmHWM) since it started or since `reset_peak_rss`, in
/// MiB. `proc_dir` is `/proc/self` or `/proc/<pid>`.
pub fn peak_rss_mib(proc_dir: &str) -> f64 {
    proc_status_mib(proc_dir, "VmHWM:")
}

/// The memory the process holds now (VmRSS), in MiB.
pub fn rss_mib(proc_dir: &str) -> f64 {
    proc_status_mib(proc_dir, "VmRSS:")
}

/// Restarts VmHWM from the current RSS (Linux `clear_refs` 5), so the peak of one phase can be
/// read. Returns false where the kernel does not allow it; the peak then covers the whole run.
pub fn reset_peak_rss(proc_dir: &str) -> bool {
    std::fs::write(format!("{proc_dir}/clear_refs"), "5").is_ok()
}

fn proc_status_mib(proc_dir: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("{proc_dir}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
