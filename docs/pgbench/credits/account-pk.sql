-- The check's ceiling: the credit account's primary-key select.
\set u random(0, 999)
select user_id, overdrawn, version from credit_accounts where user_id = 'credit-user-' || :u;
