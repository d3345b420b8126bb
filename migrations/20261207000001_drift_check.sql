-- The drift check (`entitle verify` on a schedule) is a periodic job like the reconciler: its runs
-- are recorded in `job_runs` under the name `verify`.
alter table job_runs drop constraint job_runs_job_check;
alter table job_runs add constraint job_runs_job_check check (job in ('reconcile', 'credit_sweep', 'verify'));
