-- The same statement, every client on one user: each debit holds the user's account lock from
-- `credit_lock` to its commit.
select * from credit_spend('one-user', 'usage', gen_random_uuid()::text, 'h', 1, null, null, null);
