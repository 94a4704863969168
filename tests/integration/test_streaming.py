"""The clickstream pipeline against a real Kafka broker and the real PostgreSQL warehouse.

Every expected figure is computed here, from the events the test itself sent, by a separate
fold over them; the consumer runs as real processes (`c360 stream consume`) that the tests
stop with SIGTERM or kill with SIGKILL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource
from kafka_fixtures import kafka_bootstrap  # noqa: F401  (the session's broker)

from customer360 import realtime
from customer360.errors import UserFacingError
from customer360.migrate import SQL_DIR
from customer360.settings import Settings
from streaming.aggregate import aggregate
from streaming.consumer import CONSUMER_APPLICATION_NAME
from streaming.events import (
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    ClickEvent,
    format_timestamp,
    parse_event,
)
from streaming.producer import (
    Catalog,
    SessionSimulator,
    create_producer,
    encode_event,
    ensure_topic,
    send_events,
)
from streaming.sink import OffsetRange, Sink, StaleOffsetsError
from tests.database_state import query

pytestmark = pytest.mark.kafka

PRICED = {"add_to_cart", "remove_from_cart", "purchase"}
COUNT_COLUMNS = {
    "page_view": "page_views",
    "product_view": "product_views",
    "search": "searches",
    "add_to_cart": "add_to_carts",
    "remove_from_cart": "remove_from_carts",
    "checkout": "checkouts",
    "purchase": "purchases",
}
STREAMING_TABLES = (
    "public.real_time_metrics, public.customer_activity, public.product_activity,"
    " public.failed_events, public.consumer_offsets"
)
WAIT_SECONDS = 120


@dataclass
class Stream:
    """One test's own topics and consumer group, and where its consumers write their logs."""

    settings: Settings
    topic: str
    dlq_topic: str
    group: str
    log_dir: Path
    consumers: list[ConsumerProcess] = field(default_factory=list)

    def consumer(self, *extra: str) -> ConsumerProcess:
        process = ConsumerProcess(self, len(self.consumers), list(extra))
        self.consumers.append(process)
        return process


