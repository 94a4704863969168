"""Database writes of the streaming consumer: aggregates, failed events and offsets.

``write_batch`` adds one batch's aggregates to the running totals and moves the stored
offsets of its partitions forward in a single PostgreSQL transaction, so a batch counts
either completely or not at all. Before writing, it locks the offset rows and checks they
still hold the offsets the batch started from: a consumer that lost its partitions to
another one (and has not noticed yet) cannot add a batch twice.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import execute_values

from streaming.aggregate import BatchAggregates

log = logging.getLogger(__name__)

# (topic, partition)
PartitionKey = tuple[str, int]

# Deadlocks between consumers upserting the same product or minute rows are retried.
RETRYABLE_ERRORS = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)
MAX_ATTEMPTS = 5


class StaleOffsetsError(RuntimeError):
    """The stored offsets moved on: another consumer now owns one of the batch's partitions."""


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record that failed validation, bound for the failed_events table."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Where a batch starts in one partition and where the next one starts.

    ``start`` is the stored offset the batch was read from, None when the partition had no
    stored offset (it was read from the beginning).
    """

    start: int | None
    next_offset: int


# Cents are numeric, like the totals they add to: a large batch of large orders for one
# customer or minute can pass what bigint holds.
_TEMP_TABLES = """
create temp table if not exists batch_metrics (
    minute_start timestamptz, event_type text, event_count bigint, amount_cents numeric
) on commit delete rows;
create temp table if not exists batch_customers (
    customer_id text, page_views bigint, product_views bigint, searches bigint,
    add_to_carts bigint, remove_from_carts bigint, checkouts bigint, purchases bigint,
    cart_cents numeric, purchased_cents numeric, first_event_ts timestamptz,
    last_event_ts timestamptz, last_purchase_ts timestamptz
) on commit delete rows;
create temp table if not exists batch_products (
    product_id text, views bigint, add_to_carts bigint, remove_from_carts bigint,
    purchases bigint, units_purchased bigint, purchased_cents numeric, last_event_ts timestamptz
) on commit delete rows;
"""

# Rows are upserted in key order so that concurrent consumers lock shared rows (the current
# minute, popular products) in the same order and rarely deadlock. Cents × 0.01 is exact and
# has two decimals; dividing by 100 would store sixteen in the unbounded numeric columns.
_UPSERT_METRICS = """
insert into public.real_time_metrics as m (minute_start, event_type, event_count, amount)
select minute_start, event_type, event_count, amount_cents * 0.01
from batch_metrics
order by minute_start, event_type
on conflict (minute_start, event_type) do update set
    event_count = m.event_count + excluded.event_count,
    amount = m.amount + excluded.amount,
    updated_at = now()
"""

_UPSERT_CUSTOMERS = """
insert into public.customer_activity as c (
    customer_id, page_views, product_views, searches, add_to_carts, remove_from_carts,
    checkouts, purchases, total_events, cart_value, purchased_value, first_event_ts,
    last_event_ts, last_purchase_ts
)
select
    customer_id, page_views, product_views, searches, add_to_carts, remove_from_carts,
    checkouts, purchases,
    page_views + product_views + searches + add_to_carts + remove_from_carts + checkouts
        + purchases,
    cart_cents * 0.01, purchased_cents * 0.01, first_event_ts,
    last_event_ts, last_purchase_ts
from batch_customers
order by customer_id
on conflict (customer_id) do update set
    page_views = c.page_views + excluded.page_views,
    product_views = c.product_views + excluded.product_views,
    searches = c.searches + excluded.searches,
    add_to_carts = c.add_to_carts + excluded.add_to_carts,
    remove_from_carts = c.remove_from_carts + excluded.remove_from_carts,
    checkouts = c.checkouts + excluded.checkouts,
    purchases = c.purchases + excluded.purchases,
    total_events = c.total_events + excluded.total_events,
    -- A purchase in the batch emptied the cart: its value is what was added after it.
    cart_value = case
        when excluded.last_purchase_ts is not null then excluded.cart_value
        else c.cart_value + excluded.cart_value
    end,
    purchased_value = c.purchased_value + excluded.purchased_value,
    first_event_ts = least(c.first_event_ts, excluded.first_event_ts),
    last_event_ts = greatest(c.last_event_ts, excluded.last_event_ts),
    last_purchase_ts = greatest(c.last_purchase_ts, excluded.last_purchase_ts),
    updated_at = now()
