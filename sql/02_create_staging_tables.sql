-- Staging: the landing tables the loader COPYs the CSV files into, the typed and hashed
-- rows that passed the quality checks, and the bookkeeping of every batch.
-- Staging tables are unlogged: they are rebuilt from the source files on every batch.

-- Every load is one batch.
create table if not exists audit.load_batch (
    batch_id      bigserial primary key,
    status        text        not null default 'running'
                  check (status in ('running', 'succeeded', 'failed')),
    started_at    timestamptz not null default clock_timestamp(),
    finished_at   timestamptz,
    load_dts      timestamptz not null,
    data_dir      text        not null,
    source_files  jsonb       not null default '{}'::jsonb, -- per source: path, sha256, bytes
    row_counts    jsonb       not null default '{}'::jsonb, -- per stage and source
    stage_timings jsonb       not null default '{}'::jsonb, -- seconds per stage
    message       text,
    report        jsonb
);
-- The Airflow run that opened the batch (null for `c360 load`): a retried start task finds the
-- batch its earlier try opened.
alter table audit.load_batch add column if not exists airflow_run_id text;

-- Rows that failed a check (disposition 'rejected') or loaded against a ghost record
-- ('ghost_linked'). Nothing is dropped silently: every such row is here with its reason.
create table if not exists audit.quarantine (
    quarantine_id bigserial primary key,
    batch_id      bigint not null references audit.load_batch (batch_id),
    source        text   not null,
    source_file   text   not null,
    line_number   integer not null,
    business_key  text,
    reason        text   not null,
    detail        text,
    disposition   text   not null default 'rejected'
                  check (disposition in ('rejected', 'ghost_linked')),
    raw_row       jsonb  not null,
    quarantined_at timestamptz not null default now()
);
create index if not exists quarantine_batch_idx on audit.quarantine (batch_id, source, reason);

-- Post-load reconciliation: one row per check of a batch.
create table if not exists audit.reconciliation (
    batch_id   bigint  not null references audit.load_batch (batch_id),
    check_name text    not null,
    expected   numeric not null,
    actual     numeric not null,
    passed     boolean not null,
    primary key (batch_id, check_name)
);

-- Indexes a bulk load has dropped and not yet built again, with the statement that builds
-- each one (see raw_vault.drop_indexes). A load that stops in between leaves them here, and
-- the next batch builds them first.
create table if not exists audit.dropped_indexes (
    index_name text primary key, -- schema-qualified
    table_name text not null,
    definition text not null,
    dropped_at timestamptz not null default now()
);

-- Landing tables: one text column per canonical field, as the file gave it.
create unlogged table if not exists staging.raw_customers (
    batch_id         bigint  not null,
    source_file      text    not null,
    line_number      integer not null,
    customer_id      text,
    first_name       text,
    last_name        text,
    email            text,
    phone            text,
    city             text,
    state            text,
    country          text,
    signup_date      text,
    customer_segment text
);

create unlogged table if not exists staging.raw_products (
    batch_id     bigint  not null,
    source_file  text    not null,
    line_number  integer not null,
    product_id   text,
    product_name text,
    category     text,
    brand        text,
    unit_price   text,
    cost         text
);

create unlogged table if not exists staging.raw_transactions (
    batch_id       bigint  not null,
    source_file    text    not null,
    line_number    integer not null,
    transaction_id text,
    customer_id    text,
    product_id     text,
    quantity       text,
    unit_price     text,
    discount       text,
    total_amount   text,
    transaction_ts text,
    payment_method text,
    order_status   text
);

-- Rows that passed the checks: typed, with hash keys and hashdiffs computed once, here.
-- No indexes: the check statement leaves one row per key, and every later step reads the
-- whole batch.
create unlogged table if not exists staging.stg_customers (
    batch_id         bigint  not null,
    line_number      integer not null,
    record_source    text    not null,
    customer_hk      uuid not null,
    hashdiff         uuid not null,
    customer_id      text    not null,
    first_name       text,
    last_name        text,
    email            text,
    phone            text,
    city             text,
    state            text,
    country          text,
    signup_date      date,
    customer_segment text
);

create unlogged table if not exists staging.stg_products (
    batch_id      bigint  not null,
    line_number   integer not null,
    record_source text    not null,
    product_hk    uuid not null,
    hashdiff      uuid not null,
    product_id    text    not null,
    product_name  text,
    category      text,
    brand         text,
    unit_price    numeric(12, 2),
    cost          numeric(12, 2)
);

create unlogged table if not exists staging.stg_transactions (
    batch_id          bigint  not null,
    line_number       integer not null,
    record_source     text    not null,
    order_hk          uuid not null,
    customer_hk       uuid not null, -- the ghost key when the customer is unknown
    product_hk        uuid not null, -- the ghost key when the product is unknown
    customer_order_hk uuid not null,
    order_product_hk  uuid not null,
    hashdiff          uuid not null,
    order_id          text    not null,
    customer_id       text,
    product_id        text,
    quantity          integer,
    unit_price        numeric(12, 2),
    discount          numeric(5, 4),
    total_amount      numeric(14, 2),
    transaction_ts    timestamptz,
    payment_method    text,
    order_status      text
);

-- Each batch empties the staging tables and the loader analyzes them as it fills them, so
-- autovacuum has nothing to do there: its passes would only take CPU from the load.
do $$
declare
    staging_table text;
begin
    foreach staging_table in array array['raw_customers', 'raw_products', 'raw_transactions',
                                         'stg_customers', 'stg_products', 'stg_transactions']
    loop
        execute format('alter table staging.%I set (autovacuum_enabled = false,'
                       ' toast.autovacuum_enabled = false)', staging_table);
    end loop;
end;
$$;
