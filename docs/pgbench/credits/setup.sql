-- Run after the migrations in a scratch database (see docs/performance.md, "The credits API").
-- 1,000 users with 1,000,000 credits each and one user with 100,000,000, granted by the same
-- `credit_grant` the API's `POST /v1/grants` calls.
select count(*) from (
    select credit_grant('credit-user-' || i, 'manual', 'manual_grant', null, null, 'seed-' || i, 'h', 'seed',
                        1000000, null, null)
    from generate_series(0, 999) i
) granted;
select credit_grant('one-user', 'manual', 'manual_grant', null, null, 'seed-one-user', 'h', 'seed', 100000000, null,
                    null);
analyze;
