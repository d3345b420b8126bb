-- The experiment of docs/performance.md ("The credits API"), not a migration: `credit_spendable`
-- as PL/pgSQL, whose statement plan is cached per session, instead of a SQL function, whose body
-- Postgres 15 plans again in every statement that calls it. Same query, same result.
create or replace function credit_spendable(p_user text) returns bigint language plpgsql stable as $$
begin
    return (select coalesce(sum(remaining), 0)::bigint from credit_grants
            where user_id = p_user and remaining > 0 and (expires_at is null or expires_at > now()));
end $$;