"""

_UPSERT_PRODUCTS = """
insert into public.product_activity as p (
    product_id, views, add_to_carts, remove_from_carts, purchases, units_purchased,
    purchased_value, last_event_ts
)
select
    product_id, views, add_to_carts, remove_from_carts, purchases, units_purchased,
    purchased_cents * 0.01, last_event_ts
from batch_products
order by product_id
on conflict (product_id) do update set
    views = p.views + excluded.views,
    add_to_carts = p.add_to_carts + excluded.add_to_carts,
    remove_from_carts = p.remove_from_carts + excluded.remove_from_carts,
    purchases = p.purchases + excluded.purchases,
    units_purchased = p.units_purchased + excluded.units_purchased,
    purchased_value = p.purchased_value + excluded.purchased_value,
    last_event_ts = greatest(p.last_event_ts, excluded.last_event_ts),
    updated_at = now()
"""

# Re-reading a record after a crash must not add a second row for it.
_INSERT_FAILED = """
insert into public.failed_events (
    source_topic, source_partition, source_offset, record_key, payload, reason, consumer_group
)
values %s
on conflict (source_topic, source_partition, source_offset) do nothing
"""

# The stored rows are locked and checked first; a partition without one gets a plain insert,
# which fails (rather than overwrites) if a concurrent consumer inserted it first.
_WRITE_OFFSETS = """
with batch_offsets (consumer_group, topic, partition, next_offset) as (values %s),
moved as (
    update public.consumer_offsets as o
    set next_offset = b.next_offset, updated_at = now()
    from batch_offsets as b
    where (o.consumer_group, o.topic, o.partition) = (b.consumer_group, b.topic, b.partition)
    returning o.topic, o.partition
)
insert into public.consumer_offsets (consumer_group, topic, partition, next_offset)
select b.consumer_group, b.topic, b.partition, b.next_offset
from batch_offsets as b
where (b.topic, b.partition) not in (select topic, partition from moved)
"""


class Sink:
    """One PostgreSQL connection that writes consumer batches."""

    def __init__(self, conn: psycopg2.extensions.connection, consumer_group: str) -> None:
        self.conn = conn
        self.consumer_group = consumer_group
        self.conn.autocommit = False
        with self.conn.cursor() as cur:
            cur.execute(_TEMP_TABLES)
        self.conn.commit()

    def stored_offsets(self, partitions: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        """The stored next offset of each partition that has one."""
        with self.conn.cursor() as cur:
            stored = self._read_offsets(cur, sorted(set(partitions)), lock=False)
        self.conn.commit()
        return stored

    def write_batch(
        self,
        aggregates: BatchAggregates,
        failed: Sequence[FailedRecord],
        offsets: Mapping[PartitionKey, OffsetRange],
    ) -> None:
        """Add a batch and advance its partitions' offsets in one transaction.

        Raises ``StaleOffsetsError`` (having written nothing) when a stored offset is no
        longer the batch's start, that is when another consumer took the partition over.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                self._write_batch_once(aggregates, failed, offsets)
                return
            except psycopg2.errors.UniqueViolation as exc:
                # Another consumer stored a first offset for the same partition meanwhile.
                self._roll_back()
                raise StaleOffsetsError(f"a first offset was stored concurrently: {exc}") from exc
            except RETRYABLE_ERRORS as exc:
                self._roll_back()
                if attempt == MAX_ATTEMPTS:
                    raise
                log.warning("retrying batch after %s (attempt %d)", type(exc).__name__, attempt)
                time.sleep(0.05 * attempt)
            except BaseException:
                self._roll_back()
                raise

    def _roll_back(self) -> None:
        """Roll back the failed batch, unless the connection is gone (the database went
        away): the error that says so is then the one to raise, not the rollback's."""
        if not self.conn.closed:
            with contextlib.suppress(psycopg2.InterfaceError, psycopg2.OperationalError):
                self.conn.rollback()

    def _write_batch_once(
        self,
        aggregates: BatchAggregates,
        failed: Sequence[FailedRecord],
        offsets: Mapping[PartitionKey, OffsetRange],
    ) -> None:
        with self.conn.cursor() as cur:
            stored = self._read_offsets(cur, sorted(offsets), lock=True)
            stale = {
                key: (stored.get(key), span.start)
                for key, span in offsets.items()
                if stored.get(key) != span.start
            }
            if stale:
                self.conn.rollback()
                raise StaleOffsetsError(
                    "stored offsets moved on for "
                    + ", ".join(
                        f"{topic}[{partition}] (stored {now}, batch starts at {start})"
                        for (topic, partition), (now, start) in sorted(stale.items())
                    )
                )
            if aggregates.metrics:
                cur.copy_from(_metric_rows(aggregates), "batch_metrics")
                cur.execute(_UPSERT_METRICS)
            if aggregates.customers:
                cur.copy_from(_customer_rows(aggregates), "batch_customers")
                cur.execute(_UPSERT_CUSTOMERS)
            if aggregates.products:
                cur.copy_from(_product_rows(aggregates), "batch_products")
                cur.execute(_UPSERT_PRODUCTS)
            if failed:
                execute_values(
                    cur,
                    _INSERT_FAILED,
                    [
                        (
                            record.topic,
                            record.partition,
                            record.offset,
                            _text_key(record.key),
                            psycopg2.Binary(record.payload) if record.payload is not None else None,
                            record.reason,
                            self.consumer_group,
                        )
                        for record in failed
                    ],
                )
            execute_values(
                cur,
                _WRITE_OFFSETS,
                [
                    (self.consumer_group, topic, partition, span.next_offset)
                    for (topic, partition), span in sorted(offsets.items())
                ],
            )
        self.conn.commit()

    def _read_offsets(
        self, cur: psycopg2.extensions.cursor, partitions: Sequence[PartitionKey], lock: bool
    ) -> dict[PartitionKey, int]:
        if not partitions:
            return {}
        cur.execute(
            f"""
            select topic, partition, next_offset
            from public.consumer_offsets
            where consumer_group = %s and (topic, partition) in %s
            order by topic, partition
            {"for update" if lock else ""}
            """,
            (self.consumer_group, tuple(partitions)),
        )
        return {(topic, partition): offset for topic, partition, offset in cur.fetchall()}

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        self.conn.close()


