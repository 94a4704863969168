-- Functions shared by the loader and the business layer.

-- The normalised form of a business key, as stored in the hubs: trimmed of spaces, tabs and
-- line breaks, upper-cased with full Unicode case mapping whatever the database locale (the
-- pg_unicode_fast collation needs PostgreSQL 18 or later), empty meaning missing.
create or replace function raw_vault.normalise_key(key_part text)
returns text
language sql immutable parallel safe
as $$
    select nullif(upper(btrim(key_part, E' \t\r\n') collate pg_unicode_fast), '')
$$;

-- The hash key of a business key: MD5 of the normalised key, with '||' between the parts of
-- a composite key, stored as the 16 bytes of a uuid (half the size of the hex text, and
-- compared as fixed-width binary). A missing part gives null, which the quality checks
-- reject. Plain SQL expressions, so PostgreSQL inlines them into the staging statement.
create or replace function raw_vault.hash_key(key_part text)
returns uuid
language sql immutable parallel safe
as $$
    select md5(raw_vault.normalise_key(key_part))::uuid
$$;

create or replace function raw_vault.hash_key(key_part_1 text, key_part_2 text)
returns uuid
language sql immutable parallel safe
as $$
    select md5(raw_vault.normalise_key(key_part_1) || '||' || raw_vault.normalise_key(key_part_2))::uuid
$$;

-- After a load: rebuild the point-in-time tables as of the snapshot (the batch's load_dts),
-- then bring the order facts up to date.
create or replace procedure business_vault.refresh_order_views(snapshot timestamptz)
language plpgsql
as $$
declare
    caught_up_to timestamptz;
    changed uuid[];
    stored bigint;
begin
    delete from business_vault.pit_customer;
    insert into business_vault.pit_customer (customer_hk, snapshot_dts, sat_customer_details_load_dts)
    select customer_hk, snapshot, max(load_dts)
    from raw_vault.sat_customer_details
    where load_dts <= snapshot
    group by customer_hk;
    analyze business_vault.pit_customer;

    delete from business_vault.pit_product;
    insert into business_vault.pit_product (product_hk, snapshot_dts, sat_product_details_load_dts)
    select product_hk, snapshot, max(load_dts)
    from raw_vault.sat_product_details
    where load_dts <= snapshot
    group by product_hk;
    analyze business_vault.pit_product;

    -- The orders changed since the facts were last brought up to date: by this load, and by
    -- any earlier one whose refresh never ran (every vault row carries its load's load_dts).
    select state.refreshed_through into caught_up_to
    from business_vault.order_facts_state as state
    for update;
    changed := array(
        select order_hk from raw_vault.sat_order_details
        where load_dts > caught_up_to and load_dts <= snapshot
        union
        select order_hk from raw_vault.link_customer_order
        where load_dts > caught_up_to and load_dts <= snapshot
        union
        select order_hk from raw_vault.link_order_product
        where load_dts > caught_up_to and load_dts <= snapshot
    );
    select count(*) into stored from business_vault.order_facts;

    -- Rewriting a few orders costs little; when most of them changed (a first load),
    -- refilling the table and building its indexes afresh costs a fraction of that.
    if cardinality(changed) > stored / 4 then
        call business_vault.refill_order_facts();
    elsif cardinality(changed) > 0 then
        delete from business_vault.order_facts where order_hk = any (changed);
        insert into business_vault.order_facts
        select * from business_vault.order_facts_from_vault(changed);
    end if;
    update business_vault.order_facts_state
    set refreshed_through = greatest(caught_up_to, snapshot);
    analyze business_vault.order_facts;
end;
$$;

-- Refill the order facts from the vault: the indexes are dropped and built again once the
-- rows are in, which is several times cheaper than maintaining them row by row.
create or replace procedure business_vault.refill_order_facts()
language plpgsql
as $$
declare
    definitions text[];
    definition text;
    index_name text;
begin
    select array_agg(pg_get_indexdef(indexrelid)) into definitions
    from pg_index where indrelid = 'business_vault.order_facts'::regclass;
    for index_name in
        select indexrelid::regclass::text
        from pg_index where indrelid = 'business_vault.order_facts'::regclass
    loop
        execute format('drop index %s', index_name);
    end loop;
    truncate business_vault.order_facts;
    insert into business_vault.order_facts
    select * from business_vault.order_facts_from_vault(null);
    foreach definition in array coalesce(definitions, '{}') loop
        execute definition;
    end loop;
end;
$$;

-- Then each view derived from the order facts (the loader runs them side by side).
create or replace procedure business_vault.refresh_view(view_name text)
language plpgsql
as $$
begin
    if view_name not in ('mv_customer_360', 'mv_product_analytics') then
        raise exception 'unknown business view %', view_name;
    end if;
    execute format('refresh materialized view business_vault.%I', view_name);
    execute format('analyze business_vault.%I', view_name);
end;
$$;

-- Parse a timestamp in a user-configured format (PostgreSQL to_timestamp pattern); null when
-- the text does not fit. Only used for non-ISO formats: ISO input takes the faster path.
create or replace function staging.try_to_timestamp(value text, format text)
returns timestamptz
language plpgsql immutable parallel safe
as $$
begin
    return to_timestamp(value, format);
exception when others then
    return null;
end;
$$;
