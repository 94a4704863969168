-- The business vault: history views over the satellites, the point-in-time tables and the
-- business views the API and BI tools read. Everything here is derived from the raw vault,
-- so this file drops and rebuilds its objects and is safe to apply again at any time.
-- Revenue figures count orders whose current status is not cancelled or returned;
-- order counts and first/last order dates count every order. Sums of money are
-- numeric(30, 2): an order's total is below 10^12, and sums of many of them (or a margin of
-- billions of units) must not overflow the refresh.

drop materialized view if exists business_vault.mv_product_analytics cascade;
drop materialized view if exists business_vault.mv_customer_360 cascade;
drop materialized view if exists business_vault.mv_order_analytics cascade;
drop materialized view if exists business_vault.mv_customer_favourite_category cascade;
drop materialized view if exists business_vault.mv_customer_order_metrics cascade;
drop table if exists business_vault.order_facts cascade;
delete from audit.dropped_indexes where table_name = 'business_vault.order_facts';
drop table if exists business_vault.order_facts_state;
drop view if exists business_vault.vw_order_analytics cascade;
drop view if exists business_vault.vw_current_customer cascade;
drop view if exists business_vault.vw_current_product cascade;
drop view if exists business_vault.vw_customer_history cascade;
drop view if exists business_vault.vw_product_history cascade;
drop view if exists business_vault.vw_order_history cascade;
drop view if exists business_vault.vw_customer_order_delivered cascade;
drop view if exists business_vault.vw_order_product_delivered cascade;

-- History of each customer's attributes: one row per satellite version, end-dated by the
-- next version (the end date and is-current flag are derived here, never stored). The
-- windows partition by the business key, so a filter on it is applied before them.
create view business_vault.vw_customer_history as
select
    hub.customer_id,
    sat.load_dts                                                               as valid_from,
    lead(sat.load_dts) over (partition by hub.customer_id order by sat.load_dts) as valid_to,
    lead(sat.load_dts) over (partition by hub.customer_id order by sat.load_dts) is null
                                                                               as is_current,
    sat.first_name,
    sat.last_name,
    sat.email,
    sat.phone,
    sat.city,
    sat.state,
    sat.country,
    sat.signup_date,
    sat.customer_segment,
    sat.record_source,
    sat.hashdiff
from raw_vault.sat_customer_details as sat
join raw_vault.hub_customer as hub using (customer_hk);

-- History of each product's attributes.
create view business_vault.vw_product_history as
select
    hub.product_id,
    sat.load_dts                                                              as valid_from,
    lead(sat.load_dts) over (partition by hub.product_id order by sat.load_dts) as valid_to,
    lead(sat.load_dts) over (partition by hub.product_id order by sat.load_dts) is null
                                                                              as is_current,
    sat.product_name,
    sat.category,
    sat.brand,
    sat.unit_price,
    sat.cost,
    sat.record_source,
    sat.hashdiff
from raw_vault.sat_product_details as sat
join raw_vault.hub_product as hub using (product_hk);

-- History of each order's details (status changes, corrections).
create view business_vault.vw_order_history as
select
    hub.order_id,
    sat.load_dts                                                            as valid_from,
    lead(sat.load_dts) over (partition by hub.order_id order by sat.load_dts) as valid_to,
    lead(sat.load_dts) over (partition by hub.order_id order by sat.load_dts) is null
                                                                            as is_current,
    sat.quantity,
    sat.unit_price,
    sat.discount,
    sat.total_amount,
    sat.transaction_ts,
    sat.payment_method,
    sat.order_status,
    sat.record_source,
    sat.hashdiff
from raw_vault.sat_order_details as sat
join raw_vault.hub_order as hub using (order_hk);

-- Point-in-time tables: for every customer and product, the load_dts of its current
-- satellite row as of the latest snapshot, so the business views join the current
-- attributes by equality (primary key look-ups) instead of searching the history.
create table if not exists business_vault.pit_customer (
    customer_hk                   uuid    primary key,
    snapshot_dts                  timestamptz not null,
    sat_customer_details_load_dts timestamptz not null
);

create table if not exists business_vault.pit_product (
    product_hk                   uuid    primary key,
    snapshot_dts                 timestamptz not null,
    sat_product_details_load_dts timestamptz not null
);