class ConsumerProcess:
    """A `c360 stream consume` process of the test's group."""

    def __init__(self, stream: Stream, number: int, extra: list[str]) -> None:
        self.log_path = stream.log_dir / f"consumer-{number}.log"
        command = [
            sys.executable,
            "-m",
            "customer360.cli",
            "stream",
            "consume",
            "--topic",
            stream.topic,
            "--dlq-topic",
            stream.dlq_topic,
            "--group",
            stream.group,
            "--log-interval",
            "2",
            *extra,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def story(self) -> str:
        """What the process logged apart from its periodic throughput lines, then its last lines."""
        lines = self.output().splitlines()
        events = [line for line in lines if " throughput " not in line]
        return "\n".join([f"== {self.log_path.name}", *events[-60:], "-- last lines:", *lines[-5:]])

    def consumed(self) -> int:
        """The record count the process reported when it stopped."""
        for line in reversed(self.output().splitlines()):
            if line.startswith("consumed "):
                return int(line.split()[1])
        raise AssertionError(f"no summary line in {self.log_path}:\n{self.output()[-2000:]}")


@pytest.fixture(scope="module")
def catalog(loaded_warehouse: Settings) -> Catalog:
    """Customers and current prices of products of the loaded warehouse, by separate SQL."""
    conn = psycopg2.connect(loaded_warehouse.dsn)
    with conn.cursor() as cur:
        cur.execute("select customer_id from raw_vault.hub_customer where customer_id <> '-1'")
        customers = sorted(row[0] for row in cur.fetchall())
        cur.execute(
            """
            select h.product_id,
                   (select s.unit_price from raw_vault.sat_product_details s
                    where s.product_hk = h.product_hk order by s.load_dts desc limit 1)
            from raw_vault.hub_product h
            where h.product_id <> '-1'
            """
        )
        prices = {product_id: float(price) for product_id, price in cur.fetchall() if price}
    conn.close()
    assert customers and prices
    return Catalog(customers, prices)


@pytest.fixture
def stream(
    kafka_bootstrap: str,  # noqa: F811
    loaded_warehouse: Settings,
    tmp_path: Path,
) -> Iterator[Stream]:
    """Fresh topics and group for one test, and empty streaming tables before and after."""
    suffix = uuid.uuid4().hex[:8]
    settings = loaded_warehouse.model_copy(update={"kafka_bootstrap_servers": kafka_bootstrap})
    stream = Stream(
        settings=settings,
        topic=f"clicks_{suffix}",
        dlq_topic=f"clicks_{suffix}_dlq",
        group=f"group_{suffix}",
        log_dir=tmp_path,
    )
    _truncate(settings)
    ensure_topic(stream.topic, 6, settings)
    yield stream
    for consumer in stream.consumers:
        if consumer.process.poll() is None:
            consumer.kill()
    _truncate(settings)


def _truncate(settings: Settings) -> None:
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(f"truncate {STREAMING_TABLES}")
    conn.close()


def create_topic(settings: Settings, topic: str, partitions: int, configs: dict) -> None:
    """A topic with its own configuration (the jobs create theirs with the broker's defaults)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}},
            wait_for_metadata=True,
        )
    finally:
        admin.close()


def dead_letters(stream: Stream) -> list[tuple[tuple[int, int], bytes, dict[str, str]]]:
    """Every record of the dead-letter topic: source (partition, offset), value and headers."""
    dlq = KafkaConsumer(
        stream.dlq_topic,
        bootstrap_servers=stream.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    records = []
    for record in dlq:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["source_topic"] == stream.topic
        source = (int(headers["source_partition"]), int(headers["source_offset"]))
        records.append((source, record.value, headers))
    dlq.close()
    return records


def failed_payloads(stream: Stream) -> dict[tuple[int, int], bytes]:
    """The payload of each row of failed_events, by source (partition, offset)."""
    rows = query(
        stream.settings,
        "select source_partition, source_offset, payload from public.failed_events"
        " where source_topic = %s",
        (stream.topic,),
    )
    return {(partition, offset): bytes(payload) for partition, offset, payload in rows}


def committed(stream: Stream) -> int:
    """Records the group has written to PostgreSQL (partitions start at offset 0)."""
    rows = query(
        stream.settings,
        "select coalesce(sum(next_offset), 0) from public.consumer_offsets"
        " where consumer_group = %s and topic = %s",
        (stream.group, stream.topic),
    )
    return int(rows[0][0])


def wait_until(
    condition: Callable[[], bool], what: str, stream: Stream, sender: BackgroundSender | None = None
) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if sender is not None:
            sender.check()
        if time.monotonic() > deadline:
            logs = "\n".join(c.story() for c in stream.consumers)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)


def stamped_sessions(catalog: Catalog, count: int, seed: int, start: datetime) -> list[dict]:
    """``count`` simulated events with event times 0.25 s apart from ``start``."""
    simulator = SessionSimulator(catalog, random.Random(seed))
    events = []
    for number, event in zip(range(count), simulator.events(), strict=False):
        event["event_ts"] = (start + timedelta(milliseconds=250 * number)).isoformat()
        events.append(event)
    return events


def send(stream: Stream, events: list[dict], rate: float | None = None) -> list:
    """Send the events keyed by customer; returns their record metadata in send order."""
    # A broker busy with other tests can be slow to answer a new client: making the producer
    # sends nothing, so it may be tried again.
    for attempt in range(3):
        try:
            producer = create_producer(stream.settings)
            break
        except UserFacingError:
            if attempt == 2:
                raise
    futures = []
    send_events(producer, stream.topic, events, rate=rate, on_sent=lambda _, f: futures.append(f))
    producer.close()
    return [future.get(timeout=30) for future in futures]


class BackgroundSender(threading.Thread):
    """Sends the events from a thread; a failure is kept and raised by ``check``."""

    def __init__(self, stream: Stream, events: list[dict], rate: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.events, self.rate = stream, events, rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            send(self.stream, self.events, self.rate)
        except BaseException as exc:  # surfaced to the test by check()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"sending the events failed: {self.error!r}") from self.error


def send_in_background(stream: Stream, events: list[dict], rate: float) -> BackgroundSender:
    sender = BackgroundSender(stream, events, rate)
    sender.start()
    return sender


# --- The expected totals, folded here independently of streaming.aggregate ---------------


def cart_event(
    kind: str, customer_id: str, product_id: str, price, at: datetime, quantity: int = 1
) -> dict:
    """One cart or purchase event of the contract, built field by field."""
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": kind,
        "customer_id": customer_id,
        "product_id": product_id,
        "session_id": str(uuid.uuid4()),
        "event_ts": at.isoformat(),
        "quantity": quantity,
        "price": price,
    }


def _ts(event: dict) -> datetime:
    return datetime.fromisoformat(event["event_ts"].replace("Z", "+00:00")).astimezone(UTC)


def _amount(event: dict) -> Decimal:
    if event["event_type"] not in PRICED:
        return Decimal(0)
    return Decimal(str(event["price"])) * event["quantity"]


def expected_metrics(events: list[dict]) -> dict:
    totals: dict = defaultdict(lambda: [0, Decimal(0)])
    for event in events:
        key = (_ts(event).replace(second=0, microsecond=0), event["event_type"])
        totals[key][0] += 1
        totals[key][1] += _amount(event)
    return {key: (count, amount) for key, (count, amount) in totals.items()}


def expected_customers(events: list[dict]) -> dict:
    """Per customer, in send order (one customer's events share a partition, so order holds)."""
    customers: dict = {}
    for event in events:
        row = customers.setdefault(
            event["customer_id"],
            {
                **{column: 0 for column in COUNT_COLUMNS.values()},
                "total_events": 0,
                "cart_value": Decimal(0),
                "purchased_value": Decimal(0),
                "first_event_ts": None,
                "last_event_ts": None,
                "last_purchase_ts": None,
            },
        )
        ts = _ts(event)
        row[COUNT_COLUMNS[event["event_type"]]] += 1
        row["total_events"] += 1
        row["first_event_ts"] = min(filter(None, (row["first_event_ts"], ts)))
        row["last_event_ts"] = max(filter(None, (row["last_event_ts"], ts)))
        if event["event_type"] == "add_to_cart":
            row["cart_value"] += _amount(event)
        elif event["event_type"] == "remove_from_cart":
            row["cart_value"] -= _amount(event)
        elif event["event_type"] == "purchase":
            row["cart_value"] = Decimal(0)
            row["purchased_value"] += _amount(event)
            row["last_purchase_ts"] = max(filter(None, (row["last_purchase_ts"], ts)))
    return customers


def expected_products(events: list[dict]) -> dict:
    products: dict = {}
    for event in events:
        if event.get("product_id") is None:
            continue
        row = products.setdefault(
            event["product_id"],
            {
                "views": 0,
                "add_to_carts": 0,
                "remove_from_carts": 0,
                "purchases": 0,
                "units_purchased": 0,
                "purchased_value": Decimal(0),
                "last_event_ts": None,
            },
        )
        kind = event["event_type"]
        if kind == "product_view":
            row["views"] += 1
        elif kind == "add_to_cart":
            row["add_to_carts"] += 1
        elif kind == "remove_from_cart":
            row["remove_from_carts"] += 1
        elif kind == "purchase":
            row["purchases"] += 1
            row["units_purchased"] += event["quantity"]
            row["purchased_value"] += _amount(event)
        row["last_event_ts"] = max(filter(None, (row["last_event_ts"], _ts(event))))
    return products


def assert_exact_totals(stream: Stream, events: list[dict]) -> None:
    """Every row of the three aggregate tables equals the fold of the events sent."""
    settings = stream.settings
    metrics = {
        (minute, kind): (count, amount)
        for minute, kind, count, amount in query(
            settings,
            "select minute_start, event_type, event_count, amount from public.real_time_metrics",
        )
    }
    assert metrics == expected_metrics(events)

    columns = [
        *COUNT_COLUMNS.values(),
        "total_events",
        "cart_value",
        "purchased_value",
        "first_event_ts",
        "last_event_ts",
        "last_purchase_ts",
    ]
    customers = {
        row[0]: dict(zip(columns, row[1:], strict=True))
        for row in query(
            settings, f"select customer_id, {', '.join(columns)} from public.customer_activity"
        )
    }
    expected = expected_customers(events)
    assert customers.keys() == expected.keys()
    for customer_id, row in expected.items():
        assert customers[customer_id] == row, customer_id

    product_columns = [
        "views",
        "add_to_carts",
        "remove_from_carts",
        "purchases",
        "units_purchased",
        "purchased_value",
        "last_event_ts",
    ]
    products = {
        row[0]: dict(zip(product_columns, row[1:], strict=True))
        for row in query(
            settings,
            f"select product_id, {', '.join(product_columns)} from public.product_activity",
        )
    }
    assert products == expected_products(events)


# --- Tests ----------------------------------------------------------------------------------


def test_every_aggregate_is_exact(stream: Stream, catalog: Catalog) -> None:
    start = datetime(2026, 3, 1, 9, 58, 30, tzinfo=UTC)
    events = stamped_sessions(catalog, 4000, seed=7, start=start)
    # A purchase followed by new cart additions in the same customer's stream.
    customer, (product, price) = catalog.customer_ids[0], next(iter(catalog.product_prices.items()))
    base = start + timedelta(minutes=30)
    for offset, (kind, quantity) in enumerate(
        [("add_to_cart", 2), ("purchase", 2), ("add_to_cart", 3), ("remove_from_cart", 1)]
    ):
        at = base + timedelta(seconds=offset)
        events.append(cart_event(kind, customer, product, price, at, quantity))
    metadata = send(stream, events)

    consumer = stream.consumer()
    wait_until(lambda: committed(stream) == len(events), "every record written", stream)
    # The progress line counts the last batch while the stream is quiet, before any stop.
    wait_until(
        lambda: f"total {len(events)} (0 failed), lag 0" in consumer.output(),
        "a progress line with every record",
        stream,
    )
    assert consumer.stop() == 0
    assert consumer.consumed() == len(events)

    assert_exact_totals(stream, events)
    # The stored offsets are the partitions' ends, as the broker acknowledged them.
    ends: dict = defaultdict(int)
    for record in metadata:
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    stored = query(
        stream.settings,
        "select partition, next_offset from public.consumer_offsets where consumer_group = %s",
        (stream.group,),
    )
    assert dict(stored) == dict(ends)
    assert len(ends) == 6
    assert query(stream.settings, "select count(*) from public.failed_events") == [(0,)]

    # What the API shows for that customer, and for one the stream never saw.
    expected = expected_customers(events)[customer]
    conn = psycopg2.connect(stream.settings.dsn)
    try:
        activity = realtime.customer_activity(conn, customer)
        unseen = realtime.customer_activity(conn.cursor(), "C-never-seen")
    finally:
        conn.close()
    assert unseen is None
    assert activity["events_by_type"] == {
        column: expected[column] for column in realtime.ACTIVITY_COUNTERS
    }
    assert activity["total_events"] == expected["total_events"]
    assert activity["cart_value"] == f"{expected['cart_value']:.2f}"
    assert activity["purchased_value"] == f"{expected['purchased_value']:.2f}"
    assert activity["last_event_ts"] == expected["last_event_ts"].isoformat()


def test_malformed_events_go_to_dlq_and_failed_events(stream: Stream, catalog: Catalog) -> None:
    valid = stamped_sessions(catalog, 300, seed=11, start=datetime(2026, 3, 2, 12, tzinfo=UTC))
    good = valid[0]
    an_hour_ahead = datetime.now(UTC) + timedelta(hours=1)
    malformed = {
        b"{not json": "bad JSON",
        b"[1, 2, 3]": "bad JSON",
        b"\xff\xfe\x00": "bad JSON",
        encode_event({k: v for k, v in good.items() if k != "customer_id"}): "missing field",
        encode_event({**good, "event_type": "teleport"}): "unknown event_type",
        encode_event({**good, "event_ts": "yesterday"}): "bad timestamp",
        encode_event({**good, "event_ts": "2026-03-02T12:00:00"}): "bad timestamp",
        encode_event(
            {**good, "event_type": "add_to_cart", "product_id": "P1", "quantity": 1, "price": -5}
        ): "bad price",
        # Its record is produced now: an event an hour later comes from a clock that is wrong.
        encode_event({**good, "event_ts": format_timestamp(an_hour_ahead)}): (
            f"bad timestamp: event_ts {format_timestamp(an_hour_ahead)} is more than 5 minutes"
            " after its record was produced"
        ),
    }
    # Keys as failed_events stores them: text, with U+FFFD for NUL (which PostgreSQL text
    # cannot hold) and for bytes that are not UTF-8.
    keys = {b"abc\x00def": "abc\ufffddef", b"\xff\xfe": "\ufffd\ufffd"}
    producer = create_producer(stream.settings)
    sent_bad = {}
    for number, event in enumerate(valid):
        producer.send(stream.topic, key=event["customer_id"].encode(), value=encode_event(event))
        if number % 30 == 0 and malformed:
            raw, reason = malformed.popitem()
            key, stored_key = keys.popitem() if keys else (b"bad", "bad")
            record = producer.send(stream.topic, key=key, value=raw).get(timeout=30)
            sent_bad[(record.partition, record.offset)] = (raw, reason, stored_key)
    producer.close()
    assert not malformed and len(sent_bad) == 9
    total = len(valid) + len(sent_bad)

    consumer = stream.consumer()
    wait_until(lambda: committed(stream) == total, "every record written", stream)
    assert consumer.stop() == 0

    assert_exact_totals(stream, valid)
    failed = query(
        stream.settings,
        "select source_topic, source_partition, source_offset, payload, reason, record_key"
        " from public.failed_events",
    )
    assert {(row[1], row[2]) for row in failed} == set(sent_bad)
    for topic, partition, offset, payload, reason, key in failed:
        raw, expected_reason, stored_key = sent_bad[(partition, offset)]
        assert topic == stream.topic and bytes(payload) == raw and key == stored_key
        assert reason.startswith(expected_reason), (reason, expected_reason)

    assert {source: value for source, value, _ in dead_letters(stream)} == {
        source: raw for source, (raw, _, _) in sent_bad.items()
    }


def test_an_invalid_record_too_large_to_copy_whole_reaches_the_dlq_cut_short(
    stream: Stream, catalog: Catalog
) -> None:
    # The record fits the dead-letter topic's limit; its copy, with the reason and source
    # headers added, would not.
    dlq_limit = 200_000
    create_topic(stream.settings, stream.dlq_topic, 1, {"max.message.bytes": str(dlq_limit)})
    oversized = b"x" * (dlq_limit - 50)
    # Invalid records after it in the same partition, which a wedged producer would lose too.
    later = [b"{not json %d" % number for number in range(3)]
    producer = create_producer(stream.settings)
    sent_bad = {}
    for raw in [oversized, *later]:
        record = producer.send(stream.topic, partition=0, key=b"bad", value=raw).get(timeout=30)
        sent_bad[(record.partition, record.offset)] = raw
    producer.close()
    valid = stamped_sessions(catalog, 300, seed=71, start=datetime(2026, 3, 2, 14, tzinfo=UTC))
    send(stream, valid)
    total = len(sent_bad) + len(valid)

    consumer = stream.consumer()
    wait_until(lambda: committed(stream) == total, "every record written", stream)
    assert consumer.stop() == 0
    assert_exact_totals(stream, valid)
    # failed_events keeps each record whole.
    assert failed_payloads(stream) == sent_bad

    letters = dead_letters(stream)
    assert sorted(source for source, _, _ in letters) == sorted(sent_bad)
    for source, value, headers in letters:
        raw = sent_bad[source]
        if raw is oversized:
            # Its first 64 KB, and how long it was.
            assert value == raw[: 64 * 1024]
            assert headers["original_value_bytes"] == str(len(raw))
            assert headers["reason"] == f"record of {len(raw)} bytes exceeds {64 * 1024}"
        else:
            assert value == raw and "original_value_bytes" not in headers
            assert headers["reason"].startswith("bad JSON")


def test_a_dead_letter_copy_the_broker_refuses_stops_the_consumer_before_its_batch_commits(
    stream: Stream, catalog: Catalog
) -> None:
    # A dead-letter topic that takes no record over 1 KB refuses the copy of a 4 KB one.
    create_topic(stream.settings, stream.dlq_topic, 1, {"max.message.bytes": "1024"})
    before = stamped_sessions(catalog, 300, seed=81, start=datetime(2026, 3, 2, 15, tzinfo=UTC))
    after = stamped_sessions(catalog, 300, seed=82, start=datetime(2026, 3, 2, 16, tzinfo=UTC))
    send(stream, before)
    raw = b"{" + b"x" * 4000
    producer = create_producer(stream.settings)
    bad = producer.send(stream.topic, partition=0, key=b"bad", value=raw).get(timeout=30)
    producer.close()
    send(stream, after)
    total = len(before) + 1 + len(after)

    first = stream.consumer()
    wait_until(
        lambda: first.process.poll() is not None or committed(stream) == total,
        "the consumer to stop or to write every record",
        stream,
    )
    assert first.process.poll() == 1, first.story()
    assert "did not acknowledge every dead-letter record" in first.output()
    # The batch holding the record did not commit: its partition was not stored past it,
    # and failed_events does not have it.
    stored = query(
        stream.settings,
        "select next_offset from public.consumer_offsets"
        " where consumer_group = %s and topic = %s and partition = %s",
        (stream.group, stream.topic, bad.partition),
    )
    assert stored in ([], [(offset,) for offset in range(bad.offset + 1)])
    assert failed_payloads(stream) == {}

    # Once the topic takes the copy, a restarted consumer reads the batch again.
    admin = KafkaAdminClient(bootstrap_servers=stream.settings.kafka_bootstrap_servers)
    try:
        admin.alter_configs(
            [ConfigResource("topic", stream.dlq_topic, {"max.message.bytes": "1048588"})]
        )
    finally:
        admin.close()
    second = stream.consumer()
    wait_until(lambda: committed(stream) == total, "every record written", stream)
    assert second.stop() == 0
    assert_exact_totals(stream, before + after)
    assert failed_payloads(stream) == {(bad.partition, bad.offset): raw}
    assert [(source, value) for source, value, _ in dead_letters(stream)] == [
        ((bad.partition, bad.offset), raw)
    ]


def test_send_events_fails_unless_the_broker_acknowledges_every_event(
    stream: Stream, catalog: Catalog
) -> None:
    events = stamped_sessions(catalog, 20, seed=91, start=datetime(2026, 3, 2, 17, tzinfo=UTC))
    # Over the topic's 1 MB record limit and under the client's 4 MB request limit: only the
    # broker refuses it.
    events[10]["search_query"] = "x" * 1_100_000
    producer = create_producer(stream.settings)
    futures = []
    try:
        with pytest.raises(UserFacingError) as refused:
            send_events(producer, stream.topic, events, on_sent=lambda _, f: futures.append(f))
    finally:
        producer.close()
    assert len(futures) == len(events) and futures[10].failed()
    failures = sum(future.failed() for future in futures)
    assert f"{failures} of {len(events)} were refused" in str(refused.value)


def test_the_produce_command_exits_1_when_the_broker_refuses_its_events(stream: Stream) -> None:
    topic = f"{stream.topic}_tiny"
    # No event fits in 64 bytes.
    create_topic(stream.settings, topic, 1, {"max.message.bytes": "64"})
    count = 20
    result = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "stream", "produce", "--count", str(count)]
        + ["--topic", topic, "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        env=dict(os.environ),
    )
    assert result.returncode == 1, result
    assert "did not acknowledge every event" in result.stderr
    assert f"{count} of {count} were refused" in result.stderr
    assert "sent " not in result.stdout


def test_one_customers_events_share_a_partition_however_the_id_is_written(
    stream: Stream, catalog: Catalog
) -> None:
    product, price = next(iter(catalog.product_prices.items()))
    start = datetime(2026, 3, 2, 18, tzinfo=UTC)
    events = []
    for number, customer in enumerate(catalog.customer_ids[:60]):
        # The cart filled under one spelling of the id and emptied by a purchase under another.
        for step, (kind, spelling) in enumerate(
            [("add_to_cart", f" {customer.lower()}\t"), ("purchase", customer)]
        ):
            at = start + timedelta(seconds=2 * number + step)
            events.append(cart_event(kind, spelling, product, price, at))
    metadata = send(stream, events)
    partitions = defaultdict(set)
    for event, record in zip(events, metadata, strict=True):
        partitions[event["customer_id"].strip().upper()].add(record.partition)
    assert {customer: len(used) for customer, used in partitions.items()} == {
        customer: 1 for customer in catalog.customer_ids[:60]
    }

    consumer = stream.consumer()
    wait_until(lambda: committed(stream) == len(events), "every record written", stream)
    assert consumer.stop() == 0
    # Counted under the id as the warehouse keys it, every cart emptied by its purchase.
    assert_exact_totals(
        stream, [{**event, "customer_id": event["customer_id"].strip().upper()} for event in events]
    )


def test_kill_9_mid_stream_then_restart_counts_exactly(stream: Stream, catalog: Catalog) -> None:
    events = stamped_sessions(catalog, 30_000, seed=21, start=datetime(2026, 3, 3, tzinfo=UTC))
    first = stream.consumer("--batch-records", "500", "--batch-seconds", "0.05")
    wait_until(lambda: _last_assignment_size(first) == 6, "the first assignment", stream)
    sender = send_in_background(stream, events, rate=3000)
    wait_until(lambda: committed(stream) >= 3000, "the first batches", stream, sender)
    first.kill()
    written_at_kill = committed(stream)
    assert 0 < written_at_kill < len(events)
    restart_and_count_exactly(stream, sender, events, "--batch-records", "500")


def restart_and_count_exactly(
    stream: Stream, sender: BackgroundSender, events: list[dict], *options: str
) -> None:
    """A new consumer resumes from the offsets stored before the first one stopped: once the
    sender is done, every event has counted once."""
    second = stream.consumer(*options, "--batch-seconds", "0.05")
    sender.join(timeout=WAIT_SECONDS)
    sender.check()
    wait_until(lambda: committed(stream) == len(events), "every record written", stream)
    assert second.stop() == 0
    assert_exact_totals(stream, events)


def test_a_consumer_that_loses_its_database_says_so_and_a_restart_counts_exactly(
    stream: Stream, catalog: Catalog
) -> None:
    events = stamped_sessions(catalog, 6_000, seed=23, start=datetime(2026, 3, 3, 6, tzinfo=UTC))
    first = stream.consumer("--batch-records", "200", "--batch-seconds", "0.05")
    wait_until(lambda: _last_assignment_size(first) == 6, "the first assignment", stream)
    sender = send_in_background(stream, events, rate=1000)
    wait_until(lambda: committed(stream) >= 500, "the first batches", stream, sender)
    # The database ends the consumer's session, as a restarted server would.
    admin = psycopg2.connect(stream.settings.dsn)
    with admin, admin.cursor() as cur:
        cur.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where application_name = %s and datname = current_database()",
            (CONSUMER_APPLICATION_NAME,),
        )
        assert cur.fetchone()[0] == 1
    admin.close()

    assert first.process.wait(timeout=WAIT_SECONDS) == 1
    assert "lost the connection to PostgreSQL" in first.output()
    assert "Traceback" not in first.output()
    restart_and_count_exactly(stream, sender, events, "--batch-records", "200")


