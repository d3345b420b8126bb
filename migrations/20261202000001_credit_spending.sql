-- Credits the app can spend. A balance is made of grants (a purchase, a subscription period, a
-- manual grant), each with what is left of it; spending takes from the grant that expires first,
-- then the oldest. `credit_ledger` stays the append-only record: every change is a row naming its
-- cause, and a user's rows always sum to available minus overdrawn (reserved credits are out of
-- both: a reservation's row took them).

-- What the catalog says about credits beyond a purchase's own.
alter table plans add column credits_per_period bigint not null default 0 check (credits_per_period >= 0);
alter table plans add column credits_expire_after_days integer check (credits_expire_after_days > 0);
-- Fixed on the order when it is placed, like its credits.
alter table orders add column credits_expire_after_days integer check (credits_expire_after_days > 0);
alter table orders add column credits_per_period bigint not null default 0 check (credits_per_period >= 0);

-- One row per user who has held credits: the lock every change to their balance takes (so two
-- debits of one balance run one after the other and never spend a credit twice), what they owe
-- when a clawback took back credits already spent, and a version that grows with every change.
create table credit_accounts (
    user_id    text primary key,
    overdrawn  bigint not null default 0 check (overdrawn >= 0),
    version    bigint not null default 0,
    updated_at timestamptz not null default now()
);

create table credit_grants (
    id                uuid primary key default gen_random_uuid(),
    user_id           text not null references credit_accounts (user_id),
    source            text not null check (source in ('purchase', 'period', 'manual')),
    order_id          uuid references orders (id),
    stripe_invoice_id text,
    idempotency_key   text,
    request_hash      text,
    reason            text,
    granted           bigint not null check (granted > 0),
    remaining         bigint not null check (remaining >= 0),
    expires_at        timestamptz,
    -- What was left of it once made (less than granted when it paid what the user owed): what a
    -- replay of a manual grant answers, as the first answer did.
    first_remaining   bigint,
    created_at        timestamptz not null default now(),
    -- A purchase names its order; a period names its invoice and the order its subscription
    -- belongs to, which a refund of that invoice's payment finds it by.
    constraint credit_grants_purchase_names_its_order
        check (source <> 'purchase' or (order_id is not null and stripe_invoice_id is null)),
    check ((source = 'period') = (stripe_invoice_id is not null)),
    check ((source = 'manual') = (idempotency_key is not null and request_hash is not null))
);
create unique index credit_grants_one_per_purchase on credit_grants (order_id) where source = 'purchase';
create unique index credit_grants_one_per_invoice on credit_grants (stripe_invoice_id) where source = 'period';
create unique index credit_grants_one_per_key on credit_grants (idempotency_key) where source = 'manual';
-- The spend order, over what can still be spent.
create index credit_grants_spendable on credit_grants (user_id, expires_at, created_at) where remaining > 0;
create index credit_grants_due on credit_grants (expires_at) where remaining > 0 and expires_at is not null;

-- Usage (spent at once) and reservations (held, then committed or released). The idempotency key
-- lives as long as the row: the same key always names the same spend.
create table credit_spends (
    id              uuid primary key default gen_random_uuid(),
    user_id         text not null references credit_accounts (user_id),
    kind            text not null check (kind in ('usage', 'reservation')),
    idempotency_key text not null,
    request_hash    text not null,
    -- Asked for (usage) or held (reservation).
    credits         bigint not null check (credits > 0),
    spent           bigint not null default 0 check (spent >= 0 and spent <= credits),
    status          text not null check (status in ('spent', 'held', 'committed', 'released', 'expired')),
    expires_at      timestamptz,
    -- What the user could spend right after it: part of its answer, which a replay repeats.
    available_after bigint not null check (available_after >= 0),
    -- Which grants the credits came from, in spend order: [{"grant": id, "credits": n}].
    taken           jsonb not null default '[]',
    description     text,
    metadata        jsonb,
    created_at      timestamptz not null default now(),
    settled_at      timestamptz,
    unique (kind, idempotency_key),
    check ((kind = 'reservation') = (expires_at is not null))
);
create index credit_spends_due on credit_spends (expires_at) where status = 'held';
create index credit_spends_user on credit_spends (user_id, created_at);