-- Filled here as well as after each load, so that a warehouse created before this table
-- keeps its product views. Every key is brought to its latest row, so that the refresh after
-- the next load, which reads only the rows after the latest snapshot in the table, misses
-- none.
insert into business_vault.pit_product (product_hk, snapshot_dts, sat_product_details_load_dts)
select product_hk, max(load_dts), max(load_dts)
from raw_vault.sat_product_details
group by product_hk
on conflict (product_hk) do update
    set snapshot_dts = excluded.snapshot_dts,
        sat_product_details_load_dts = excluded.sat_product_details_load_dts
    where pit_product.sat_product_details_load_dts
          is distinct from excluded.sat_product_details_load_dts;

-- The current attributes of each customer and product, through the point-in-time tables.
create view business_vault.vw_current_customer as
select sat.*
from business_vault.pit_customer as pit
join raw_vault.sat_customer_details as sat
    on sat.customer_hk = pit.customer_hk
    and sat.load_dts = pit.sat_customer_details_load_dts;

create view business_vault.vw_current_product as
select sat.*
from business_vault.pit_product as pit
join raw_vault.sat_product_details as sat
    on sat.product_hk = pit.product_hk
    and sat.load_dts = pit.sat_product_details_load_dts;

-- Each order with its current details and the keys of its customer and product: what every
-- other business view derives from. The customer's and product's attributes are not copied
-- here but joined in vw_order_analytics, so a changed customer does not rewrite their orders.
-- A table, not a materialized view: after a batch the loader rewrites only the orders the
-- batch changed (business_vault.start_order_facts_refresh).
create table business_vault.order_facts (
    order_id       text        not null,
    transaction_ts timestamptz,
    order_date     date,
    order_status   text,
    payment_method text,
    quantity       integer,
    unit_price     numeric(12, 2),
    discount       numeric(5, 4),
    total_amount   numeric(14, 2),
    customer_id    text,
    product_id     text,
    is_revenue     boolean,
    order_hk       uuid        not null,
    customer_hk    uuid        not null,
    product_hk     uuid        not null
);

-- Each order link with the load that last delivered it: the link's own load, or a later one
-- recorded in its effectivity satellite (the relationship delivered again after the order had
-- another). An order's current customer and product are those of its latest delivered links.
create view business_vault.vw_customer_order_delivered as
select link.customer_order_hk, link.customer_hk, link.order_hk,
       greatest(link.load_dts, again.load_dts) as delivered_dts
from raw_vault.link_customer_order as link
left join (
    select customer_order_hk, max(load_dts) as load_dts
    from raw_vault.sat_customer_order_effectivity
    group by customer_order_hk
) as again using (customer_order_hk);

create view business_vault.vw_order_product_delivered as
select link.order_product_hk, link.order_hk, link.product_hk,
       greatest(link.load_dts, again.load_dts) as delivered_dts
from raw_vault.link_order_product as link
left join (
    select order_product_hk, max(load_dts) as load_dts
    from raw_vault.sat_order_product_effectivity
    group by order_product_hk
) as again using (order_product_hk);

-- The order facts as the vault holds them now: of the given orders, or of every order when
-- none are given. A plain SQL function, so PostgreSQL inlines it and filters each step by
-- the given orders instead of computing every order first.
create function business_vault.order_facts_from_vault(only_orders uuid[])
returns setof business_vault.order_facts
language sql stable
as $$
with current_order_details as (
    select distinct on (order_hk) *
    from raw_vault.sat_order_details
    where only_orders is null or order_hk = any (only_orders)
    order by order_hk, load_dts desc
),

-- The customer and product the latest delivery of each order named (the ghost record when
-- that one was unknown).
order_customer as (
    select distinct on (order_hk) order_hk, customer_hk
    from business_vault.vw_customer_order_delivered
    where only_orders is null or order_hk = any (only_orders)
    order by order_hk, delivered_dts desc
),

order_product as (
    select distinct on (order_hk) order_hk, product_hk
    from business_vault.vw_order_product_delivered
    where only_orders is null or order_hk = any (only_orders)
    order by order_hk, delivered_dts desc
)