def test_two_consumers_in_one_group_count_exactly(stream: Stream, catalog: Catalog) -> None:
    consumers = [stream.consumer(), stream.consumer()]
    # Both members hold partitions before any record arrives.
    wait_until(
        lambda: all(_last_assignment_size(c) == 3 for c in consumers), "a 3 + 3 split", stream
    )
    events = stamped_sessions(catalog, 20_000, seed=31, start=datetime(2026, 3, 4, tzinfo=UTC))
    send(stream, events)
    wait_until(lambda: committed(stream) == len(events), "every record written", stream)
    assert [c.stop() for c in consumers] == [0, 0]
    assert all(c.consumed() > 0 for c in consumers)
    assert sum(c.consumed() for c in consumers) == len(events)
    assert_exact_totals(stream, events)


def test_rebalance_mid_stream_neither_loses_nor_duplicates(
    stream: Stream, catalog: Catalog
) -> None:
    events = stamped_sessions(catalog, 45_000, seed=41, start=datetime(2026, 3, 5, tzinfo=UTC))
    before, after = events[:30_000], events[30_000:]
    first = stream.consumer("--batch-records", "2000", "--batch-seconds", "0.1")
    wait_until(lambda: _last_assignment_size(first) == 6, "the first assignment", stream)
    sender = send_in_background(stream, before, rate=3000)
    wait_until(lambda: committed(stream) >= 3000, "the first batches", stream, sender)
    second = stream.consumer("--batch-records", "2000", "--batch-seconds", "0.1")
    wait_until(lambda: _last_assignment_size(second) == 3, "the rebalance", stream)
    # Records of the first part may still be in flight; the rest is sent after the
    # rebalance, however fast the first part went.
    sender.join(timeout=WAIT_SECONDS)
    sender.check()
    sender = send_in_background(stream, after, rate=3000)
    sender.join(timeout=WAIT_SECONDS)
    sender.check()
    wait_until(lambda: committed(stream) == len(events), "every record written", stream)
    assert [first.stop(), second.stop()] == [0, 0]
    assert second.consumed() > 0
    assert first.consumed() + second.consumed() == len(events)
    assert_exact_totals(stream, events)


