-- The Stripe mode this database's data belongs to, written by the first instance that starts on it.
-- An instance in another mode refuses to start (src/service_mode.rs): a deployment that lost its
-- live key must not come up in emulator mode, where anyone may sign in as anyone, on real data.
create table service_mode (
    singleton bool primary key default true check (singleton),
    mode text not null check (mode in ('emulator', 'test', 'live')),
    recorded_at timestamptz not null default now()
);
