//! The command's closing tables, over all its passes: each hot path in every pass, the empty
//! database against the seeded one, one service process against several, and every target met or
//! missed. The first pass (the empty database, one process, unless `SEED`/`INSTANCES` say
//! otherwise) holds the throughput, latency and memory targets; the seeded pass the flatness and
//! the heavy user's reads.

use crate::{Report, cpu, dbstats, measure::Run, share};

/// A target of the issues, as measured.
pub struct Target {
    pub name: String,
    pub measured: String,
    pub met: bool,
}

/// A hot path's HTTP run in one pass, with its CPU and its share of the yardstick ceiling.
struct PathRun<'a> {
    name: &'static str,
    run: &'a Run,
    cpu: cpu::Used,
    db: dbstats::PerRequest,
    /// The SQL the target compares it with (pgbench's where it ran).
    ceiling: &'a Run,
}

fn paths<'a>(report: &Report<'a>) -> Vec<PathRun<'a>> {
    let mut paths = Vec::new();
    if let Some(o) = report.orders {
        let pgbench = o.pgbench.as_ref();
        paths.push(PathRun {
            name: "POST /payment-webhook",
            run: &o.webhooks,
            cpu: o.webhooks_cpu,
            db: o.webhooks_db,
            ceiling: pgbench
                .and_then(|p| p.webhook.as_ref().ok())
                .unwrap_or(&o.webhook_ceiling),
        });
        paths.push(PathRun {
            name: "POST /order-status",
            run: &o.statuses,
            cpu: o.statuses_cpu,
            db: o.statuses_db,
            ceiling: pgbench
                .and_then(|p| p.status.as_ref().ok())
                .unwrap_or(&o.status_ceiling),
        });
    }
    if let Some(c) = report.check {
        paths.push(PathRun {
            name: "POST /v1/check",
            run: &c.checks,
            cpu: c.checks_cpu,
            db: c.checks_db,
            ceiling: &c.account_ceiling,
        });
    }
    if let Some(u) = report.usage {
        paths.push(PathRun {
            name: "POST /v1/usage",
            run: &u.usage,
            cpu: u.usage_cpu,
            db: u.usage_db,
            ceiling: &u.ceiling,
        });
    }
    paths
}