alter table credit_ledger add column grant_id uuid references credit_grants (id);
alter table credit_ledger add column spend_id uuid references credit_spends (id);
alter table credit_ledger drop constraint credit_ledger_kind_check;
alter table credit_ledger add constraint credit_ledger_kind_check check (kind in (
    'purchase', 'period', 'manual_grant', 'usage', 'reservation', 'reservation_release', 'expiry',
    'refund', 'refund_reversal', 'dispute', 'dispute_reversal'
));
-- A grant is granted once. It may expire more than once: credits a reservation held from it come
-- back after it expired (committed in part, released, or past the reservation's TTL) and expire
-- then, each time as one more `expiry` row.
create unique index credit_ledger_one_row_per_grant on credit_ledger (grant_id, kind)
    where kind in ('period', 'manual_grant');
create unique index credit_ledger_one_row_per_spend on credit_ledger (spend_id, kind) where spend_id is not null;
-- The latest rows of a user, for `entitle user`; the balance itself is read from the grants.
create index credit_ledger_user_latest on credit_ledger (user_id, id desc);
drop index credit_ledger_user_id_idx;

-- What was granted before grants were kept: one purchase grant per order that bought credits,
-- holding what its ledger rows still give (nothing was spent before spending existed).
insert into credit_accounts (user_id) select distinct user_id from credit_ledger;
insert into credit_grants (user_id, source, order_id, granted, remaining, created_at)
    select p.user_id, 'purchase', p.order_id, p.delta,
           greatest(0, (select sum(delta) from credit_ledger a where a.order_id = p.order_id)), p.created_at
    from credit_ledger p where p.kind = 'purchase' and p.delta > 0;
update credit_ledger l set grant_id = g.id
    from credit_grants g where g.source = 'purchase' and g.order_id = l.order_id and l.order_id is not null;

-- The primitives every change of a balance is made of. Each expects the caller to hold the
-- account's lock (`credit_lock`), so that what it reads cannot change before it writes. They live
-- in the database because a debit is one round trip: the account lock is held for one statement
-- and its commit, which is what bounds the debits per second one user's balance can take.

create function credit_lock(p_user text) returns credit_accounts language plpgsql as $$
declare
    account credit_accounts;
begin
    insert into credit_accounts (user_id) values (p_user) on conflict do nothing;
    select * into account from credit_accounts where user_id = p_user for update;
    return account;
end $$;

-- What can be spent at `p_at` (now, unless an expiry is being written late): the remaining
-- credits of the grants not expired by then.
create function credit_spendable(p_user text, p_at timestamptz default now()) returns bigint language sql stable as $$
    select coalesce(sum(remaining), 0)::bigint from credit_grants
    where user_id = p_user and remaining > 0 and (expires_at is null or expires_at > p_at)
$$;

-- Takes `p_amount` from the grants spendable at `p_at`, the one expiring first, then the oldest;
-- returns what it took from which. The caller has checked the credits are there.
create function credit_take(p_user text, p_amount bigint, p_at timestamptz default now()) returns jsonb
language plpgsql as $$
declare
    g record;
    owed bigint := p_amount;
    part bigint;
    taken jsonb := '[]';
begin
    for g in select id, remaining from credit_grants
             where user_id = p_user and remaining > 0 and (expires_at is null or expires_at > p_at)
             order by expires_at nulls last, created_at, id
    loop
        exit when owed = 0;
        part := least(g.remaining, owed);
        update credit_grants set remaining = remaining - part where id = g.id;
        taken := taken || jsonb_build_array(jsonb_build_object('grant', g.id, 'credits', part));
        owed := owed - part;
    end loop;
    if owed > 0 then
        raise exception 'credit_take: % credits short for %', owed, p_user;
    end if;
    return taken;
end $$;

-- Puts `p_amount` back into the grants `p_taken` names, the last taken first (what stays spent is
-- what was spent first).
create function credit_give_back(p_taken jsonb, p_amount bigint) returns void language plpgsql as $$
declare
    i int;
    part bigint;
    owed bigint := p_amount;
begin
    for i in reverse jsonb_array_length(p_taken) - 1 .. 0 loop
        exit when owed = 0;
        part := least(owed, (p_taken -> i ->> 'credits')::bigint);
        update credit_grants set remaining = remaining + part where id = (p_taken -> i ->> 'grant')::uuid;
        owed := owed - part;
    end loop;
end $$;

-- Pays what the user owes from what they can spend (at `p_at`). Not a ledger row: the balance
-- (the rows' sum) does not change, only which grants it is made of.
create function credit_cover_overdraft(p_user text, p_at timestamptz default now()) returns void
language plpgsql as $$
declare
    owed bigint;
    cover bigint;
begin
    select overdrawn into owed from credit_accounts where user_id = p_user;
    if owed > 0 then
        cover := least(owed, credit_spendable(p_user, p_at));
        if cover > 0 then
            perform credit_take(p_user, cover, p_at);
            update credit_accounts set overdrawn = overdrawn - cover where user_id = p_user;
        end if;
    end if;
end $$;

-- The grants past their expiry at `p_at` lose what is left of them, each as an `expiry` row.
-- Returns how many.
create function credit_expire_grants(p_user text, p_at timestamptz) returns int language plpgsql as $$
declare
    g record;
    changed int := 0;
begin
    for g in select id, remaining from credit_grants
             where user_id = p_user and remaining > 0 and expires_at <= p_at
    loop
        update credit_grants set remaining = 0 where id = g.id;
        insert into credit_ledger (user_id, kind, delta, grant_id) values (p_user, 'expiry', -g.remaining, g.id);
        changed := changed + 1;
    end loop;
    return changed;
end $$;

-- Everything past its time, written as it would have been at that time, so that a balance does
-- not depend on when anyone looked: each held reservation past its TTL, in the order they ran out,
-- after the grants that expired before it; its credits come back (those of a grant gone by then
-- expire again) and pay what is owed from what could be spent at that moment. Then the grants
-- expired since. Returns how many changed.
create function credit_expire(p_user text) returns int language plpgsql as $$
declare
    s record;
    changed int := 0;
begin
    for s in select id, credits, taken, expires_at from credit_spends
             where user_id = p_user and status = 'held' and expires_at <= now() order by expires_at, id
    loop
        changed := changed + credit_expire_grants(p_user, s.expires_at);
        perform credit_give_back(s.taken, s.credits);
        update credit_spends set status = 'expired', settled_at = now() where id = s.id;
        insert into credit_ledger (user_id, kind, delta, spend_id) values (p_user, 'reservation_release', s.credits, s.id);
        perform credit_expire_grants(p_user, s.expires_at);
        perform credit_cover_overdraft(p_user, s.expires_at);
        changed := changed + 1;
    end loop;
    changed := changed + credit_expire_grants(p_user, now());
    if changed > 0 then
        update credit_accounts set version = version + 1, updated_at = now() where user_id = p_user;
    end if;
    return changed;
end $$;

-- A usage or a reservation, in one statement: replayed when its key is known, refused when the
-- credits are not there, otherwise taken. `outcome` is one of: spent, replayed, key_reused,
-- insufficient.
create function credit_spend(
    p_user text, p_kind text, p_key text, p_hash text, p_credits bigint, p_expires_at timestamptz,
    p_description text, p_metadata jsonb
) returns table (outcome text, spend_id uuid, credits bigint, status text, expires_at timestamptz, available bigint)
language plpgsql as $$
declare
    existing credit_spends;
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
        perform credit_lock(p_user);
        perform credit_expire(p_user);
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
    have := credit_spendable(p_user);
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

-- Ends a held reservation: `p_commit` true spends `p_credits` of it (all when null) and releases
-- the rest; false releases it all. `outcome`: settled, already (it was settled this way before),
-- not_found, expired, committed, released (settled the other way), too_many (more than held).
create function credit_settle_reservation(p_id uuid, p_commit boolean, p_credits bigint)
returns table (outcome text, user_id text, credits bigint, spent bigint, status text, expires_at timestamptz,
               settled_at timestamptz)
language plpgsql as $$
declare
    r credit_spends;
    spend bigint;
begin
    select * into r from credit_spends s where s.id = p_id and s.kind = 'reservation';
    if not found then
        return query select 'not_found', null::text, null::bigint, null::bigint, null::text, null::timestamptz,
            null::timestamptz;
        return;
    end if;
    perform credit_lock(r.user_id);
    perform credit_expire(r.user_id);
    select * into r from credit_spends s where s.id = p_id;
    if r.status = 'held' then
        spend := case when p_commit then coalesce(p_credits, r.credits) else 0 end;
        if spend > r.credits then
            return query select 'too_many', r.user_id, r.credits, r.spent, r.status, r.expires_at, r.settled_at;
            return;
        end if;
        if spend < r.credits then
            perform credit_give_back(r.taken, r.credits - spend);
            insert into credit_ledger (user_id, kind, delta, spend_id)
                values (r.user_id, 'reservation_release', r.credits - spend, r.id);
            -- What went back to a grant that expired meanwhile expires now, as it would have.
            perform credit_expire(r.user_id);
            perform credit_cover_overdraft(r.user_id);
        end if;
        update credit_spends s
            set status = case when p_commit then 'committed' else 'released' end, spent = spend, settled_at = now()
            where s.id = p_id
            returning * into r;
        update credit_accounts a set version = version + 1, updated_at = now() where a.user_id = r.user_id;
        return query select 'settled', r.user_id, r.credits, r.spent, r.status, r.expires_at, r.settled_at;
        return;
    end if;
    return query select
        case
            when r.status = 'expired' and p_commit then 'expired'
            when r.status = 'expired' then 'already'
            when r.status = 'committed' and p_commit and (p_credits is null or p_credits = r.spent) then 'already'
            when r.status = 'released' and not p_commit then 'already'
            else r.status
        end,
        r.user_id, r.credits, r.spent, r.status, r.expires_at, r.settled_at;
end $$;

-- A grant (a purchase, a period or a manual one) once: `outcome` is granted, replayed (its key is
-- known with the same request), key_reused, exists (a purchase or a period granted before), or
-- past (a new manual grant that would expire before it is made; nothing is written).
create function credit_grant(
    p_user text, p_source text, p_kind text, p_order uuid, p_invoice text, p_key text, p_hash text, p_reason text,
    p_credits bigint, p_expires_at timestamptz, p_event text
) returns table (outcome text, grant_id uuid, granted bigint, remaining bigint, expires_at timestamptz)
language plpgsql as $$
declare
    g credit_grants;
    new_id uuid;
begin
    if p_source = 'manual' then
        -- A replay needs no lock (what it answers never changes), and is a replay even once the
        -- time the grant expires has come.
        select * into g from credit_grants c where c.source = 'manual' and c.idempotency_key = p_key;
        if found then
            return query select case when g.request_hash = p_hash then 'replayed' else 'key_reused' end,
                g.id, g.granted, g.first_remaining, g.expires_at;
            return;
        end if;
        if p_expires_at <= now() then
            return query select 'past', null::uuid, p_credits, p_credits, p_expires_at;
            return;
        end if;
    end if;
    perform credit_lock(p_user);
    -- What fell due is written first, as of when it did: a hold that ran out may pay what is owed
    -- before these credits do.
    perform credit_expire(p_user);
    insert into credit_grants as c (user_id, source, order_id, stripe_invoice_id, idempotency_key, request_hash, reason,
                                    granted, remaining, expires_at)
        values (p_user, p_source, p_order, p_invoice, p_key, p_hash, p_reason, p_credits, p_credits, p_expires_at)
        on conflict do nothing
        returning c.id into new_id;
    if new_id is null then
        select * into g from credit_grants c
            where (p_source = 'purchase' and c.source = 'purchase' and c.order_id = p_order)
               or (p_source = 'period' and c.source = 'period' and c.stripe_invoice_id = p_invoice)
               or (p_source = 'manual' and c.source = 'manual' and c.idempotency_key = p_key);
        return query select
            case when p_source <> 'manual' then 'exists' when g.request_hash = p_hash then 'replayed' else 'key_reused' end,
            g.id, g.granted, coalesce(g.first_remaining, g.remaining), g.expires_at;
        return;
    end if;
    -- Only a purchase's row names its order: the order's own reckoning of what its purchase still
    -- gives (`credit_ledger` by order) must not count a period's credits.
    insert into credit_ledger (user_id, order_id, kind, delta, grant_id, stripe_event_id)
        values (p_user, case when p_source = 'purchase' then p_order end, p_kind, p_credits, new_id, p_event);
    perform credit_cover_overdraft(p_user);
    update credit_accounts a set version = version + 1, updated_at = now() where a.user_id = p_user;
    update credit_grants c set first_remaining = c.remaining where c.id = new_id returning * into g;
    return query select 'granted', g.id, g.granted, g.remaining, g.expires_at;
end $$;