select
    hub_order.order_id,
    details.transaction_ts,
    (details.transaction_ts at time zone 'UTC')::date                        as order_date,
    details.order_status,
    details.payment_method,
    details.quantity,
    details.unit_price,
    details.discount,
    details.total_amount,
    nullif(hub_customer.customer_id, '-1')                                   as customer_id,
    nullif(hub_product.product_id, '-1')                                     as product_id,
    details.order_status not in ('cancelled', 'returned')                    as is_revenue,
    hub_order.order_hk,
    order_customer.customer_hk,
    order_product.product_hk
from raw_vault.hub_order as hub_order
join current_order_details as details using (order_hk)
join order_customer using (order_hk)
join order_product using (order_hk)
join raw_vault.hub_customer as hub_customer using (customer_hk)
join raw_vault.hub_product as hub_product using (product_hk)
where only_orders is null or hub_order.order_hk = any (only_orders)
$$;

insert into business_vault.order_facts
select * from business_vault.order_facts_from_vault(null);

-- The order facts of a batch's staged rows: what order_facts_from_vault gives for the orders
-- of the batch last loaded once its reconciliation has passed (a first load fills the table
-- with them), without searching the vault for each order's latest rows. The ghost records'
-- ids are null.
create function business_vault.order_facts_from_staging(batch bigint)
returns setof business_vault.order_facts
language sql stable
as $$
select
    stg.order_id,
    stg.transaction_ts,
    (stg.transaction_ts at time zone 'UTC')::date,
    stg.order_status,
    stg.payment_method,
    stg.quantity,
    stg.unit_price,
    stg.discount,
    stg.total_amount,
    case when stg.customer_hk <> '00000000-0000-0000-0000-000000000000' then stg.customer_id end,
    case when stg.product_hk <> '00000000-0000-0000-0000-000000000000' then stg.product_id end,
    stg.order_status not in ('cancelled', 'returned'),
    stg.order_hk,
    stg.customer_hk,
    stg.product_hk
from staging.stg_transactions as stg
where stg.batch_id = batch
$$;

-- How far the order facts follow the vault: the load_dts of the latest load they include.
-- A load whose refresh never ran (its batch failed) is caught up by the next one.
-- filled_from_batch: the batch whose staged rows gave facts (all of them after a first load,
-- its own orders after a later one), until a later refresh has seen that batch's
-- reconciliation pass.
create table business_vault.order_facts_state (
    refreshed_through timestamptz not null,
    filled_from_batch bigint
);
insert into business_vault.order_facts_state (refreshed_through)
select coalesce(max(load_dts), '-infinity') from (
    select max(load_dts) as load_dts from raw_vault.sat_order_details
    union all
    select max(load_dts) from raw_vault.link_customer_order
    union all
    select max(load_dts) from raw_vault.link_order_product
    union all
    select max(load_dts) from raw_vault.sat_customer_order_effectivity
    union all
    select max(load_dts) from raw_vault.sat_order_product_effectivity
) as latest;

-- The key the loader rewrites by, and the API's pages: a customer's orders, all orders
-- newest first. Orders of one status are read newest first from the second and filtered:
-- an index led by the status would cost the largest load more than any other (sorting a
-- million rows by five values compares them in full at nearly every step) to spare the
-- count of a rare status a scan of the table.
create unique index order_facts_order_hk_idx
    on business_vault.order_facts (order_hk);
create index order_facts_customer_idx
    on business_vault.order_facts (customer_id, transaction_ts desc, order_id desc);
create index order_facts_ts_idx
    on business_vault.order_facts (transaction_ts desc, order_id desc);

-- Each customer's order metrics and favourite category: the two heavy parts of the customer
-- 360 profile, each a pass over every order, kept as materialized views of their own so that
-- the loader refreshes them side by side before the profile that joins them.
create materialized view business_vault.mv_customer_order_metrics as
select
    customer_hk,
    count(*)                                       as order_count,
    count(*) filter (where is_revenue)             as revenue_order_count,
    coalesce(sum(total_amount) filter (where is_revenue), 0) as lifetime_value,
    min(order_date)                                as first_order_date,
    max(order_date)                                as last_order_date,
    max(order_date) filter (where is_revenue)      as last_revenue_order_date
from business_vault.order_facts
where customer_id is not null
group by customer_hk;

