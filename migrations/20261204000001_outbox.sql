-- The transactional outbox (issue #13): every change the app must hear of writes a message, and a
-- delivery per destination, in the transaction that makes the change, so a rollback leaves
-- nothing and no code path can forget. Workers send them after commit (src/outbox/).
--
-- The writes are triggers on the tables that hold what the app sees (an order's status, a user's
-- entitlements and credits), not calls in the Rust that changes them: there are a dozen such
-- paths (fulfilment, reversals, subscriptions, every credit_* function, the expiry sweep) and
-- more will come. The triggers are constraint triggers deferred to commit: they run after every
-- other statement of the transaction, so the per-user version row they lock is the last lock
-- the transaction takes (no new lock-order against credit_accounts, orders or entitlements) and
-- is held only for the commit.

-- Where messages go. `kind` is how a message is delivered: 'webhook' is a signed POST to the
-- app (APP_WEBHOOK_URL); another destination (the buyer's email) is one more kind, with messages
-- of its kind. Endpoints are synced from the configuration at startup, by URL: one no longer
-- configured is kept (its deliveries name it) but receives no new messages.
create table outbox_endpoints (
    id                   uuid primary key default gen_random_uuid(),
    kind                 text not null check (kind in ('webhook')),
    url                  text not null,
    configured           boolean not null default true,
    -- Backoff is per endpoint, so one that is down is not asked once per pending message: failed
    -- attempts since its last success, when the next may start, and since when it has been
    -- failing (an endpoint failing for APP_WEBHOOK_GIVE_UP_AFTER_SECS is disabled).
    consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
    retry_at             timestamptz,
    failing_since        timestamptz,
    -- Disabled (a 410, or failing too long): receives nothing until an operator's
    -- `entitle redeliver` enables it again.
    disabled_at          timestamptz,
    disabled_reason      text,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    unique (kind, url),
    check ((disabled_at is null) = (disabled_reason is null))
);

-- One change the app must hear of. `data` is the event's payload: an order's, snapshotted from
-- the row as the change left it; for `entitlements.updated` none, as its body is the user's whole
-- state when it is first sent (with the version read in the same snapshot). `body` is the exact
-- bytes sent, fixed by the first attempt and sent again by every retry, to every endpoint.
create table outbox_messages (
    id         uuid primary key default gen_random_uuid(),
    kind       text not null check (kind in ('webhook')),
    type       text not null check (type in ('order.paid', 'order.refunded', 'order.disputed', 'order.canceled',
                                             'order.under_review', 'entitlements.updated')),
    user_id    text not null,
    order_id   uuid,
    -- The writing transaction: one `entitlements.updated` per user and transaction.
    txid       bigint not null default txid_current(),
    data       jsonb,
    body       text,
    created_at timestamptz not null default now()
);
create unique index outbox_messages_one_state_per_transaction on outbox_messages (user_id, txid)
    where type = 'entitlements.updated';
create index outbox_messages_user on outbox_messages (user_id, created_at);

-- A message to one endpoint. `pending` until a 2xx (`delivered`) or until it is given up on
-- (`abandoned`: the endpoint was disabled, or the message failed for too long). A sender holds a
-- lease on it while it sends (`lease_token` until `leased_until`, committed before the request
-- goes out); a result is recorded only under the lease it was sent under, and a sender that
-- dies mid-send leaves the lease to run out, after which any sender sends it again.
create table outbox_deliveries (
    id              uuid primary key default gen_random_uuid(),
    message_id      uuid not null references outbox_messages (id),
    endpoint_id     uuid not null references outbox_endpoints (id),
    status          text not null default 'pending' check (status in ('pending', 'delivered', 'abandoned')),
    attempts        integer not null default 0 check (attempts >= 0),
    next_attempt_at timestamptz not null default now(),
    -- When it was last made pending (written, or sent again by an operator): it is given up on
    -- APP_WEBHOOK_GIVE_UP_AFTER_SECS later if it keeps failing.
    queued_at       timestamptz not null default now(),
    lease_token     uuid,
    leased_until    timestamptz,
    delivered_at    timestamptz,
    -- The latest attempt's HTTP status (null when none came back) and what went wrong.
    last_response   integer,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (message_id, endpoint_id)
);
create index outbox_deliveries_due on outbox_deliveries (next_attempt_at) where status = 'pending';
create index outbox_deliveries_pending_per_endpoint on outbox_deliveries (endpoint_id) where status = 'pending';
create index outbox_deliveries_created on outbox_deliveries (created_at);

-- Every attempt, kept: `sending` while in flight; `interrupted` when its lease ran out with no
-- result (the sender died or lost the database); otherwise what came back and how long it took.
-- `sender` names the process (a per-start id), so two instances' attempts can be told apart.
create table outbox_attempts (
    id              bigserial primary key,
    delivery_id     uuid not null references outbox_deliveries (id),
    lease_token     uuid not null,
    sender          text not null,
    status          text not null default 'sending'
                    check (status in ('sending', 'delivered', 'failed', 'interrupted')),
    started_at      timestamptz not null default now(),
    finished_at     timestamptz,
    latency_ms      integer,
    response_status integer,
    error           text
);
create index outbox_attempts_of_delivery on outbox_attempts (delivery_id, id);

-- A per-user counter that every change of what the user holds raises, in the change's own
-- transaction: its row lock orders one user's commits, so a later state always carries a higher
-- version and a receiver that keeps the highest keeps the latest.
create table user_versions (
    user_id    text primary key,
    version    bigint not null check (version > 0),
    updated_at timestamptz not null default now()
);

-- Writes a message of `p_kind` and a delivery to each configured endpoint of that kind (abandoned
-- at once for a disabled one, so `entitle redeliver` can still send it). Nothing at all when no
-- endpoint of the kind is configured. An `entitlements.updated` already written by this
-- transaction for the user is not written again. Returns the new message's id, or null.
create function outbox_enqueue(p_kind text, p_type text, p_user text, p_order uuid, p_data jsonb)
returns uuid language plpgsql as $$
declare
    message uuid;
begin
    if not exists (select 1 from outbox_endpoints where kind = p_kind and configured) then
        return null;
    end if;
    insert into outbox_messages (kind, type, user_id, order_id, data)
        values (p_kind, p_type, p_user, p_order, p_data)
        on conflict (user_id, txid) where type = 'entitlements.updated' do nothing
        returning id into message;
    if message is not null then
        insert into outbox_deliveries (message_id, endpoint_id, status, last_error)
            select message, e.id,
                   case when e.disabled_at is null then 'pending' else 'abandoned' end,
                   case when e.disabled_at is not null then 'endpoint disabled: ' || e.disabled_reason end
            from outbox_endpoints e where e.kind = p_kind and e.configured;
    end if;
    return message;
end $$;

-- An order whose status changed into one the app hears of: `order.<status>`, with the order as
-- this change left it.
create function outbox_order_changed() returns trigger language plpgsql as $$
begin
    perform outbox_enqueue('webhook', 'order.' || new.status, new.user_id, new.id, jsonb_build_object(
        'orderId', new.id, 'userId', new.user_id, 'planId', new.plan_id, 'status', new.status,
        'amount', new.amount, 'currency', new.currency));
    return null;
end $$;

create constraint trigger outbox_order_status_changed after update of status on orders
    deferrable initially deferred for each row
    when (old.status is distinct from new.status
          and new.status in ('paid', 'refunded', 'disputed', 'canceled', 'under_review'))
    execute function outbox_order_changed();
-- Orders are written pending; one written otherwise is heard of too.
create constraint trigger outbox_order_inserted after insert on orders
    deferrable initially deferred for each row
    when (new.status in ('paid', 'refunded', 'disputed', 'canceled', 'under_review'))
    execute function outbox_order_changed();

-- What the user holds changed (credits or an entitlement as the app sees them): one
-- `entitlements.updated` for the transaction, and the user's version raised once with it.
create function outbox_holdings_changed() returns trigger language plpgsql as $$
declare
    who text;
begin
    -- NEW is null for a delete, OLD for an insert: only the one the operation has is read.
    if tg_op = 'DELETE' then
        who := old.user_id;
    else
        who := new.user_id;
    end if;
    if outbox_enqueue('webhook', 'entitlements.updated', who, null, null) is not null then
        insert into user_versions (user_id, version) values (who, 1)
            on conflict (user_id) do update set version = user_versions.version + 1, updated_at = now();
    end if;
    return null;
end $$;

-- Only what `entitlements.updated` shows: an upsert that rewrites the same state (a second event
-- that derives what the first did) is no change.
create constraint trigger outbox_entitlement_updated after update on entitlements
    deferrable initially deferred for each row
    when ((old.status, old.current_period_end, old.cancel_at_period_end)
          is distinct from (new.status, new.current_period_end, new.cancel_at_period_end))
    execute function outbox_holdings_changed();
create constraint trigger outbox_entitlement_inserted after insert or delete on entitlements
    deferrable initially deferred for each row
    execute function outbox_holdings_changed();

-- The account's totals are set by its own before-update trigger at every change; a change that
-- leaves available and overdrawn as they were (a reservation committed in full) shows nothing new.
create constraint trigger outbox_credits_changed after update on credit_accounts
    deferrable initially deferred for each row
    when ((old.available, old.overdrawn) is distinct from (new.available, new.overdrawn))
    execute function outbox_holdings_changed();

-- Wakes the senders of every instance at commit (Postgres delivers a notification only then, once
-- per transaction and payload, and drops it on rollback): for each delivery written pending, and
-- each one made due earlier than it was (`entitle redeliver`). The periodic sweep covers retries.
create function outbox_wake() returns trigger language plpgsql as $$
begin
    perform pg_notify('outbox', '');
    return null;
end $$;

create trigger outbox_delivery_written after insert on outbox_deliveries
    for each row when (new.status = 'pending')
    execute function outbox_wake();
create trigger outbox_delivery_due_again after update on outbox_deliveries
    for each row when (new.status = 'pending'
                       and (old.status <> 'pending' or new.next_attempt_at < old.next_attempt_at))
    execute function outbox_wake();
