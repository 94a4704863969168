"""Clickstream consumer: validates events, aggregates them and writes the totals to PostgreSQL.

Run it as ``c360 stream consume`` or ``python streaming/consumer.py``; start several to share
the topic's partitions. The consumer owns all I/O; validation (``streaming.events``) and
aggregation (``streaming.aggregate``) are pure functions over a batch.

Exactly-once effect: Kafka's auto-commit is off. Each batch's aggregates and the next offset
of each of its partitions are written in one PostgreSQL transaction (``streaming.sink``), and
a consumer assigned a partition seeks to the offset stored there. A crash before the commit
leaves neither; after it, both. Invalid records go to the dead-letter topic, acknowledged by
the broker before the transaction that covers them commits, and to ``failed_events``. Should
the broker not acknowledge one, the batch is not committed and the consumer exits 1: a
restarted one reads the batch again.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg2
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError

from customer360.db import DatabaseUnavailableError, connect
from customer360.errors import UserFacingError, first_line
from customer360.settings import Settings, get_settings
from streaming.aggregate import aggregate
from streaming.events import (
    MAX_EVENT_BYTES,
    ClickEvent,
    InvalidEvent,
    format_timestamp,
    parse_event,
)
from streaming.producer import (
    BOOTSTRAP_TIMEOUT_MS,
    DLQ_PARTITIONS,
    TOPIC_PARTITIONS,
    Deliveries,
    bootstrap_servers,
    broker_unavailable,
    configure_logging,
    create_producer,
    ensure_topic,
    quiet_bootstrap,
)
from streaming.sink import FailedRecord, OffsetRange, PartitionKey, Sink, StaleOffsetsError

log = logging.getLogger("streaming.consumer")

# Large fetches: per-request overhead, not bandwidth, limits a Python client. A short wait
# keeps latency low when the stream is slow.
FETCH_TUNING = {
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_min_bytes": 64 * 1024,
    "fetch_max_wait_ms": 100,
    "receive_buffer_bytes": 4 * 1024 * 1024,
}

# Clocks disagree a little; an event stamped later than this after its record was produced
# goes to the dead-letter topic.
MAX_CLOCK_SKEW_MS = 5 * 60_000

# How the consumer's database session shows in pg_stat_activity.
CONSUMER_APPLICATION_NAME = "c360-stream-consumer"

# A dead-letter copy keeps at most this much of the record's key and of its value, so that it
# fits the topic's record limit (1 MB by default) however large the record was: a copy the
# broker refuses would stop the consumer at that record for good. failed_events keeps it whole.
DEAD_LETTER_MAX_PART_BYTES = MAX_EVENT_BYTES


class DeadLetterError(UserFacingError):
    """The broker did not acknowledge a batch's dead-letter copies; the batch must not commit."""


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer batches; the defaults favour throughput with sub-second latency."""

    topic: str
    dlq_topic: str
    group: str
    # A batch is written when it holds this many records or is this old, whichever is first.
    max_batch_records: int = 50_000
    max_batch_seconds: float = 0.5
    poll_timeout_ms: int = 200
    max_poll_records: int = 20_000
    # Stop after this long without records (None: run until SIGTERM), for tests and benchmarks.
    idle_exit_seconds: float | None = None
    log_interval_seconds: float = 10.0


@dataclass
class ConsumerStats:
    records: int = 0
    valid: int = 0
    failed: int = 0
    batches: int = 0
    stale_batches: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class PendingBatch:
    """Records read since the last write, already validated."""

    events: list[ClickEvent] = field(default_factory=list)
    failed: list[FailedRecord] = field(default_factory=list)
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)
    records: int = 0
    opened_at: float = 0.0

    def add(self, partition: PartitionKey, records: list) -> None:
        if not self.records:
            self.opened_at = time.monotonic()
        topic, number = partition
        events = self.events
        for record in records:
            parsed = parse_event(record.value)
            if isinstance(parsed, ClickEvent) and _from_the_future(parsed, record.timestamp):
                parsed = InvalidEvent(
                    f"bad timestamp: event_ts {format_timestamp(parsed.event_ts)} is more than"
                    f" {MAX_CLOCK_SKEW_MS // 60_000} minutes after its record was produced"
                    f" ({format_timestamp(_record_time(record.timestamp))})"
                )
            if isinstance(parsed, InvalidEvent):
                self.failed.append(
                    FailedRecord(
                        topic, number, record.offset, record.key, record.value, parsed.reason
                    )
                )
            else:
                events.append(parsed)
        self.records += len(records)
        self.next_offsets[partition] = records[-1].offset + 1


def _from_the_future(event: ClickEvent, record_timestamp_ms: int | None) -> bool:
    """Whether the event is stamped well after its record was produced (CreateTime, or the
    broker's LogAppendTime): its clock is wrong, and counted, the event would sit in every
    "recent" window until its time came."""
    if record_timestamp_ms is None or record_timestamp_ms < 0:
        return False
    return event.event_ts.timestamp() * 1000 > record_timestamp_ms + MAX_CLOCK_SKEW_MS


def _record_time(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


class ClickstreamConsumer:
    """One member of the consumer group, from poll to PostgreSQL."""

    def __init__(self, options: ConsumerOptions, settings: Settings | None = None) -> None:
        self.options = options
        self.settings = settings or get_settings()
        self.stats = ConsumerStats()
        self.stop_requested = threading.Event()
        self.pending = PendingBatch()
        # Where each owned partition's next batch starts: the stored offset, or the end of the
        # batch being written (None: no offset stored yet).
        self.stored: dict[PartitionKey, int | None] = {}
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickstream-writer")
        self.in_flight: Future[PendingBatch] | None = None
        self.sink = Sink(
            connect(self.settings, application_name=CONSUMER_APPLICATION_NAME), options.group
        )
        self.dlq_producer = create_producer(self.settings, client_id="c360-clickstream-dlq")
        self.consumer = self._create_consumer()

    def _create_consumer(self) -> KafkaConsumer:
        options = self.options
        try:
            with quiet_bootstrap():
                consumer = KafkaConsumer(
                    bootstrap_servers=bootstrap_servers(self.settings),
                    group_id=options.group,
                    client_id=f"c360-clickstream-consumer-{options.group}",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_records=options.max_poll_records,
                    # A member that dies without leaving (kill -9, lost host) holds its partitions
                    # until this runs out; 10 s rather than the client's 45 s keeps failover short.
                    session_timeout_ms=10_000,
                    heartbeat_interval_ms=2_000,
                    bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                    **FETCH_TUNING,
                )
        except KafkaTimeoutError as exc:
            raise broker_unavailable(self.settings) from exc
        consumer.subscribe([options.topic], listener=_RebalanceListener(self))
        # Fresh metadata after subscribing, before the first join: a group leader that assigns
        # from a snapshot taken before it knew the topic's partitions rebalances again as soon
        # as they arrive, and kafka-python 3.0 can drop that second join's result when a poll
        # times out in the middle of it, leaving this member without partitions or heartbeats.
        consumer.topics()
        return consumer

    def run(self) -> ConsumerStats:
        """Consume until SIGTERM/SIGINT (or ``idle_exit_seconds`` without records)."""
        options = self.options
        last_record_at = time.monotonic()
        last_log_at = time.monotonic()
        logged_records = 0
        log.info("consuming %s as group %s", options.topic, options.group)
        try:
            while not self.stop_requested.is_set():
                polled = self.consumer.poll(timeout_ms=options.poll_timeout_ms)
                now = time.monotonic()
                if polled:
                    last_record_at = now
                    for partition, records in polled.items():
                        self.pending.add((partition.topic, partition.partition), records)
                if self.pending.records and (
                    self.pending.records >= options.max_batch_records
                    or now - self.pending.opened_at >= options.max_batch_seconds
                ):
                    self.flush(wait=False)
                elif self.in_flight is not None and self.in_flight.done():
                    # Count a written batch (or raise its error) now, not when the next one
                    # is ready: a stream that goes quiet would otherwise hide both.
                    self._finish_write()
                if now - last_log_at >= options.log_interval_seconds:
                    rate = (self.stats.records - logged_records) / (now - last_log_at)
                    log.info(
                        "throughput %.0f records/s, total %d (%d failed), lag %s",
                        rate,
                        self.stats.records,
                        self.stats.failed,
                        self.lag(),
                    )
                    last_log_at, logged_records = now, self.stats.records
                if (
                    options.idle_exit_seconds is not None
                    and not self.pending.records
                    and now - last_record_at >= options.idle_exit_seconds
                ):
                    log.info("no records for %.0f s; stopping", options.idle_exit_seconds)
                    break
            self.flush()
        finally:
            self.close()
        return self.stats

    def flush(self, wait: bool = True) -> None:
        """Hand the pending batch to the writer; with ``wait``, return once it is committed.

        One batch is written while the next is read: the writer thread takes the batch
        (aggregation, DLQ, one PostgreSQL transaction) and the loop goes back to polling.
        Batches are written one at a time, in order, each starting where the previous ended.
        """
        batch = self.pending
        if batch.records:
            self._finish_write()
            if self.pending is batch:
                self.pending = PendingBatch()
                offsets = {
                    partition: OffsetRange(start=self.stored.get(partition), next_offset=end)
                    for partition, end in batch.next_offsets.items()
                }
                # The next batch starts where this one ends, if this one commits.
                for partition, span in offsets.items():
                    self.stored[partition] = span.next_offset
                self.in_flight = self.writer.submit(self._write, batch, offsets)
        if wait:
            self._finish_write()

    def _write(self, batch: PendingBatch, offsets: dict[PartitionKey, OffsetRange]) -> PendingBatch:
        """The writer thread's job: DLQ records first, then aggregates and offsets together."""
        if batch.failed:
            self._send_to_dlq(batch.failed)
        self.sink.write_batch(aggregate(batch.events), batch.failed, offsets)
        return batch

    def _finish_write(self) -> None:
        """Wait for the batch being written; after a refused one, start over from the store."""
        future, self.in_flight = self.in_flight, None
        if future is None:
            return
        try:
            batch = future.result()
        except StaleOffsetsError as exc:
            # Another member took over a partition while this one was not looking: what was
            # read from there, including the batch being built on top, is that member's to count.
            self.stats.stale_batches += 1
            log.warning("discarding batches of %d records: %s", self.pending.records, exc)
            self.pending = PendingBatch()
            self._seek_to_stored(list(self.stored))
            return
        except BaseException:
            # What was read after a batch that did not commit must not commit either (its
            # offsets would skip that batch), not even from the rebalance hook of close().
            self.pending = PendingBatch()
            raise
        self.stats.records += batch.records
        self.stats.valid += len(batch.events)
        self.stats.failed += len(batch.failed)
        self.stats.batches += 1

    def _send_to_dlq(self, failed: list[FailedRecord]) -> None:
        """Copy the records to the dead-letter topic; raise unless the broker took every copy.

        Acknowledged before the offsets that cover these records commit: a crash between the
        two re-sends them (at-least-once on the DLQ topic) but never loses one.
        """
        topic = self.options.dlq_topic
        deliveries = Deliveries()
        try:
            for record in failed:
                key, value, headers = dead_letter_copy(record)
                deliveries.track(
                    self.dlq_producer.send(topic, key=key, value=value, headers=headers)
                )
        except KafkaError as exc:
            raise DeadLetterError(
                f"the dead-letter producer for {topic} refused a record ({exc}); the batch was"
                " not committed, and a restarted consumer resumes from the stored offsets"
            ) from exc
        deliveries.wait(self.dlq_producer)
        if deliveries.failed:
            raise DeadLetterError(
                f"the broker did not acknowledge every dead-letter record for {topic}:"
                f" {deliveries.describe_failure()}; the batch was not committed, and a"
                " restarted consumer resumes from the stored offsets"
            ) from deliveries.first_error

    def _seek_to_stored(self, partitions: list[PartitionKey]) -> None:
        """Position each partition at its stored offset (the beginning when none is stored)."""
        stored = self.sink.stored_offsets(partitions)
        assigned = self.consumer.assignment()
        for partition in partitions:
            offset = stored.get(partition)
            topic_partition = TopicPartition(*partition)
            if topic_partition not in assigned:
                self.stored.pop(partition, None)
                continue
            self.stored[partition] = offset
            if offset is None:
                self.consumer.seek_to_beginning(topic_partition)
            else:
                self.consumer.seek(topic_partition, offset)

    def on_assigned(self, partitions: list[PartitionKey]) -> None:
        """Rebalance hook: start each new partition where its stored offset says."""
        log.info("assigned %s", _describe(partitions))
        self._finish_write()
        self._seek_to_stored(partitions)

    def on_revoked(self, partitions: list[PartitionKey]) -> None:
        """Rebalance hook: write what was read before the partitions move to another member."""
        log.info("revoked %s", _describe(partitions))
        self.flush()
        for partition in partitions:
            self.stored.pop(partition, None)

    def on_lost(self, partitions: list[PartitionKey]) -> None:
        """Rebalance hook: the group moved on without us; what we read is not ours to write."""
        log.warning(
            "lost %s; discarding %d pending records", _describe(partitions), self.pending.records
        )
        # A batch already handed to the writer commits only if its offsets are still current.
        self._finish_write()
        self.pending = PendingBatch()
        for partition in partitions:
            self.stored.pop(partition, None)

    def lag(self) -> int | None:
        """Records on the broker not yet written, summed over owned partitions (None if unknown)."""
        total = 0
        for partition, stored in self.stored.items():
            highwater = self.consumer.highwater(TopicPartition(*partition))
            if highwater is None:
                return None
            total += highwater - (stored or 0)
        return total

    def request_stop(self, *_: object) -> None:
        """Ask the loop to finish its batch and leave the group (a signal handler)."""
        self.stop_requested.set()

    def close(self) -> None:
        """Leave the group (writing what is pending) and close every connection."""
        try:
            self.consumer.close()
        except KafkaError as exc:
            log.warning("closing the consumer: %s", exc)
        self._finish_write()
        self.writer.shutdown()
        self.dlq_producer.close()
        self.sink.close()
        elapsed = time.monotonic() - self.stats.started
        log.info(
            "stopped after %d records (%d failed) in %d batches, %.1f s",
            self.stats.records,
            self.stats.failed,
            self.stats.batches,
            elapsed,
        )


class _RebalanceListener(ConsumerRebalanceListener):
    """Hooks run during poll() while the loop waits, so they may touch the batch state."""

    def __init__(self, owner: ClickstreamConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.owner.on_revoked(_keys(revoked))

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner.on_assigned(_keys(assigned))

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.owner.on_lost(_keys(lost))


def dead_letter_copy(
    record: FailedRecord,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers of a record's dead-letter copy.

    Headers say why the record failed and where it came from. A key or value longer than
    ``DEAD_LETTER_MAX_PART_BYTES`` is cut to that length, and a header gives its full length.
    """
    headers = [
        ("reason", record.reason.encode()),
        ("source_topic", record.topic.encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]
    key, value = record.key, record.payload
    if key is not None and len(key) > DEAD_LETTER_MAX_PART_BYTES:
        headers.append(("original_key_bytes", str(len(key)).encode()))
        key = key[:DEAD_LETTER_MAX_PART_BYTES]
    if value is not None and len(value) > DEAD_LETTER_MAX_PART_BYTES:
        headers.append(("original_value_bytes", str(len(value)).encode()))
        value = value[:DEAD_LETTER_MAX_PART_BYTES]
    return key, value, headers


def _keys(partitions: set[TopicPartition]) -> list[PartitionKey]:
    return sorted((partition.topic, partition.partition) for partition in partitions)


def _describe(partitions: list[PartitionKey]) -> str:
    if not partitions:
        return "no partitions"
    return ", ".join(f"{topic}[{number}]" for topic, number in partitions)


def options_from_args(args: argparse.Namespace, settings: Settings) -> ConsumerOptions:
    """Consumer options from parsed command-line arguments, defaulting to the settings."""
    defaults = ConsumerOptions(topic="", dlq_topic="", group="")
    return ConsumerOptions(
        topic=args.topic or settings.kafka_topic,
        dlq_topic=args.dlq_topic or settings.kafka_dlq_topic,
        group=args.group or settings.kafka_consumer_group,
        max_batch_records=args.batch_records or defaults.max_batch_records,
        max_batch_seconds=(
            args.batch_seconds if args.batch_seconds is not None else defaults.max_batch_seconds
        ),
        idle_exit_seconds=args.exit_when_idle,
        log_interval_seconds=args.log_interval or defaults.log_interval_seconds,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The consumer's options, shared by the CLI and ``python streaming/consumer.py``."""
    parser.add_argument("--topic", default=None, help="topic (default C360_KAFKA_TOPIC)")
    parser.add_argument("--dlq-topic", default=None, help="dead-letter topic")
    parser.add_argument("--group", default=None, help="consumer group")
    parser.add_argument(
        "--batch-records",
        type=int,
        default=None,
        help="write a batch at this many records (default 50000)",
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help="write a batch at this age in seconds (default 0.5)",
    )
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds without records",
    )
    parser.add_argument(
        "--log-interval",
        type=float,
        default=None,
        help="seconds between throughput and lag lines (default 10)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run a consumer with parsed command-line options until SIGTERM, SIGINT or idle."""
    configure_logging()
    settings = get_settings()
    options = options_from_args(args, settings)
    prepare_topics(options, settings)
    consumer = ClickstreamConsumer(options, settings)
    signal.signal(signal.SIGTERM, consumer.request_stop)
    signal.signal(signal.SIGINT, consumer.request_stop)
    try:
        stats = consumer.run()
    except (KafkaError, psycopg2.OperationalError) as exc:
        # poll() re-raises what a rebalance hook raised (hooks write the batch read so far)
        # as the cause of a KafkaError.
        cause = exc.__cause__ if isinstance(exc, KafkaError) else exc
        if isinstance(cause, UserFacingError):
            raise UserFacingError(str(cause)) from exc
        if not isinstance(cause, psycopg2.OperationalError):
            raise
        reason = first_line(cause, "connection lost")
        raise UserFacingError(
            f"lost the connection to PostgreSQL ({reason}); the current batch was not"
            " committed, and a restarted consumer resumes from the stored offsets"
        ) from exc
    print(f"consumed {stats.records} records ({stats.failed} to the dead-letter topic)")
    return 0


def prepare_topics(options: ConsumerOptions, settings: Settings) -> None:
    """Create the source and dead-letter topics when absent, so a consumer can start first."""
    ensure_topic(options.topic, TOPIC_PARTITIONS, settings)
    ensure_topic(options.dlq_topic, DLQ_PARTITIONS, settings)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python streaming/consumer.py``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run_from_args(args)
    except (UserFacingError, DatabaseUnavailableError) as exc:
        print(f"consumer: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
