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
-- hash_normalised_key takes parts already in normal form: the staging statement normalises
-- each key once and hashes it with these.
create or replace function raw_vault.hash_normalised_key(normalised text)
returns uuid
language sql immutable parallel safe
as $$
    select md5(normalised)::uuid
$$;

create or replace function raw_vault.hash_normalised_key(normalised_1 text, normalised_2 text)
returns uuid
language sql immutable parallel safe
as $$
    select md5(normalised_1 || '||' || normalised_2)::uuid
$$;

create or replace function raw_vault.hash_key(key_part text)
returns uuid
language sql immutable parallel safe
as $$
    select raw_vault.hash_normalised_key(raw_vault.normalise_key(key_part))
$$;

create or replace function raw_vault.hash_key(key_part_1 text, key_part_2 text)
returns uuid
language sql immutable parallel safe
as $$
    select raw_vault.hash_normalised_key(raw_vault.normalise_key(key_part_1),
                                         raw_vault.normalise_key(key_part_2))
$$;

-- After a load: bring the point-in-time tables up to the snapshot (the batch's load_dts).
-- Only the keys whose satellite took rows since the latest snapshot a row was written for
-- are written again (snapshot_dts is the snapshot at which a key's row last changed); the
-- satellites are insert-only and batches load one at a time, so every other key's latest
-- row is already there. A batch that failed before its refresh is caught up by the next.
create or replace procedure business_vault.refresh_pit_tables(snapshot timestamptz)
language plpgsql
as $$
begin
    insert into business_vault.pit_customer
        (customer_hk, snapshot_dts, sat_customer_details_load_dts)
    select customer_hk, snapshot, max(load_dts)
    from raw_vault.sat_customer_details
    where load_dts <= snapshot
      and load_dts > (select coalesce(max(snapshot_dts), '-infinity')
                      from business_vault.pit_customer)
    group by customer_hk
    on conflict (customer_hk) do update
        set snapshot_dts = excluded.snapshot_dts,
            sat_customer_details_load_dts = excluded.sat_customer_details_load_dts;
    analyze business_vault.pit_customer;

    insert into business_vault.pit_product
        (product_hk, snapshot_dts, sat_product_details_load_dts)
    select product_hk, snapshot, max(load_dts)
    from raw_vault.sat_product_details
    where load_dts <= snapshot
      and load_dts > (select coalesce(max(snapshot_dts), '-infinity')
                      from business_vault.pit_product)
    group by product_hk
    on conflict (product_hk) do update
        set snapshot_dts = excluded.snapshot_dts,
            sat_product_details_load_dts = excluded.sat_product_details_load_dts;
    analyze business_vault.pit_product;
end;
$$;

-- Whether no batch but this one has written to the vault: a first load.
create or replace function business_vault.is_first_load(batch bigint)
returns boolean
language sql stable
as $$
    select not exists (select from audit.load_batch
                       where batch_id <> batch and row_counts ? 'inserted')
$$;

-- And, side by side with that, bring the order facts up to date with the vault after the
-- batch loaded at the snapshot. start_order_facts_refresh fills them whole (a first load, or
-- when most orders changed), or lists the orders changed since they were last brought up to
-- date; the loader rewrites those with rewrite_order_facts, in shares side by side, then
-- records it with finish_order_facts_refresh.
drop routine if exists business_vault.refresh_order_views(timestamptz);
drop routine if exists business_vault.refresh_order_facts(timestamptz);
create or replace procedure business_vault.start_order_facts_refresh(
    snapshot timestamptz, batch bigint, inout orders_to_rewrite uuid[] default null
)
language plpgsql
as $$
declare
    caught_up_to timestamptz;
    filled_from bigint;
    changed uuid[];
    stored bigint;
    -- Only the batch being loaded gives facts from its staged rows.
    being_loaded boolean := exists (
        select from audit.load_batch where batch_id = batch and status = 'running'
    );
begin
    select state.refreshed_through, state.filled_from_batch into caught_up_to, filled_from
    from business_vault.order_facts_state as state
    for update;
    select count(*) into stored from business_vault.order_facts;
    -- Facts taken from a batch's staged rows hold what the vault holds only if that batch's
    -- reconciliation passed (it may have run after them); otherwise they are refilled.
    if filled_from is not null and filled_from <> batch then
        if not coalesce((select bool_and(passed) from audit.reconciliation
                         where batch_id = filled_from), false) then
            stored := 0;
        end if;
        filled_from := null;
    end if;
    orders_to_rewrite := '{}';

    -- A first load: every order in the vault comes from this batch, whose staged rows give
    -- the facts without searching the vault for each order's latest rows.
    if stored = 0 and being_loaded and business_vault.is_first_load(batch) then
        call business_vault.refill_order_facts(batch);
        filled_from := batch;
    else
        -- The orders changed since the facts were last brought up to date: by this load, and
        -- by any earlier one whose refresh never ran (every vault row carries its load's
        -- load_dts). With them, the orders whose hub row, or whose customer's or product's,
        -- arrived since: hubs load beside links and satellites, so a batch that failed in its
        -- hubs can leave an order pointing at a hub row that only a later batch brings.
        -- Each link table is read once, for its own new rows and those of new hub rows.
        changed := case when stored > 0 then array(
            select distinct order_hk from (
                select order_hk from raw_vault.sat_order_details
                where load_dts > caught_up_to and load_dts <= snapshot
                union all
                select link.order_hk
                from raw_vault.link_customer_order as link
                left join raw_vault.hub_customer as hub
                    on hub.customer_hk = link.customer_hk
                   and hub.load_dts > caught_up_to and hub.load_dts <= snapshot
                where (link.load_dts > caught_up_to and link.load_dts <= snapshot)
                   or hub.customer_hk is not null
                union all
                select link.order_hk
                from raw_vault.link_order_product as link
                left join raw_vault.hub_product as hub
                    on hub.product_hk = link.product_hk
                   and hub.load_dts > caught_up_to and hub.load_dts <= snapshot
                where (link.load_dts > caught_up_to and link.load_dts <= snapshot)
                   or hub.product_hk is not null
                union all
                select link.order_hk
                from raw_vault.sat_customer_order_effectivity as again
                join raw_vault.link_customer_order as link using (customer_order_hk)
                where again.load_dts > caught_up_to and again.load_dts <= snapshot
                union all
                select link.order_hk
                from raw_vault.sat_order_product_effectivity as again
                join raw_vault.link_order_product as link using (order_product_hk)
                where again.load_dts > caught_up_to and again.load_dts <= snapshot
                union all
                select order_hk from raw_vault.hub_order
                where load_dts > caught_up_to and load_dts <= snapshot
            ) as touched
        ) end;

        -- Rewriting a few orders costs little; when most of them changed (or the table is
        -- empty), refilling it and building its indexes afresh costs a fraction of that.
        if stored = 0 or cardinality(changed) > stored / 4 then
            call business_vault.refill_order_facts();
            filled_from := null;
        else
            orders_to_rewrite := changed;
            -- The orders this batch staged take their facts from its staged rows, which are
            -- their latest (see rewrite_order_facts).
            if being_loaded then
                filled_from := batch;
            end if;
        end if;
    end if;
    update business_vault.order_facts_state set filled_from_batch = filled_from;
    if cardinality(orders_to_rewrite) = 0 then
        call business_vault.finish_order_facts_refresh(snapshot);
    end if;
end;
$$;

-- The facts of these orders, as the vault holds them now. Those staged by the batch whose
-- rows the facts are taken from (filled_from_batch, the batch being loaded) are its staged
-- rows: the batch's vault steps have committed, so each of its orders has them as its latest
-- satellite row and links, and its reconciliation checks the vault against them (should it
-- fail, the next refresh refills the facts from the vault). Only the others are searched for
-- in the vault.
create or replace procedure business_vault.rewrite_order_facts(orders uuid[])
language plpgsql
as $$
declare
    staged_batch bigint;
begin
    select filled_from_batch into staged_batch from business_vault.order_facts_state;
    delete from business_vault.order_facts where order_hk = any (orders);
    insert into business_vault.order_facts
    select * from business_vault.order_facts_from_staging(staged_batch) as staged
    where staged.order_hk = any (orders)
    union all
    select * from business_vault.order_facts_from_vault(array(
        select unnest(orders)
        except
        select order_hk from staging.stg_transactions where batch_id = staged_batch
    ));
end;
$$;

-- The facts follow the vault up to the snapshot.
create or replace procedure business_vault.finish_order_facts_refresh(snapshot timestamptz)
language plpgsql
as $$
begin
    update business_vault.order_facts_state
    set refreshed_through = greatest(refreshed_through, snapshot);
    analyze business_vault.order_facts;
end;
$$;

-- Bulk loads: when a load brings more rows than a table holds (a first load), keeping its
-- B-tree indexes up to date row by row costs about three times as much as dropping them and
-- building them once the rows are in. drop_indexes drops a table's indexes (with the
-- constraints they back) and records in audit.dropped_indexes the statement that builds
-- each again; build_index runs one of them. Both take part in the caller's transaction.
drop routine if exists raw_vault.drop_indexes(regclass);
drop routine if exists raw_vault.build_indexes(text[]);

create or replace procedure raw_vault.drop_indexes(target regclass)
language plpgsql
as $$
declare
    existing record;
begin
    for existing in
        select pg_index.indexrelid::regclass::text as index_name,
               pg_get_indexdef(pg_index.indexrelid) as index_definition,
               con.conname as constraint_name,
               pg_get_constraintdef(con.oid) as constraint_definition
        from pg_index
        left join pg_constraint as con on con.conindid = pg_index.indexrelid
                                      and con.conrelid = target
        where pg_index.indrelid = target
    loop
        insert into audit.dropped_indexes (index_name, table_name, definition)
        values (
            existing.index_name,
            target::text,
            case when existing.constraint_name is not null
                 then format('alter table %s add constraint %I %s', target,
                             existing.constraint_name, existing.constraint_definition)
                 else existing.index_definition
            end
        );
        if existing.constraint_name is not null then
            execute format('alter table %s drop constraint %I', target, existing.constraint_name);
        else
            execute format('drop index %s', existing.index_name);
        end if;
    end loop;
end;
$$;

create or replace procedure raw_vault.build_index(dropped text)
language plpgsql
as $$
declare
    statement text;
begin
    delete from audit.dropped_indexes where index_name = dropped returning definition into statement;
    if statement is not null then
        execute statement;
    end if;
end;
$$;

-- Every index still recorded as dropped for the table (all of them, when none is given).
create or replace procedure raw_vault.build_indexes(target regclass default null)
language plpgsql
as $$
declare
    dropped text;
begin
    for dropped in
        select index_name from audit.dropped_indexes
        where target is null or table_name = target::text
        order by index_name
    loop
        call raw_vault.build_index(dropped);
    end loop;
end;
$$;

-- Refill the order facts as a bulk load: from the vault, or, given a batch, from its staged
-- rows (a first load's). The indexes are left to the caller (raw_vault.build_index), which
-- builds them side by side with the views that read the facts.
drop routine if exists business_vault.refill_order_facts();
create or replace procedure business_vault.refill_order_facts(staged_batch bigint default null)
language plpgsql
as $$
begin
    call raw_vault.drop_indexes('business_vault.order_facts');
    truncate business_vault.order_facts;
    if staged_batch is null then
        insert into business_vault.order_facts
        select * from business_vault.order_facts_from_vault(null);
    else
        insert into business_vault.order_facts
        select * from business_vault.order_facts_from_staging(staged_batch);
    end if;
end;
$$;

-- Then each view derived from the order facts (the loader runs them side by side).
create or replace procedure business_vault.refresh_view(view_name text)
language plpgsql
as $$
begin
    if view_name not in ('mv_customer_order_metrics', 'mv_customer_favourite_category',
                         'mv_customer_360', 'mv_product_analytics') then
        raise exception 'unknown business view %', view_name;
    end if;
    execute format('refresh materialized view business_vault.%I', view_name);
    execute format('analyze business_vault.%I', view_name);
end;
$$;

-- Parse a timestamp in a user-configured format (PostgreSQL to_timestamp pattern); null when
-- the text does not fit. to_timestamp alone is lenient: it reads '5/5/23' as year 23 under
-- DD/MM/YYYY and ignores trailing words, so the value must also be what to_char writes for
-- that pattern (ignoring case). A pattern with a time-zone field is exempt from that test,
-- since to_char writes the session's offset, not the one given. A time outside the years 1
-- to 9999 in UTC is refused, as clients cannot read it. Only used for non-ISO formats: ISO
-- input takes the faster path.
create or replace function staging.try_to_timestamp(value text, format text)
returns timestamptz
language plpgsql stable parallel safe
as $$
declare
    parsed timestamptz;
begin
    parsed := to_timestamp(value, format);
    if format !~* 'TZH|TZM|TZ|OF' and upper(to_char(parsed, format)) <> upper(value) then
        return null;
    end if;
    if parsed < '0001-01-01 00:00:00+00' or parsed >= '10000-01-01 00:00:00+00' then
        return null;
    end if;
    return parsed;
exception when others then
    return null;
end;
$$;
