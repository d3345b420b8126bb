-- The same read with `credit_spendable`'s body written in as a subquery, planned with the prepared
-- statement. The SQL function cannot be inlined (an aggregate over a table), and Postgres 15 plans
-- its body again in every execution of the statement that calls it.
\set u random(0, 999)
select (select coalesce(sum(remaining), 0)::bigint from credit_grants
        where user_id = 'credit-user-' || :u and remaining > 0 and (expires_at is null or expires_at > now())) as available,
       coalesce((select sum(credits) from credit_spends
                 where user_id = 'credit-user-' || :u and status = 'held' and expires_at > now()), 0)::bigint as reserved,
       coalesce(a.overdrawn, 0) as overdrawn, coalesce(a.version, 0) as version,
       (exists (select 1 from credit_spends where user_id = 'credit-user-' || :u and status = 'held' and expires_at <= now())
        or exists (select 1 from credit_grants
                   where user_id = 'credit-user-' || :u and remaining > 0 and expires_at <= now())) as due
from (select 1) one left join credit_accounts a on a.user_id = 'credit-user-' || :u;
