-- What /order-status reads: one order by its primary key, scoped to its owner, over the webhook
-- ceiling's orders (their ids and owners follow from n, see webhook.sql's setup in pgbench.rs):
-- client k's m-th read takes order k + clients * m, modulo their count.
-- Variables from pgbench -D: run, clients, count, k (0).
\set k :k + 1
\set n (:client_id + :clients * :k) % :count
select id, status, plan_id, amount, currency, created_at, paid_at, amount_refunded
from orders where id = md5(:run || '_' || :n)::uuid and user_id = 'pgbench-user-' || :n;