def _copy_text(value: object) -> str:
    """One field in COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return (
                value.replace("\\", "\\\\")
                .replace("\t", "\\t")
                .replace("\n", "\\n")
                .replace("\r", "\\r")
            )
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _copy_buffer(rows: Iterable[tuple]) -> io.StringIO:
    buffer = io.StringIO()
    buffer.writelines("\t".join(map(_copy_text, row)) + "\n" for row in rows)
    buffer.seek(0)
    return buffer


def _metric_rows(aggregates: BatchAggregates) -> io.StringIO:
    return _copy_buffer(
        (minute, event_type, metric.event_count, metric.amount_cents)
        for (minute, event_type), metric in aggregates.metrics.items()
    )


def _customer_rows(aggregates: BatchAggregates) -> io.StringIO:
    return _copy_buffer(
        (
            customer_id,
            *totals.event_counts,
            totals.cart_cents,
            totals.purchased_cents,
            totals.first_event_ts,
            totals.last_event_ts,
            totals.last_purchase_ts,
        )
        for customer_id, totals in aggregates.customers.items()
    )


def _product_rows(aggregates: BatchAggregates) -> io.StringIO:
    return _copy_buffer(
        (
            product_id,
            totals.views,
            totals.add_to_carts,
            totals.remove_from_carts,
            totals.purchases,
            totals.units_purchased,
            totals.purchased_cents,
            totals.last_event_ts,
        )
        for product_id, totals in aggregates.products.items()
    )


def _text_key(key: bytes | None) -> str | None:
    """A record's key as text: bytes that are not UTF-8, and NUL, which PostgreSQL text
    cannot hold, become U+FFFD (the payload is kept as bytes, and the dead-letter copy keeps
    the key as sent)."""
    if key is None:
        return None
    return key.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
