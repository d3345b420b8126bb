-- Several instances on one database (issue #15). Two things that lived in each process move here.
--
-- `job_runs`: every run of a periodic job (reconciler, credit sweep), by the instance that held the
-- job's advisory lock for it, so an operator (and a test) can see that each ran, where, and that no
-- two runs of one job overlapped. `finished_at` stays null for a run whose instance died mid-run.
create table job_runs (
    id bigint generated always as identity primary key,
    job text not null check (job in ('reconcile', 'credit_sweep')),
    instance_id uuid not null,
    started_at timestamptz not null default clock_timestamp(),
    finished_at timestamptz,
    outcome text check (outcome in ('ok', 'failed')),
    check ((finished_at is null) = (outcome is null))
);
create index job_runs_by_job on job_runs (job, started_at desc);

-- `rate_buckets`: token buckets shared by every instance (today the return page's Stripe sync),
-- one row each. A take refills by the time elapsed and spends one token in one `update`, so the
-- row lock serialises instances and the cap holds for the total, however many there are.
create table rate_buckets (
    name text primary key,
    tokens double precision not null check (tokens >= 0),
    refilled_at timestamptz not null
);
