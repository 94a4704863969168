"""Clickstream producer: realistic shopping sessions for customers and products of the warehouse.

Run it as ``c360 stream produce`` or ``python streaming/producer.py``. By default it sends a
burst of 10,000 events and exits; ``--rate`` paces it, ``--duration`` bounds it in time.
Each event is JSON, keyed by its ``customer_id`` trimmed and upper-cased (the form the consumer
counts it under) so that one customer's events stay in order on one partition; the producer is
idempotent with ``acks=all``, and a run that the broker does not fully acknowledge fails.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import psycopg2.errors
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

from customer360.db import DatabaseUnavailableError, connect
from customer360.errors import UserFacingError
from customer360.settings import Settings, get_settings
from streaming.events import SCHEMA_VERSION, event_key, format_timestamp

log = logging.getLogger(__name__)

TOPIC_PARTITIONS = 6
DLQ_PARTITIONS = 1
GHOST_KEY = "-1"
# How long a client waits for the first broker answer before the command gives up.
BOOTSTRAP_TIMEOUT_MS = 10_000
# The producer answers every send within its delivery_timeout_ms; this much more is allowed.
ACKNOWLEDGEMENT_GRACE_SECONDS = 10

# Throughput settings: bigger batches and a short linger amortise the per-request cost.
PRODUCER_TUNING = {
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    "max_request_size": 4 * 1024 * 1024,
}


@dataclass(frozen=True)
class Catalog:
    """The customers and products events may name, with each product's unit price."""

    customer_ids: list[str]
    product_prices: dict[str, float]


def load_catalog(settings: Settings | None = None) -> Catalog:
    """Customer ids and current product prices from the raw vault (ghost records excluded)."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select customer_id from raw_vault.hub_customer where customer_id <> %s"
                " order by customer_id",
                (GHOST_KEY,),
            )
            customer_ids = [row[0] for row in cur.fetchall()]
            cur.execute(
                """
                with latest_details as (
                    select distinct on (product_hk) product_hk, unit_price
                    from raw_vault.sat_product_details
                    order by product_hk, load_dts desc
                )
                select hub.product_id, coalesce(latest_details.unit_price, 0)
                from raw_vault.hub_product as hub
                left join latest_details using (product_hk)
                where hub.product_id <> %s
                order by hub.product_id
                """,
                (GHOST_KEY,),
            )
            product_prices = {product_id: float(price) for product_id, price in cur.fetchall()}
    except psycopg2.errors.UndefinedTable as exc:
        raise UserFacingError(
            "the warehouse schema is missing; run `c360 migrate` and load the data first"
        ) from exc
    finally:
        conn.close()
    if not customer_ids or not product_prices:
        raise UserFacingError("the warehouse has no customers or products yet; load the data first")
    return Catalog(customer_ids, product_prices)


@dataclass
class SessionSimulator:
    """Shopping sessions: land, search, view products, fill and empty the cart, buy.

    Each customer's cart is remembered across sessions, so ``remove_from_cart`` only removes
    what was added and ``purchase`` buys what is in the cart (one event per cart line).
    """

    catalog: Catalog
    rng: random.Random = field(default_factory=random.Random)
    carts: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)

    def session(self) -> Iterator[dict]:
        """The events of one session, without ``event_ts`` (stamped when sent)."""
        rng = self.rng
        customer_id = rng.choice(self.catalog.customer_ids)
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        cart = self.carts.setdefault(customer_id, {})
        product_ids = list(self.catalog.product_prices)

        def event(event_type: str, **extra: object) -> dict:
            return {
                "schema_version": SCHEMA_VERSION,
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "event_type": event_type,
                "customer_id": customer_id,
                "session_id": session_id,
                **extra,
            }

        yield event("page_view", page_url="/")
        for _ in range(rng.choices((0, 1, 2), weights=(5, 4, 1))[0]):
            yield event("search", search_query=rng.choice(SEARCH_TERMS))
        for _ in range(rng.randint(1, 4)):
            product_id = rng.choice(product_ids)
            yield event("product_view", product_id=product_id, page_url=f"/p/{product_id}")
            if rng.random() < 0.35:
                quantity = rng.choices((1, 2, 3), weights=(8, 3, 1))[0]
                price = self.catalog.product_prices[product_id]
                old_quantity, _ = cart.get(product_id, (0, price))
                cart[product_id] = (old_quantity + quantity, price)
                yield event("add_to_cart", product_id=product_id, quantity=quantity, price=price)
        if cart and rng.random() < 0.15:
            product_id = rng.choice(sorted(cart))
            quantity, price = cart.pop(product_id)
            yield event("remove_from_cart", product_id=product_id, quantity=quantity, price=price)
        if cart and rng.random() < 0.45:
            yield event("checkout")
            if rng.random() < 0.75:
                for product_id, (quantity, price) in sorted(cart.items()):
                    yield event("purchase", product_id=product_id, quantity=quantity, price=price)
                cart.clear()

    def events(self) -> Iterator[dict]:
        """An endless stream of events, session after session."""
        while True:
            yield from self.session()


SEARCH_TERMS = (
    "laptop",
    "headphones",
    "running shoes",
    "coffee maker",
    "desk lamp",
    "backpack",
    "phone case",
    "monitor",
    "yoga mat",
    "water bottle",
    "office chair",
    "keyboard",
)


def bootstrap_servers(settings: Settings | None = None) -> list[str]:
    """The configured bootstrap servers as a list."""
    settings = settings or get_settings()
    return [server.strip() for server in settings.kafka_bootstrap_servers.split(",") if server]


def ensure_topic(
    topic: str, partitions: int = TOPIC_PARTITIONS, settings: Settings | None = None
) -> None:
    """Create the topic with ``partitions`` partitions unless it exists."""
    try:
        with quiet_bootstrap():
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers(settings),
                client_id="c360-admin",
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
    except KafkaTimeoutError as exc:
        raise broker_unavailable(settings) from exc
    try:
        if topic in admin.list_topics():
            return
        broker_count = len(admin.describe_cluster()["brokers"])
        replication = min(3, max(1, broker_count))
        try:
            admin.create_topics([NewTopic(topic, partitions, replication)])
            log.info("created topic %s with %d partitions", topic, partitions)
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


@contextmanager
def quiet_bootstrap() -> Iterator[None]:
    """Silence the client's retry lines while it first connects; failure is reported once."""
    client_log = logging.getLogger("kafka")
    if client_log.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    previous = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(previous)


