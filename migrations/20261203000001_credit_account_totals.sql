-- A balance read is the hot path (`POST /v1/check` asks it before every action an app meters), so
-- the account row carries its totals and a balance is one primary-key select instead of two
-- aggregates over the grants and the holds. The totals are what the grants and holds add up to
-- at the last change, and stay right until `due_at`, the first moment something passes its time
-- (a grant's expiry, a hold's TTL); a reader that finds `due_at` passed writes the expiry first,
-- as it did before.

alter table credit_accounts add column available bigint not null default 0 check (available >= 0);
alter table credit_accounts add column reserved bigint not null default 0 check (reserved >= 0);
alter table credit_accounts add column due_at timestamptz;

-- The holds of one user, without walking every usage row they ever made (one user with a long
-- history is the one-user benchmark's case).
create index credit_spends_held on credit_spends (user_id, expires_at) where status = 'held';

-- What a user's grants and holds add up to now, and when the first of them passes its time.
create function credit_totals(p_user text, out available bigint, out reserved bigint, out due_at timestamptz)
language plpgsql stable as $$
declare
    grants_due timestamptz;
    holds_due timestamptz;
begin
    select coalesce(sum(remaining) filter (where expires_at is null or expires_at > now()), 0)::bigint,
           min(expires_at)
        into available, grants_due
        from credit_grants where user_id = p_user and remaining > 0;
    select coalesce(sum(credits) filter (where expires_at > now()), 0)::bigint, min(expires_at)
        into reserved, holds_due
        from credit_spends where user_id = p_user and status = 'held';
    -- `least` skips nulls: due when either is.
    due_at := least(grants_due, holds_due);
end $$;

-- Every change of a balance ends by raising the account's version, under the account's lock
-- (each `credit_*` function does, and nothing else writes grants or holds), so that is where the
-- totals are taken: once per change, after all of its writes, and never by a caller that could
-- forget to.
create function credit_accounts_keep_totals() returns trigger language plpgsql as $$
begin
    if new.version is distinct from old.version then
        select t.available, t.reserved, t.due_at into new.available, new.reserved, new.due_at
            from credit_totals(new.user_id) t;
    end if;
    return new;
end $$;

create trigger credit_accounts_keep_totals before update on credit_accounts
    for each row execute function credit_accounts_keep_totals();

update credit_accounts a
    set (available, reserved, due_at) = (select t.available, t.reserved, t.due_at from credit_totals(a.user_id) t);

-- A debit holds its user's lock for its statement and the commit, so what it does under the lock
-- bounds one user's debits per second. With the totals on the row it reads them from the row it
-- locked, and writes expiries only when something fell due.

create or replace function credit_lock(p_user text) returns credit_accounts language plpgsql as $$
declare
    account credit_accounts;
begin
    -- The row exists for every change but a user's first: lock it without an insert's probe.
    select * into account from credit_accounts where user_id = p_user for update;
    if not found then
        insert into credit_accounts (user_id) values (p_user) on conflict do nothing;
        select * into account from credit_accounts where user_id = p_user for update;
    end if;
    return account;
end $$;

-- As in 20261202000001, but with the totals taken from the locked row.
create or replace function credit_spend(
    p_user text, p_kind text, p_key text, p_hash text, p_credits bigint, p_expires_at timestamptz,
    p_description text, p_metadata jsonb
) returns table (outcome text, spend_id uuid, credits bigint, status text, expires_at timestamptz, available bigint)
language plpgsql as $$
declare
    existing credit_spends;
    account credit_accounts;
    new_id uuid;
    have bigint;
begin
    -- A replay needs no lock: the row it names never changes its answer.
    select * into existing from credit_spends s where s.kind = p_kind and s.idempotency_key = p_key;
    if not found and not exists (select 1 from credit_accounts a where a.user_id = p_user) then
        -- Never granted anything, so nothing to spend: refused without writing even the lock row
        -- (a grant committed meanwhile came after this).
        return query select 'insufficient', null::uuid, p_credits, null::text, null::timestamptz, 0::bigint;
        return;
    end if;
    if not found then
        account := credit_lock(p_user);
        -- The account's totals hold until something falls due; only then is there anything to
        -- write first (and the totals to read again).
        if account.due_at <= now() then
            perform credit_expire(p_user);
            select * into account from credit_accounts a where a.user_id = p_user;
        end if;
        -- The same key may have been spent while this waited for the lock.
        select * into existing from credit_spends s where s.kind = p_kind and s.idempotency_key = p_key;
    end if;
    if found then
        -- A replay is the first answer again: what was spent or held then, and what was left.
        return query select
            case when existing.request_hash = p_hash then 'replayed' else 'key_reused' end,
            existing.id, existing.credits,
            case when existing.kind = 'usage' then 'spent' else 'held' end,
            existing.expires_at, existing.available_after;
        return;
    end if;
    have := account.available;
    if have < p_credits then
        return query select 'insufficient', null::uuid, p_credits, null::text, null::timestamptz, have;
        return;
    end if;
    insert into credit_spends as s (user_id, kind, idempotency_key, request_hash, credits, spent, status, expires_at,
                                    available_after, description, metadata)
        values (p_user, p_kind, p_key, p_hash, p_credits,
                case when p_kind = 'usage' then p_credits else 0 end,
                case when p_kind = 'usage' then 'spent' else 'held' end,
                p_expires_at, have - p_credits, p_description, p_metadata)
        on conflict (kind, idempotency_key) do nothing
        returning s.id into new_id;
    if new_id is null then
        -- Another user's request took the key first (ours waited for it to commit).
        select * into existing from credit_spends s where s.kind = p_kind and s.idempotency_key = p_key;
        return query select 'key_reused', existing.id, existing.credits, existing.status, existing.expires_at,
            existing.available_after;
        return;
    end if;
    update credit_spends s set taken = credit_take(p_user, p_credits) where s.id = new_id;
    insert into credit_ledger (user_id, kind, delta, spend_id) values (p_user, p_kind, -p_credits, new_id);
    update credit_accounts set version = version + 1, updated_at = now() where user_id = p_user;
    return query select 'spent', new_id, p_credits,
        case when p_kind = 'usage' then 'spent' else 'held' end, p_expires_at, have - p_credits;
end $$;