def test_a_batch_from_a_partition_owner_that_was_replaced_is_refused(
    stream: Stream, catalog: Catalog
) -> None:
    event = stamped_sessions(catalog, 1, seed=51, start=datetime(2026, 3, 6, tzinfo=UTC))[0]
    batch = aggregate([parse_event(encode_event(event))])
    partition = (stream.topic, 0)
    owner = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    zombie = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    try:
        owner.write_batch(batch, [], {partition: OffsetRange(start=None, next_offset=1)})
        # The replaced owner read the same first record and also believes no offset is stored.
        with pytest.raises(StaleOffsetsError):
            zombie.write_batch(batch, [], {partition: OffsetRange(start=None, next_offset=1)})
        with pytest.raises(StaleOffsetsError):
            zombie.write_batch(batch, [], {partition: OffsetRange(start=0, next_offset=1)})
        owner.write_batch(batch, [], {partition: OffsetRange(start=1, next_offset=2)})
    finally:
        owner.close()
        zombie.close()
    assert query(stream.settings, "select total_events from public.customer_activity") == [(2,)]
    assert query(
        stream.settings,
        "select next_offset from public.consumer_offsets where topic = %s",
        (stream.topic,),
    ) == [(2,)]


def test_recent_metrics_lists_the_last_minutes_newest_first(
    stream: Stream, catalog: Catalog
) -> None:
    now = datetime.now(UTC)
    old = stamped_sessions(catalog, 50, seed=61, start=now - timedelta(hours=3))
    # 400 events 0.25 s apart: the last one 20 s ago.
    recent = stamped_sessions(catalog, 400, seed=62, start=now - timedelta(minutes=2))
    # Stamped by a clock an hour fast: not yet in any window of the last minutes.
    future = stamped_sessions(catalog, 20, seed=64, start=now + timedelta(hours=1))
    events = old + recent + future
    batch = aggregate([parse_event(encode_event(event)) for event in events])
    sink = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    try:
        sink.write_batch(batch, [], {(stream.topic, 0): OffsetRange(None, len(events))})
    finally:
        sink.close()
    conn = psycopg2.connect(stream.settings.dsn)
    try:
        rows = realtime.recent_metrics(conn, minutes=10)
    finally:
        conn.close()
    # The events of the last two minutes; those of three hours ago and an hour ahead are not.
    window_start = now - timedelta(minutes=10)
    wanted = {
        (minute, kind): (count, amount)
        for (minute, kind), (count, amount) in expected_metrics(events).items()
        if window_start <= minute <= now
    }
    assert wanted
    assert {
        (datetime.fromisoformat(row["minute_start"]), row["event_type"]): (
            row["event_count"],
            Decimal(row["amount"]),
        )
        for row in rows
    } == wanted
    minutes = [row["minute_start"] for row in rows]
    assert minutes == sorted(minutes, reverse=True)


