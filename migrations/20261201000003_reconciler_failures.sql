-- Missed events the reconciler could not apply. Each later run tries one again until it has failed
-- `RECONCILER_MAX_ATTEMPTS` times; then it is set aside, so that one event cannot hold the cursor
-- (and every event after it) back for ever. `entitle failed-events` lists them; `entitle replay`
-- applies one by hand. A row whose event is in processed_webhook_events is resolved.
create table reconciler_failures (
    event_id        text primary key,
    event_type      text not null,
    -- Stripe's `created` (unix seconds): the cursor must not move past a retryable one.
    event_created   bigint not null,
    attempts        integer not null check (attempts > 0),
    -- Our one-line description of the error (status and Stripe's message), never a secret.
    last_error      text not null,
    first_failed_at timestamptz not null default now(),
    last_failed_at  timestamptz not null default now(),
    set_aside_at    timestamptz
);