-- The category the customer bought most units of; ties go to the first name alphabetically.
-- Each product's current category is materialized first, so that the orders meet one small
-- table instead of the point-in-time table and then the satellite.
create materialized view business_vault.mv_customer_favourite_category as
with product_category as materialized (
    select product_hk, category
    from business_vault.vw_current_product
    where category is not null
)
select distinct on (customer_hk) customer_hk, category
from (
    select facts.customer_hk, product.category, sum(facts.quantity) as units
    from business_vault.order_facts as facts
    join product_category as product using (product_hk)
    where facts.is_revenue and facts.customer_id is not null
    group by facts.customer_hk, product.category
) as units_per_category
order by customer_hk, units desc, category;

-- The customer 360 profile: current attributes plus order metrics and an RFM segment.
create materialized view business_vault.mv_customer_360 as
with current_customer as (
    select hub.customer_id, current.*
    from business_vault.vw_current_customer as current
    join raw_vault.hub_customer as hub using (customer_hk)
),

-- Quintile scores among customers with revenue; 5 is best. A score is the fifth of the
-- ranking the customer's rank falls in, equal values taking the same (lowest) rank, so
-- customers who behave alike score alike whatever their ids.
rfm_scores as (
    select
        customer_hk,
        1 + 5 * (rank() over (order by last_revenue_order_date) - 1) / count(*) over ()
                                                                     as recency_score,
        1 + 5 * (rank() over (order by revenue_order_count) - 1) / count(*) over ()
                                                                     as frequency_score,
        1 + 5 * (rank() over (order by lifetime_value) - 1) / count(*) over ()
                                                                     as monetary_score
    from business_vault.mv_customer_order_metrics
    where revenue_order_count > 0
)

select
    customer.customer_id,
    customer.first_name,
    customer.last_name,
    concat_ws(' ', customer.first_name, customer.last_name)          as full_name,
    customer.email,
    customer.phone,
    customer.city,
    customer.state,
    customer.country,
    customer.signup_date,
    customer.customer_segment,
    customer.record_source,
    customer.load_dts                                                as profile_updated_at,
    coalesce(metrics.order_count, 0)::integer                        as order_count,
    coalesce(metrics.lifetime_value, 0)::numeric(30, 2)              as lifetime_value,
    round(metrics.lifetime_value / nullif(metrics.revenue_order_count, 0), 2)::numeric(30, 2)
                                                                     as avg_order_value,
    metrics.first_order_date,
    metrics.last_order_date,
    favourite.category                                               as favourite_category,
    rfm.recency_score::integer                                       as rfm_recency_score,
    rfm.frequency_score::integer                                     as rfm_frequency_score,
    rfm.monetary_score::integer                                      as rfm_monetary_score,
    case
        when rfm.customer_hk is null then 'No Purchases'
        when rfm.recency_score >= 4 and rfm.frequency_score >= 4 then 'Champions'
        when rfm.frequency_score >= 4 then 'Loyal Customers'
        when rfm.recency_score >= 4 and rfm.frequency_score <= 2 then 'New Customers'
        when rfm.recency_score <= 2 and rfm.frequency_score >= 3 then 'At Risk'
        when rfm.recency_score <= 2 and rfm.frequency_score <= 2 then 'Hibernating'
        else 'Potential Loyalists'
    end                                                              as rfm_segment,
    customer.customer_hk
from current_customer as customer
left join business_vault.mv_customer_order_metrics as metrics using (customer_hk)
left join business_vault.mv_customer_favourite_category as favourite using (customer_hk)
left join rfm_scores as rfm using (customer_hk);

create unique index mv_customer_360_customer_idx
    on business_vault.mv_customer_360 (customer_id);
create index mv_customer_360_value_idx
    on business_vault.mv_customer_360 (lifetime_value desc, customer_id);
create index mv_customer_360_last_order_idx
    on business_vault.mv_customer_360 (last_order_date desc nulls last, customer_id);
create index mv_customer_360_country_idx
    on business_vault.mv_customer_360 (country, customer_id);
create index mv_customer_360_segment_idx
    on business_vault.mv_customer_360 (customer_segment, customer_id);
-- The API's case-insensitive prefix search: Unicode case folding (the C collation of the
-- database folds ASCII only); text_pattern_ops lets LIKE 'prefix%' use them under any collation.
create index mv_customer_360_email_prefix_idx
    on business_vault.mv_customer_360
    (casefold(email collate pg_unicode_fast) text_pattern_ops);
