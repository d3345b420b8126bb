-- Wake-ups off the commit path (issue #16). A transaction that calls pg_notify takes one
-- database-wide lock before it commits and holds it through its WAL flush, so every notifying
-- transaction commits alone: no group commit, one fsync each. With a notification in every
-- fulfilment and every debit, that lock was the webhooks' and the debits' ceiling
-- (docs/performance.md). A transaction whose caller sends the wake-ups itself, after the commit
-- and batched with others (`src/wakeups.rs`), says so with
-- `set local entitle.wake_after_commit = 'on'`; every other transaction notifies here as before.
create or replace function outbox_wake() returns trigger language plpgsql as $$
begin
    if current_setting('entitle.wake_after_commit', true) is distinct from 'on' then
        perform pg_notify('outbox', '');
    end if;
    return null;
end $$;