def test_a_late_purchase_does_not_move_the_latest_purchase_back(
    stream: Stream, catalog: Catalog
) -> None:
    customer, (product, price) = catalog.customer_ids[0], next(iter(catalog.product_prices.items()))
    at = datetime(2026, 3, 7, 12, tzinfo=UTC)
    # The purchase of noon, then, in a later batch, one stamped an hour earlier.
    batches = [
        [cart_event("purchase", customer, product, price, at)],
        [cart_event("purchase", customer, product, price, at - timedelta(hours=1))],
    ]
    sink = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    try:
        for offset, events in enumerate(batches):
            batch = aggregate([parse_event(encode_event(event)) for event in events])
            start = None if offset == 0 else offset
            sink.write_batch(batch, [], {(stream.topic, 0): OffsetRange(start, offset + 1)})
    finally:
        sink.close()
    ((latest, purchases),) = query(
        stream.settings,
        "select last_purchase_ts, purchases from public.customer_activity where customer_id = %s",
        (customer,),
    )
    assert (latest, purchases) == (at, 2)


def test_customer_activity_finds_the_customer_however_the_id_is_written(
    stream: Stream, catalog: Catalog
) -> None:
    customer = catalog.customer_ids[0]
    event = stamped_sessions(catalog, 1, seed=63, start=datetime(2026, 3, 6, tzinfo=UTC))[0]
    event["customer_id"] = customer
    sink = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    try:
        batch = aggregate([parse_event(encode_event(event))])
        sink.write_batch(batch, [], {(stream.topic, 0): OffsetRange(None, 1)})
    finally:
        sink.close()
    conn = psycopg2.connect(stream.settings.dsn)
    try:
        activity = realtime.customer_activity(conn, f"  {customer.lower()}\t")
    finally:
        conn.close()
    assert activity is not None
    assert (activity["customer_id"], activity["total_events"]) == (customer, 1)