fn rate(run: &Run) -> String {
    let per_second = run.per_second().round() as u64;
    let digits = per_second.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

pub fn print(reports: &[Report]) {
    let Some(base) = reports.first() else {
        return;
    };
    println!();
    println!("## Every pass");
    print_passes(reports);
    let seeded = reports
        .iter()
        .find(|r| r.pass.seeded != base.pass.seeded && r.pass.instances == base.pass.instances);
    let (empty, seeded) = match seeded {
        Some(other) if other.pass.seeded => (Some(base), Some(other)),
        Some(other) => (Some(other), Some(base)),
        None if base.pass.seeded => (None, Some(base)),
        None => (Some(base), None),
    };
    let mut targets = base.targets();
    targets.retain(|t| !t.name.starts_with("seeded:"));
    if let (Some(empty), Some(seeded)) = (empty, seeded) {
        targets.extend(print_flatness(empty, seeded));
    }
    if let Some(seeded) = seeded {
        targets.extend(seeded.targets().into_iter().filter(|t| t.name.starts_with("seeded:")));
    }
    let mut scaling: Vec<&Report> = reports.iter().filter(|r| r.pass.seeded == base.pass.seeded).collect();
    scaling.sort_by_key(|r| r.pass.instances);
    scaling.dedup_by_key(|r| r.pass.instances);
    if scaling.len() > 1 {
        print_scaling(&scaling);
    }
    println!();
    println!("## Targets ({})", base.pass.name());
    println!();
    println!("| target | measured | result |");
    println!("|---|---|---|");
    for t in &targets {
        println!(
            "| {} | {} | {} |",
            t.name,
            t.measured,
            if t.met { "met" } else { "MISS" }
        );
    }
}

/// One row per hot path, one column per pass: req/s, p99, share of its yardstick ceiling.
fn print_passes(reports: &[Report]) {
    println!();
    let header: Vec<String> = reports.iter().map(|r| r.pass.name()).collect();
    println!("| path | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(reports.len()));
    let first = paths(&reports[0]);
    for (i, path) in first.iter().enumerate() {
        let cells: Vec<String> = reports
            .iter()
            .map(|r| match paths(r).get(i) {
                Some(p) => format!(
                    "{} req/s, p99 {:.1} ms, {:.0} % of ceiling",
                    rate(p.run),
                    p.run.percentile_ms(0.99),
                    share(p.run, p.ceiling)
                ),
                None => "-".to_owned(),
            })
            .collect();
        println!("| {} | {} |", path.name, cells.join(" | "));
    }
}

/// Each path's throughput on the seeded database against the empty one, and its SQL's.
fn print_flatness(empty: &Report, seeded: &Report) -> Vec<Target> {
    println!();
    println!(
        "## Flat as the data grows: {} against {}",
        seeded.pass.name(),
        empty.pass.name()
    );
    println!();
    println!(
        "| path | empty req/s (p99) | seeded req/s (p99) | seeded / empty | its ceiling, seeded / empty | \
         per request, empty | per request, seeded |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    let mut targets = Vec::new();
    for (e, s) in paths(empty).iter().zip(paths(seeded).iter()) {
        let ratio = 100.0 * s.run.per_second() / e.run.per_second();
        let ceiling_ratio = 100.0 * s.ceiling.per_second() / e.ceiling.per_second();
        println!(
            "| {} | {} ({:.1} ms) | {} ({:.1} ms) | {ratio:.0} % | {ceiling_ratio:.0} % | {} | {} |",
            e.name,
            rate(e.run),
            e.run.percentile_ms(0.99),
            rate(s.run),
            s.run.percentile_ms(0.99),
            e.db.describe(),
            s.db.describe(),
        );
        targets.push(Target {
            name: format!("flat: {} on the seeded database within 15 % of the empty one", e.name),
            measured: format!("{ratio:.0} % ({} against {} req/s)", rate(s.run), rate(e.run)),
            met: ratio >= 85.0,
        });
    }
    targets
}

/// Each path's throughput with 1, 2, 3… service processes, the CPU each pass used, and where the
/// throughput stops growing with what was saturated there.
fn print_scaling(reports: &[&Report]) {
    println!();
    println!(
        "## More instances: one Postgres, {} service process counts",
        reports.len()
    );
    println!();
    let header: Vec<String> = reports
        .iter()
        .map(|r| format!("{} process(es)", r.pass.instances))
        .collect();
    println!("| path | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(reports.len()));
    let all: Vec<Vec<PathRun>> = reports.iter().map(|r| paths(r)).collect();
    for (i, path) in all[0].iter().enumerate() {
        let cells: Vec<String> = all
            .iter()
            .map(|runs| match runs.get(i) {
                Some(p) => format!(
                    "{} req/s (p99 {:.1} ms); CPU {}",
                    rate(p.run),
                    p.run.percentile_ms(0.99),
                    p.cpu.describe()
                ),
                None => "-".to_owned(),
            })
            .collect();
        println!("| {} | {} |", path.name, cells.join(" | "));
    }
    println!();
    for (i, path) in all[0].iter().enumerate() {
        let runs: Vec<(usize, &PathRun)> = reports
            .iter()
            .zip(all.iter())
            .filter_map(|(r, runs)| runs.get(i).map(|p| (r.pass.instances, p)))
            .collect();
        println!("- {}", growth(path.name, &runs));
    }
}

/// Where a path stops growing (a process more adds less than 5 %), and what the pass before it
/// saturated: every core busy means CPU; otherwise the limit is not the CPU (a lock, the commit's
/// flush, the generator).
fn growth(name: &str, runs: &[(usize, &PathRun)]) -> String {
    let rates: Vec<String> = runs
        .iter()
        .map(|(n, p)| format!("{} req/s with {n}", rate(p.run)))
        .collect();
    let stops = runs
        .windows(2)
        .find(|pair| pair[1].1.run.per_second() < pair[0].1.run.per_second() * 1.05)
        .map(|pair| pair[0]);
    let (at, last) = match stops {
        Some((n, p)) => (format!("stops growing at {n} process(es)"), p),
        None => {
            let (n, p) = runs[runs.len() - 1];
            (format!("still growing at {n}"), p)
        }
    };
    let used = last.cpu;
    let saturated = match used.busy >= 0.9 * used.cores as f64 {
        true => {
            let (who, cores) = [
                ("PostgreSQL", used.postgres),
                ("the service", used.service),
                ("the load generator", used.generator),
            ]
            .into_iter()
            .fold(("", f64::MIN), |best, next| if next.1 > best.1 { next } else { best });
            format!(
                "the CPU is saturated there ({}), {who} the largest user at {cores:.2} cores",
                used.describe()
            )
        }
        false => format!(
            "the CPU is not saturated there ({}): the limit is elsewhere (row locks, the commit's flush)",
            used.describe()
        ),
    };
    format!("{name}: {}; {at}; {saturated}.", rates.join(", "))
}
