-- A refunded or disputed subscription payment takes back its period's credits as a refunded
-- purchase does: a period grant names the order whose subscription paid for it, and an
-- adjustment can be made to any one grant.
create index credit_grants_of_order on credit_grants (order_id) where source = 'period';

-- A refund's or dispute's adjustment of one grant's credits (negative: taken back; positive:
-- handed back), written as one ledger row naming the grant (and the order, for a purchase). What
-- is taken comes out of what is left of the grant first, then out of the user's other credits;
-- what they had already spent is owed (overdrawn). What is handed back returns to the grant and
-- pays what is owed first.
create function credit_adjust(p_user text, p_grant uuid, p_order uuid, p_kind text, p_delta bigint, p_event text)
returns void language plpgsql as $$
declare
    g credit_grants;
    own bigint;
    rest bigint;
    other bigint;
begin
    perform credit_lock(p_user);
    perform credit_expire(p_user);
    select * into g from credit_grants c where c.id = p_grant;
    insert into credit_ledger (user_id, order_id, kind, delta, grant_id, stripe_event_id)
        values (p_user, p_order, p_kind, p_delta, p_grant, p_event);
    if p_delta < 0 then
        own := least(-p_delta, coalesce(case when g.expires_at is null or g.expires_at > now() then g.remaining end, 0));
        if own > 0 then
            update credit_grants set remaining = remaining - own where id = g.id;
        end if;
        rest := -p_delta - own;
        other := least(rest, credit_spendable(p_user));
        if other > 0 then
            perform credit_take(p_user, other);
        end if;
        update credit_accounts set overdrawn = overdrawn + (rest - other) where user_id = p_user;
    elsif p_delta > 0 and g.id is not null then
        update credit_grants set remaining = remaining + p_delta where id = g.id;
        perform credit_expire(p_user);
        perform credit_cover_overdraft(p_user);
    elsif p_delta > 0 then
        -- An order whose grant predates grants (none is missing after the migration): the
        -- credits still come back, as what pays what is owed and no more.
        update credit_accounts set overdrawn = greatest(0, overdrawn - p_delta) where user_id = p_user;
    end if;
    update credit_accounts set version = version + 1, updated_at = now() where user_id = p_user;
end $$;

-- An order's purchase credits: the row names the order, which is how its own reckoning
-- (`credit_ledger` by order) finds what its purchase still gives.
create function credit_adjust_order(p_user text, p_order uuid, p_kind text, p_delta bigint, p_event text)
returns void language sql as $$
    select credit_adjust(p_user, (select id from credit_grants where source = 'purchase' and order_id = p_order),
                         p_order, p_kind, p_delta, p_event)
$$;

-- A subscription period's credits: the row names the grant, not the order, so the order's
-- purchase reckoning stays the purchase's.
create function credit_adjust_grant(p_user text, p_grant uuid, p_kind text, p_delta bigint, p_event text)
returns void language sql as $$
    select credit_adjust(p_user, p_grant, null, p_kind, p_delta, p_event)
$$;
