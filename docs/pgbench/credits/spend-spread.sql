-- `POST /v1/usage`'s one statement over 1,000 users, a new idempotency key each time.
\set u random(0, 999)
select * from credit_spend('credit-user-' || :u, 'usage', gen_random_uuid()::text, 'h', 1, null, null, null);