def test_maximal_purchases_beyond_the_old_column_bounds_add_up_exactly(
    stream: Stream, catalog: Catalog
) -> None:
    customer, product = catalog.customer_ids[0], next(iter(catalog.product_prices))
    start = datetime(2026, 3, 7, 10, tzinfo=UTC)
    # The largest amount one event may carry, 10,001 times in one minute, then 101 of them
    # back in the cart: past numeric(16, 2) per minute and numeric(14, 2) per customer.
    kinds = ["purchase"] * 10_001 + ["add_to_cart"] * 101
    events = [
        {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "customer_id": customer,
            "product_id": product,
            "session_id": "overflow-session",
            "event_ts": (start + timedelta(milliseconds=5 * number)).isoformat(),
            "quantity": MAX_QUANTITY,
            "price": MAX_PRICE_CENTS / 100,
        }
        for number, kind in enumerate(kinds)
    ]
    parsed = [parse_event(encode_event(event)) for event in events]
    assert all(isinstance(event, ClickEvent) for event in parsed)
    expected = expected_customers(events)[customer]
    assert expected["purchased_value"] > Decimal("999999999999.99")
    assert expected["cart_value"] > Decimal("999999999999.99")
    assert max(amount for _, amount in expected_metrics(events).values()) > Decimal(
        "99999999999999.99"
    )

    # Two batches, so that the second adds to totals already past the old bounds.
    half = len(parsed) // 2
    partition = (stream.topic, 0)
    sink = Sink(psycopg2.connect(stream.settings.dsn), stream.group)
    try:
        sink.write_batch(aggregate(parsed[:half]), [], {partition: OffsetRange(None, half)})
        sink.write_batch(aggregate(parsed[half:]), [], {partition: OffsetRange(half, len(parsed))})
    finally:
        sink.close()

    assert_exact_totals(stream, events)
    # Money keeps two decimals, as it is shown.
    scales = query(
        stream.settings,
        "select scale(amount) from public.real_time_metrics"
        " union select scale(cart_value) from public.customer_activity"
        " union select scale(purchased_value) from public.customer_activity"
        " union select scale(purchased_value) from public.product_activity",
    )
    assert scales == [(2,)]
    conn = psycopg2.connect(stream.settings.dsn)
    try:
        activity = realtime.customer_activity(conn, customer)
    finally:
        conn.close()
    assert activity["purchased_value"] == f"{expected['purchased_value']:.2f}"
    assert activity["cart_value"] == f"{expected['cart_value']:.2f}"


