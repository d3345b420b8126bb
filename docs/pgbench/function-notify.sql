\set n random(1, 400000)
select fulfil('evt_' || :n, 'cs_' || :n, true);
