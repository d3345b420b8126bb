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