# The columns that sum money over time, and their types before they were widened.
MONEY_COLUMNS = {
    ("real_time_metrics", "amount"): "numeric(16, 2)",
    ("customer_activity", "cart_value"): "numeric(14, 2)",
    ("customer_activity", "purchased_value"): "numeric(14, 2)",
    ("product_activity", "purchased_value"): "numeric(14, 2)",
}


def test_the_schema_file_widens_the_money_columns_of_existing_tables(database: Settings) -> None:
    schema = (SQL_DIR / "06_create_streaming.sql").read_text(encoding="utf-8")
    conn = psycopg2.connect(database.dsn)
    try:
        with conn.cursor() as cur:
            # Tables as an earlier version of the file made them, holding data.
            for (table, column), old_type in MONEY_COLUMNS.items():
                cur.execute(f"alter table public.{table} alter column {column} type {old_type}")
            cur.execute(
                "insert into public.real_time_metrics (minute_start, event_type, event_count,"
                " amount) values ('2026-03-08T10:00:00Z', 'widen_test', 3, 99999999999999.99)"
            )
            cur.execute(
                "insert into public.customer_activity (customer_id, purchases, total_events,"
                " cart_value, purchased_value) values ('widen-test', 2, 2, -12.50,"
                " 999999999999.99)"
            )
            cur.execute(
                "insert into public.product_activity (product_id, purchases, purchased_value)"
                " values ('widen-test', 2, 999999999999.99)"
            )
            tables = sorted({table for table, _ in MONEY_COLUMNS})
            storage = (
                "select relname, relfilenode from pg_class"
                " where relnamespace = 'public'::regnamespace and relname = any(%s)"
            )
            cur.execute(storage, (tables,))
            storage_before = set(cur.fetchall())
            # Applied over the old tables, then once more over its own result.
            cur.execute(schema)
            cur.execute(schema)
            cur.execute(storage, (tables,))
            storage_after = set(cur.fetchall())
            cur.execute(
                "select table_name, column_name, data_type, numeric_precision, numeric_scale"
                " from information_schema.columns where table_schema = 'public'"
                " and (table_name, column_name) in %s",
                (tuple(MONEY_COLUMNS),),
            )
            types = {(table, column): rest for table, column, *rest in cur.fetchall()}
            cur.execute(
                "select amount from public.real_time_metrics where event_type = 'widen_test'"
            )
            metric = cur.fetchall()
            cur.execute(
                "select cart_value, purchased_value from public.customer_activity"
                " where customer_id = 'widen-test'"
            )
            customer = cur.fetchall()
            cur.execute(
                "select purchased_value from public.product_activity"
                " where product_id = 'widen-test'"
            )
            product = cur.fetchall()
    finally:
        conn.rollback()
        conn.close()
    assert types == {key: ["numeric", None, None] for key in MONEY_COLUMNS}
    # Widening kept each table's storage: no rewrite, however large the tables are.
    assert storage_after == storage_before and len(storage_before) == len(tables)
    assert metric == [(Decimal("99999999999999.99"),)]
    assert customer == [(Decimal("-12.50"), Decimal("999999999999.99"))]
    assert product == [(Decimal("999999999999.99"),)]


def _last_assignment_size(consumer: ConsumerProcess) -> int:
    """Partitions in the consumer's last "assigned" line (kafka-python's own lines excluded)."""
    marker = "streaming.consumer: assigned "
    lines = [line for line in consumer.output().splitlines() if marker in line]
    if not lines:
        return 0
    assigned = lines[-1].split(marker, 1)[1]
    return 0 if assigned.startswith("no partitions") else assigned.count("[")
