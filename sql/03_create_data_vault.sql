-- The raw Data Vault 2.0: hubs hold business keys, links hold relationships, satellites hold
-- descriptive attributes and their full history. Every table is insert-only; every row
-- carries the batch's load_dts and the record_source it came from.

-- Hubs: one row per business key ever seen.
create table if not exists raw_vault.hub_customer (
    customer_hk   uuid    primary key,
    customer_id   text        not null,
    load_dts      timestamptz not null,
    record_source text        not null
);

create table if not exists raw_vault.hub_product (
    product_hk    uuid    primary key,
    product_id    text        not null,
    load_dts      timestamptz not null,
    record_source text        not null
);

-- A business key appears once in its hub; these indexes also serve lookups by key.
create unique index if not exists hub_customer_business_key_idx
    on raw_vault.hub_customer (customer_id);
create unique index if not exists hub_product_business_key_idx
    on raw_vault.hub_product (product_id);

-- One order per transaction.
create table if not exists raw_vault.hub_order (
    order_hk      uuid    primary key,
    order_id      text        not null,
    load_dts      timestamptz not null,
    record_source text        not null
);

-- The hash key's primary key already keeps each order id once (equal ids hash equally), and
-- orders are looked up by id in the order analytics' own index: a second index here would
-- double the cost of loading the largest hub.
drop index if exists raw_vault.hub_order_business_key_idx;

-- Links: one row per relationship ever seen. Like the satellites they carry no foreign
-- keys: the load order (hubs first) and the post-load reconciliation guarantee that every
-- hash key points at a hub row, without a per-row trigger check on every insert.
create table if not exists raw_vault.link_customer_order (
    customer_order_hk uuid    primary key,
    customer_hk       uuid    not null,
    order_hk          uuid    not null,
    load_dts          timestamptz not null,
    record_source     text        not null
);

create table if not exists raw_vault.link_order_product (
    order_product_hk uuid    primary key,
    order_hk         uuid    not null,
    product_hk       uuid    not null,
    load_dts         timestamptz not null,
    record_source    text        not null
);

-- Effectivity satellites of the two order links, the order being the driving key. A link row
-- records the load that first delivered a relationship; a row here records a later load that
-- delivered it again after the order had been delivered with another customer (or product).
-- An order's current customer and product are those of its most recently delivered links
-- (business_vault.order_links), so an order moved to another customer and back shows the
-- right one.
create table if not exists raw_vault.sat_customer_order_effectivity (
    customer_order_hk uuid        not null,
    load_dts          timestamptz not null,
    record_source     text        not null,
    primary key (customer_order_hk, load_dts)
);

create table if not exists raw_vault.sat_order_product_effectivity (
    order_product_hk uuid        not null,
    load_dts         timestamptz not null,
    record_source    text        not null,
    primary key (order_product_hk, load_dts)
);

-- Satellites: a row is added only when the hashdiff of the payload changes.
create table if not exists raw_vault.sat_customer_details (
    customer_hk      uuid    not null,
    load_dts         timestamptz not null,
    hashdiff         uuid    not null,
    record_source    text        not null,
    first_name       text,
    last_name        text,
    email            text,
    phone            text,
    city             text,
    state            text,
    country          text,
    signup_date      date,
    customer_segment text,
    primary key (customer_hk, load_dts)
);

create table if not exists raw_vault.sat_product_details (
    product_hk    uuid    not null,
    load_dts      timestamptz not null,
    hashdiff      uuid    not null,
    record_source text        not null,
    product_name  text,
    category      text,
    brand         text,
    unit_price    numeric(12, 2),
    cost          numeric(12, 2),
    primary key (product_hk, load_dts)
);

create table if not exists raw_vault.sat_order_details (
    order_hk       uuid    not null,
    load_dts       timestamptz not null,
    hashdiff       uuid    not null,
    record_source  text        not null,
    quantity       integer,
    unit_price     numeric(12, 2),
    discount       numeric(5, 4),
    total_amount   numeric(14, 2),
    transaction_ts timestamptz,
    payment_method text,
    order_status   text,
    primary key (order_hk, load_dts)
);

-- Ghost records: transactions naming an unknown customer or product link here, so they
-- load (and are counted in audit.quarantine as 'ghost_linked') instead of being dropped.
insert into raw_vault.hub_customer (customer_hk, customer_id, load_dts, record_source)
values ('00000000-0000-0000-0000-000000000000', '-1', '1900-01-01 00:00:00+00', 'SYSTEM')
on conflict (customer_hk) do nothing;

insert into raw_vault.hub_product (product_hk, product_id, load_dts, record_source)
values ('00000000-0000-0000-0000-000000000000', '-1', '1900-01-01 00:00:00+00', 'SYSTEM')
on conflict (product_hk) do nothing;
