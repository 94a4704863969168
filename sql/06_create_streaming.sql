-- Real-time clickstream tables, written by the streaming consumer (streaming/sink.py) and read
-- by the API. Each consumer batch adds its aggregates and the partitions' next offsets in one
-- transaction, so the totals count every Kafka record exactly once. Safe to apply again.
--
-- Money that is summed over time is plain numeric (two decimals, as the consumer writes it):
-- one valid event may carry 10,000 × 1,000,000.00, so any bounded type overflows after a few
-- of them, and a batch that cannot be written stops its partitions for good. Counts are bigint.

-- Events per minute of event time and per event type; amount is quantity × unit price of the
-- events that carry one (add_to_cart, remove_from_cart, purchase).
create table if not exists public.real_time_metrics (
    minute_start timestamptz   not null,
    event_type   text          not null,
    event_count  bigint        not null,
    amount       numeric       not null default 0,
    updated_at   timestamptz   not null default now(),
    primary key (minute_start, event_type)
);
create index if not exists real_time_metrics_updated_idx on public.real_time_metrics (updated_at);

-- Running activity of each customer seen on the stream. cart_value follows the cart:
-- add_to_cart adds quantity × unit price, remove_from_cart subtracts it, purchase empties it.
create table if not exists public.customer_activity (
    customer_id       text           primary key,
    page_views        bigint         not null default 0,
    product_views     bigint         not null default 0,
    searches          bigint         not null default 0,
    add_to_carts      bigint         not null default 0,
    remove_from_carts bigint         not null default 0,
    checkouts         bigint         not null default 0,
    purchases         bigint         not null default 0,
    total_events      bigint         not null default 0,
    cart_value        numeric        not null default 0,
    purchased_value   numeric        not null default 0,
    first_event_ts    timestamptz,
    last_event_ts     timestamptz,
    last_purchase_ts  timestamptz,
    updated_at        timestamptz    not null default now()
);

-- Running activity of each product seen on the stream.
create table if not exists public.product_activity (
    product_id        text           primary key,
    views             bigint         not null default 0,
    add_to_carts      bigint         not null default 0,
    remove_from_carts bigint         not null default 0,
    purchases         bigint         not null default 0,
    units_purchased   bigint         not null default 0,
    purchased_value   numeric        not null default 0,
    last_event_ts     timestamptz,
    updated_at        timestamptz    not null default now()
);

-- Tables made by earlier versions of this file had numeric(16, 2) and numeric(14, 2) here.
-- Dropping the bound keeps every value and rewrites nothing; on numeric columns it is a no-op.
alter table public.real_time_metrics alter column amount type numeric;
alter table public.customer_activity
    alter column cart_value type numeric,
    alter column purchased_value type numeric;
alter table public.product_activity alter column purchased_value type numeric;

-- Records the consumer could not use, with the reason; the same records go to the
-- dead-letter topic. One row per source record, however often it is re-read.
create table if not exists public.failed_events (
    failed_event_id  bigserial   primary key,
    source_topic     text        not null,
    source_partition integer     not null,
    source_offset    bigint      not null,
    record_key       text,
    payload          bytea,
    reason           text        not null,
    consumer_group   text        not null,
    failed_at        timestamptz not null default now(),
    unique (source_topic, source_partition, source_offset)
);
create index if not exists failed_events_failed_at_idx on public.failed_events (failed_at);

-- The next offset to read for each partition, written in the same transaction as the
-- aggregates it covers; the consumer seeks here when it is assigned a partition.
create table if not exists public.consumer_offsets (
    consumer_group text        not null,
    topic          text        not null,
    partition      integer     not null,
    next_offset    bigint      not null,
    updated_at     timestamptz not null default now(),
    primary key (consumer_group, topic, partition)
);