create index mv_customer_360_name_prefix_idx
    on business_vault.mv_customer_360
    (casefold(full_name collate pg_unicode_fast) text_pattern_ops);
create index mv_customer_360_last_name_prefix_idx
    on business_vault.mv_customer_360
    (casefold(last_name collate pg_unicode_fast) text_pattern_ops);

-- Product performance: units, revenue and margin (at current cost) from revenue orders.
create materialized view business_vault.mv_product_analytics as
with current_product as (
    select hub.product_id, current.*
    from business_vault.vw_current_product as current
    join raw_vault.hub_product as hub using (product_hk)
),

sales as (
    select
        product_hk,
        sum(quantity)                                         as units_sold,
        sum(total_amount)                                     as revenue,
        count(*)                                              as order_count,
        count(distinct customer_hk) filter (where customer_id is not null) as distinct_customers
    from business_vault.order_facts
    where is_revenue
    group by product_hk
)

select
    product.product_id,
    product.product_name,
    product.category,
    product.brand,
    product.unit_price,
    product.cost,
    coalesce(sales.units_sold, 0)::bigint                                   as units_sold,
    coalesce(sales.revenue, 0)::numeric(30, 2)                              as revenue,
    (coalesce(sales.revenue, 0) - coalesce(sales.units_sold, 0) * product.cost)::numeric(30, 2)
                                                                            as margin,
    coalesce(sales.order_count, 0)::integer                                 as order_count,
    coalesce(sales.distinct_customers, 0)::integer                          as distinct_customers,
    rank() over (partition by product.category order by coalesce(sales.revenue, 0) desc)::integer
                                                                            as category_rank,
    product.product_hk
from current_product as product
left join sales using (product_hk);

create unique index mv_product_analytics_product_idx
    on business_vault.mv_product_analytics (product_id);
create index mv_product_analytics_category_idx
    on business_vault.mv_product_analytics (category, revenue desc, product_id);
create index mv_product_analytics_revenue_idx
    on business_vault.mv_product_analytics (revenue desc, product_id);
create index mv_product_analytics_units_idx
    on business_vault.mv_product_analytics (units_sold desc, product_id);

-- The business views: stable names for psql, BI tools and the API.
create view business_vault.vw_customer_360 as
select
    customer_id, first_name, last_name, full_name, email, phone, city, state, country,
    signup_date, customer_segment, record_source, profile_updated_at, order_count,
    lifetime_value, avg_order_value, first_order_date, last_order_date, favourite_category,
    rfm_recency_score, rfm_frequency_score, rfm_monetary_score, rfm_segment
from business_vault.mv_customer_360;

create view business_vault.vw_product_analytics as
select
    product_id, product_name, category, brand, unit_price, cost, units_sold, revenue, margin,
    order_count, distinct_customers, category_rank
from business_vault.mv_product_analytics;

-- Each order with its customer's and product's current attributes. Every join is a left
-- join on a primary key, so a query that reads none of their columns (a count, a page of
-- keys) touches the order facts alone.
create view business_vault.vw_order_analytics as
select
    facts.order_id,
    facts.transaction_ts,
    facts.order_date,
    facts.order_status,
    facts.payment_method,
    facts.quantity,
    facts.unit_price,
    facts.discount,
    facts.total_amount,
    facts.customer_id,
    nullif(concat_ws(' ', customer.first_name, customer.last_name), '') as customer_name,
    customer.email                                                    as customer_email,
    customer.city                                                     as customer_city,
    customer.country                                                  as customer_country,
    customer.customer_segment,
    facts.product_id,
    product.product_name,
    product.category,
    product.brand
from business_vault.order_facts as facts
left join business_vault.pit_customer as customer_pit using (customer_hk)
left join raw_vault.sat_customer_details as customer
    on customer.customer_hk = customer_pit.customer_hk
    and customer.load_dts = customer_pit.sat_customer_details_load_dts
left join business_vault.pit_product as product_pit using (product_hk)
left join raw_vault.sat_product_details as product
    on product.product_hk = product_pit.product_hk
    and product.load_dts = product_pit.sat_product_details_load_dts;
