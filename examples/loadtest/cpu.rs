//! Where the machine's CPU went during a measured phase, from `/proc`: the whole machine's busy
//! time (`/proc/stat`) and each side's share (`/proc/<pid>/stat` utime + stime) — PostgreSQL's
//! processes, the service's processes and this process (the load generator, the Stripe emulator
//! and the outbox's receiver). With every core busy the machine is CPU-bound, and the split says
//! who spent it.

use std::time::Instant;

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux of note).
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Meter {
    started: Instant,
    machine: Machine,
    postgres: u64,
    service: u64,
    generator: u64,
    service_pids: Vec<u32>,
}

/// The phase's CPU in cores (1.0 = one core busy all the time).
#[derive(Clone, Copy, Default)]
pub struct Used {
    pub cores: usize,
    /// Every core's busy time over the phase's length.
    pub busy: f64,
    pub postgres: f64,
    pub service: f64,
    pub generator: f64,
}

impl Used {
    /// `busy 1.96 of 2 cores: postgres 1.10, service 0.60, generator 0.24`
    pub fn describe(&self) -> String {
        format!(
            "busy {:.2} of {} cores: postgres {:.2}, service {:.2}, generator {:.2}",
            self.busy, self.cores, self.postgres, self.service, self.generator
        )
    }
}

impl Meter {
    pub fn start(service_pids: &[u32]) -> Self {
        Self {
            started: Instant::now(),
            machine: Machine::now(),
            postgres: postgres_ticks(),
            service: service_pids.iter().map(|pid| process_ticks(*pid)).sum(),
            generator: process_ticks(std::process::id()),
            service_pids: service_pids.to_vec(),
        }
    }

    pub fn stop(self) -> Used {
        let seconds = self.started.elapsed().as_secs_f64();
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let machine = Machine::now();
        let service: u64 = self.service_pids.iter().map(|pid| process_ticks(*pid)).sum();
        let (total, idle) = (
            machine.total.saturating_sub(self.machine.total),
            machine.idle.saturating_sub(self.machine.idle),
        );
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Used {
            cores: cpus,
            busy: match total {
                0 => 0.0,
                _ => cpus as f64 * total.saturating_sub(idle) as f64 / total as f64,
            },
            // A backend that exited during the phase takes its ticks with it: Postgres's share is
            // a lower bound (the runs keep their connections, so it is close).
            postgres: cores(postgres_ticks().saturating_sub(self.postgres)),
            service: cores(service.saturating_sub(self.service)),
            generator: cores(process_ticks(std::process::id()).saturating_sub(self.generator)),
        }
    }
}

/// `/proc/stat`'s first line: every core's ticks, and the idle (and iowait) ones among them.
struct Machine {
    total: u64,
    idle: u64,
}

impl Machine {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Self { total, idle }
    }
}

/// utime + stime of a process, in ticks; 0 if it is gone.
fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name, in parentheses, may hold spaces: the fields after it are counted from
    // its closing parenthesis (utime and stime are the 14th and 15th fields of the line).
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Every PostgreSQL process's CPU (its name is `postgres`), however many backends there are.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .map(process_ticks)
        .sum()
}
