-- What `POST /v1/check` runs today (`store::credit_ledger::balance`).
\set u random(0, 999)
select credit_spendable('credit-user-' || :u) as available,
       coalesce((select sum(credits) from credit_spends
                 where user_id = 'credit-user-' || :u and status = 'held' and expires_at > now()), 0)::bigint as reserved,
       coalesce(a.overdrawn, 0) as overdrawn, coalesce(a.version, 0) as version,
       (exists (select 1 from credit_spends where user_id = 'credit-user-' || :u and status = 'held' and expires_at <= now())
        or exists (select 1 from credit_grants
                   where user_id = 'credit-user-' || :u and remaining > 0 and expires_at <= now())) as due
from (select 1) one left join credit_accounts a on a.user_id = 'credit-user-' || :u;