def broker_unavailable(settings: Settings | None = None) -> UserFacingError:
    """The one-sentence error for an unreachable broker."""
    servers = ",".join(bootstrap_servers(settings))
    return UserFacingError(
        f"cannot reach the Kafka broker at {servers} (start it with `c360 kafka start`)"
    )


def create_producer(settings: Settings | None = None, **overrides: object) -> KafkaProducer:
    """An idempotent producer (acks=all) that sends JSON values with string keys."""
    config = {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": "c360-clickstream-producer",
        "enable_idempotence": True,
        "acks": "all",
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        **PRODUCER_TUNING,
        **overrides,
    }
    try:
        with quiet_bootstrap():
            return KafkaProducer(**config)
    except KafkaTimeoutError as exc:
        raise broker_unavailable(settings) from exc


def encode_event(event: dict) -> bytes:
    """The wire form of an event: compact JSON in UTF-8."""
    return orjson.dumps(event)


class Deliveries:
    """Records handed to a producer, and whether the broker acknowledged each of them.

    kafka-python's ``flush()`` returns normally when sends fail: only each send's future says
    whether the broker took the record.
    """

    def __init__(self) -> None:
        self.pending: deque[FutureRecordMetadata] = deque()
        self.acknowledged = 0
        self.failed = 0
        self.first_error: Exception | None = None

    @property
    def sent(self) -> int:
        """Sends followed so far, answered or not."""
        return self.acknowledged + self.failed + len(self.pending)

    def track(self, future: FutureRecordMetadata) -> None:
        """Follow one send."""
        self.pending.append(future)
        # Settle the answered sends as they come, so an endless run holds only those in flight.
        while self.pending and self.pending[0].is_done:
            self._settle(self.pending.popleft(), timeout=0)

    def wait(self, producer: KafkaProducer) -> None:
        """Flush the producer, then settle every send (bounded by its ``delivery_timeout_ms``)."""
        deadline = (
            time.monotonic()
            + producer.config["delivery_timeout_ms"] / 1000
            + ACKNOWLEDGEMENT_GRACE_SECONDS
        )
        # kafka-python 3.0's flush() raises when a batch it waits for is split (the broker found
        # it too large), yet each record's future still gets its answer.
        with suppress(KafkaError):
            producer.flush()
        while self.pending:
            self._settle(self.pending.popleft(), timeout=max(0.0, deadline - time.monotonic()))

    def _settle(self, future: FutureRecordMetadata, timeout: float) -> None:
        try:
            future.get(timeout=timeout)
        except KafkaError as exc:
            self.failed += 1
            self.first_error = self.first_error or exc
        else:
            self.acknowledged += 1

    def describe_failure(self) -> str:
        """How many sends failed, and why the first one did."""
        error = self.first_error
        return f"{self.failed} of {self.sent} were refused ({type(error).__name__}: {error})"


