-- The order confirmation email goes through the outbox (issue #13), as its second kind of
-- destination: one 'email' endpoint (the SMTP server, or emulator mode's dev mailbox), synced at
-- startup like the webhook endpoints, and one `order.confirmation` message per order, written by
-- the transaction that first marks the order paid. So an email, like a webhook, exists only for a
-- change that committed, is sent after the commit, retried with the endpoint's backoff, and its
-- every attempt kept.

alter table outbox_endpoints drop constraint outbox_endpoints_kind_check;
alter table outbox_endpoints add constraint outbox_endpoints_kind_check check (kind in ('webhook', 'email'));
alter table outbox_messages drop constraint outbox_messages_kind_check;
alter table outbox_messages add constraint outbox_messages_kind_check check (kind in ('webhook', 'email'));
alter table outbox_messages drop constraint outbox_messages_type_check;
alter table outbox_messages add constraint outbox_messages_type_check
    check (type in ('order.paid', 'order.refunded', 'order.disputed', 'order.canceled', 'order.under_review',
                    'entitlements.updated', 'order.confirmation'));
-- Each kind's messages are of its own types.
alter table outbox_messages add constraint outbox_messages_type_of_kind
    check ((kind = 'email') = (type = 'order.confirmation'));

-- One confirmation per order, whatever path or event pays it: the second guard behind the
-- trigger's "first time paid" (fulfilment's processed_webhook_events key is the first).
create unique index outbox_messages_one_confirmation_per_order on outbox_messages (order_id)
    where type = 'order.confirmation';

-- As before, with one change: a message that one of the outbox's uniqueness rules already holds
-- (this transaction's `entitlements.updated` for the user, or the order's confirmation) is not
-- written again. `on conflict do nothing` without a target covers both partial unique indexes;
-- a concurrent transaction writing the same one waits for the first to end, then writes nothing,
-- instead of failing the payment that wrote it.
create or replace function outbox_enqueue(p_kind text, p_type text, p_user text, p_order uuid, p_data jsonb)
returns uuid language plpgsql as $$
declare
    message uuid;
begin
    if not exists (select 1 from outbox_endpoints where kind = p_kind and configured) then
        return null;
    end if;
    insert into outbox_messages (kind, type, user_id, order_id, data)
        values (p_kind, p_type, p_user, p_order, p_data)
        on conflict do nothing
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

-- The order's confirmation. Only its id is kept: the email is built from the order (and the
-- catalog) when it is first sent, and that first build is what every retry sends.
create function outbox_order_first_paid() returns trigger language plpgsql as $$
begin
    perform outbox_enqueue('email', 'order.confirmation', new.user_id, new.id,
                           jsonb_build_object('orderId', new.id));
    return null;
end $$;

-- `paid_at` is set once, by the fulfilment that first grants the order; the order's later changes
-- (a refund, a dispute won or lost, a renewal, a review resolved) move its status, not `paid_at`,
-- so none of them writes a second confirmation.
create constraint trigger outbox_order_confirmation after update of paid_at on orders
    deferrable initially deferred for each row
    when (old.paid_at is null and new.paid_at is not null)
    execute function outbox_order_first_paid();
-- Orders are written pending; one written paid is confirmed too.
create constraint trigger outbox_order_inserted_paid after insert on orders
    deferrable initially deferred for each row
    when (new.paid_at is not null)
    execute function outbox_order_first_paid();