@dataclass
class ProduceReport:
    sent: int
    seconds: float
    topic: str

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def send_events(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[dict],
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_sent: Callable[[dict, object], None] | None = None,
) -> ProduceReport:
    """Send events (stamping ``event_ts`` when it is missing) until count or duration is reached.

    ``rate`` paces the sends (events per second); ``on_sent(event, future)`` sees each send.
    Returns once every event is acknowledged by the broker; raises ``UserFacingError`` when
    some were not, or when the producer stopped taking them.
    """
    started = time.monotonic()
    deliveries = Deliveries()
    stopped_by: KafkaError | None = None
    for event in events:
        if count is not None and deliveries.sent >= count:
            break
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        if rate:
            # Keep to the schedule rather than sleeping a fixed gap, so rate errors do not add up.
            ahead = deliveries.sent / rate - elapsed
            if ahead > 0:
                time.sleep(ahead)
        if "event_ts" not in event:
            event["event_ts"] = format_timestamp(clock())
        try:
            future = producer.send(topic, key=event_key(event), value=encode_event(event))
        except KafkaError as exc:
            # Refused outright (no topic metadata in time, the buffer full, a record over
            # max_request_size): end the run and report how far it got, rather than block on
            # each event left.
            stopped_by = exc
            break
        deliveries.track(future)
        if on_sent is not None:
            on_sent(event, future)
    deliveries.wait(producer)
    if stopped_by is not None:
        raise UserFacingError(
            f"the producer stopped taking events after {deliveries.sent} ({stopped_by});"
            f" the broker acknowledged {deliveries.acknowledged} of them"
        ) from stopped_by
    if deliveries.failed:
        raise UserFacingError(
            f"the broker did not acknowledge every event sent to {topic}:"
            f" {deliveries.describe_failure()}"
        ) from deliveries.first_error
    return ProduceReport(
        sent=deliveries.acknowledged, seconds=time.monotonic() - started, topic=topic
    )


def produce(
    count: int | None = 10_000,
    rate: float | None = None,
    duration: float | None = None,
    topic: str | None = None,
    seed: int | None = None,
    settings: Settings | None = None,
) -> ProduceReport:
    """Send simulated sessions for warehouse customers to the clickstream topic."""
    settings = settings or get_settings()
    topic = topic or settings.kafka_topic
    catalog = load_catalog(settings)
    ensure_topic(topic, TOPIC_PARTITIONS, settings)
    simulator = SessionSimulator(catalog, random.Random(seed))
    producer = create_producer(settings)
    try:
        return send_events(
            producer, topic, simulator.events(), count=count, rate=rate, duration=duration
        )
    finally:
        producer.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The producer's options, shared by the CLI and ``python streaming/producer.py``."""
    parser.add_argument("--count", type=int, default=None, help="events to send (default 10000)")
    parser.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--topic", default=None, help="topic (default C360_KAFKA_TOPIC)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")


def configure_logging() -> None:
    """Progress lines and group membership changes at INFO; other kafka-python chatter only
    when debugging."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("streaming").setLevel(logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)
        # Joins, leaves and rebalances: what an operator needs when a member sits idle. The
        # consumer logs its own assigned/revoked lines, so kafka-python's copies stay quiet.
        logging.getLogger("kafka.coordinator").setLevel(logging.INFO)
        logging.getLogger("kafka.coordinator.consumer").setLevel(logging.WARNING)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the producer with parsed command-line options and print a summary."""
    configure_logging()
    count = args.count
    if count is None and args.duration is None:
        count = 10_000
    report = produce(
        count=count, rate=args.rate, duration=args.duration, topic=args.topic, seed=args.seed
    )
    print(
        f"sent {report.sent} events to {report.topic} in {report.seconds:.1f} s"
        f" ({report.rate:,.0f} events/s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python streaming/producer.py``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run_from_args(args)
    except (UserFacingError, DatabaseUnavailableError) as exc:
        print(f"producer: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
