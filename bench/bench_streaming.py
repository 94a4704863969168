"""Clickstream benchmark: throughput into PostgreSQL, the client's raw ceiling, and latency.

Needs the local broker and database running and the warehouse loaded (`c360 kafka start`,
`c360 db start`, `c360 load`). The consumer writes into a separate benchmark database on the
same server, created afresh, so the platform's own real-time tables are left alone.

1. Produce ``--events`` simulated events (1,000,000) to a new 6-partition topic.
2. End to end: one `c360 stream consume` process reads them into PostgreSQL; the sustained
   rate runs from its first commit to its last. The totals are then checked exactly against
   what the producers sent.
3. Raw: kafka-python reads the same topic with the consumer's fetch settings and does
   nothing with the records: the client's ceiling on this machine.
4. Latency: producers send at a steady ``--latency-rate`` (5,000 events/s) for
   ``--latency-seconds``; the time from each event's event_ts to the commit that makes it
   visible in the metric tables is read off the committed offsets, sampled every 50 ms.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg2
from kafka import KafkaConsumer, TopicPartition

from customer360.migrate import migrate
from customer360.settings import Settings, get_settings
from streaming.consumer import FETCH_TUNING
from streaming.events import PRICED_EVENT_TYPES
from streaming.producer import (
    Catalog,
    SessionSimulator,
    create_producer,
    ensure_topic,
    load_catalog,
    send_events,
)

OFFSET_SAMPLE_SECONDS = 0.05
PRICE_CENTS = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=2, help="producer processes")
    parser.add_argument("--latency-rate", type=float, default=5000.0)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    args = parser.parse_args()

    settings = get_settings()
    catalog = load_catalog(settings)
    bench_settings = fresh_bench_database(settings)
    load_before = os.getloadavg()
    run_id = uuid.uuid4().hex[:8]

    topic = f"bench_clicks_{run_id}"
    ensure_topic(topic, 6, settings)
    produced = produce_in_parallel(catalog, topic, args.events, args.producers)
    expected = merge_counters(produced)

    end_to_end = consume_end_to_end(bench_settings, topic, f"bench_{run_id}", args.events)
    exact = check_totals(bench_settings, expected, args.events)
    raw = raw_consume(settings, topic, args.events)

    truncate_streaming_tables(bench_settings)
    latency = measure_latency(
        catalog, bench_settings, f"bench_latency_{run_id}", args.latency_rate,
        args.latency_seconds, args.producers,
    )  # fmt: skip

    report = {
        "benchmark": "streaming",
        "machine": machine_description(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "produce": {
            "events": expected["events"],
            "producer_processes": args.producers,
            "events_per_second": round(expected["events"] / max(p["seconds"] for p in produced)),
        },
        "end_to_end": {**end_to_end, "exact_totals": exact},
        "raw_consume": raw,
        "end_to_end_vs_raw": round(
            end_to_end["sustained_events_per_second"] / raw["events_per_second"], 3
        ),
        "latency": latency,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def fresh_bench_database(settings: Settings) -> Settings:
    """A new, migrated database beside the configured one, for the consumer to write into."""
    base, _, database = settings.dsn.rpartition("/")
    name = f"{database.split('?')[0]}_bench_streaming"
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'drop database if exists "{name}" with (force)')
        cur.execute(f'create database "{name}"')
    admin.close()
    bench = settings.model_copy(update={"database_url": f"{base}/{name}"})
    migrate(bench)
    return bench


def _produce_share(job: tuple) -> dict:
    """One producer process: its share of events, and what it sent (for the exact check)."""
    catalog, topic, count, seed, rate, record_sends = job
    settings = get_settings()
    producer = create_producer(settings)
    simulator = SessionSimulator(catalog, random.Random(seed))
    counts: Counter = Counter()
    amounts: Counter = Counter()
    sends: list = []

    def on_sent(event: dict, future: object) -> None:
        counts[event["event_type"]] += 1
        if event["event_type"] in PRICED_EVENT_TYPES:
            amounts[event["event_type"]] += round(event["price"] * PRICE_CENTS) * event["quantity"]
        if record_sends:
            sends.append((time.time(), future))

    report = send_events(producer, topic, simulator.events(), count=count, rate=rate,
                         on_sent=on_sent)  # fmt: skip
    producer.close()
    sent_at = [(sent, future.get(timeout=60)) for sent, future in sends]
    return {
        "events": report.sent,
        "seconds": report.seconds,
        "counts": dict(counts),
        "amount_cents": dict(amounts),
        "sends": [(sent, meta.partition, meta.offset) for sent, meta in sent_at],
    }


def produce_in_parallel(catalog: Catalog, topic: str, events: int, processes: int) -> list[dict]:
    """Send ``events`` as fast as ``processes`` producer processes can."""
    shares = [events // processes + (1 if i < events % processes else 0) for i in range(processes)]
    jobs = [
        (catalog, topic, share, 1000 + number, None, False) for number, share in enumerate(shares)
    ]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(_produce_share, jobs)


def merge_counters(produced: list[dict]) -> dict:
    counts: Counter = Counter()
    amounts: Counter = Counter()
    for share in produced:
        counts.update(share["counts"])
        amounts.update(share["amount_cents"])
    return {"events": sum(counts.values()), "counts": counts, "amount_cents": amounts}


def start_consumer(settings: Settings, topic: str, group: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "C360_DATABASE_URL": settings.dsn}
    command = [
        sys.executable, "-m", "customer360.cli", "stream", "consume",
        "--topic", topic, "--dlq-topic", f"{topic}_dlq", "--group", group, "--log-interval", "5",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def committed_offsets(conn: psycopg2.extensions.connection, group: str) -> dict[int, int]:
    with conn.cursor() as cur:
        cur.execute(
            "select partition, next_offset from public.consumer_offsets where consumer_group = %s",
            (group,),
        )
        return dict(cur.fetchall())


def consume_end_to_end(settings: Settings, topic: str, group: str, events: int) -> dict:
    log_path = Path(f"/tmp/bench_streaming_{group}.log")
    conn = psycopg2.connect(settings.dsn)
    conn.autocommit = True
    started = time.monotonic()
    consumer = start_consumer(settings, topic, group, log_path)
    first_commit: tuple[float, int] | None = None
    try:
        while True:
            done = sum(committed_offsets(conn, group).values())
            now = time.monotonic()
            if done and first_commit is None:
                first_commit = (now, done)
            if done >= events:
                break
            if consumer.poll() is not None:
                raise RuntimeError(f"the consumer exited early; see {log_path}")
            time.sleep(0.1)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=120)
        conn.close()
    assert first_commit is not None
    sustained = (events - first_commit[1]) / max(now - first_commit[0], 1e-9)
    return {
        "events": events,
        "seconds_including_startup": round(now - started, 2),
        "sustained_events_per_second": round(sustained),
        "consumer_log": str(log_path),
    }


def check_totals(settings: Settings, expected: dict, events: int) -> bool:
    """The aggregate tables hold exactly what the producers sent."""
    conn = psycopg2.connect(settings.dsn)
    with conn.cursor() as cur:
        cur.execute(
            "select event_type, sum(event_count), sum(amount * 100)"
            " from public.real_time_metrics group by event_type"
        )
        metrics = {kind: (int(count), int(cents)) for kind, count, cents in cur.fetchall()}
        cur.execute("select sum(total_events) from public.customer_activity")
        customer_events = int(cur.fetchone()[0])
        cur.execute(
            "select sum(purchases), sum(purchased_value * 100) from public.product_activity"
        )
        purchases, purchased_cents = (int(value) for value in cur.fetchone())
    conn.close()
    wanted = {
        kind: (count, expected["amount_cents"].get(kind, 0))
        for kind, count in expected["counts"].items()
    }
    return (
        metrics == wanted
        and customer_events == events
        and purchases == expected["counts"].get("purchase", 0)
        and purchased_cents == expected["amount_cents"].get("purchase", 0)
    )


def raw_consume(settings: Settings, topic: str, events: int) -> dict:
    """kafka-python reading the topic with the consumer's fetch settings, doing nothing else."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        max_poll_records=20_000,
        **FETCH_TUNING,
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    read = 0
    started = time.monotonic()
    while read < events:
        for records in consumer.poll(timeout_ms=500).values():
            read += len(records)
    seconds = time.monotonic() - started
    consumer.close()
    return {
        "events": read,
        "seconds": round(seconds, 2),
        "events_per_second": round(read / seconds),
    }


def truncate_streaming_tables(settings: Settings) -> None:
    conn = psycopg2.connect(settings.dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "truncate public.real_time_metrics, public.customer_activity,"
            " public.product_activity, public.failed_events, public.consumer_offsets"
        )
    conn.close()


def measure_latency(
    catalog: Catalog, settings: Settings, run: str, rate: float, seconds: float, processes: int
) -> dict:
    topic, group = run, run
    ensure_topic(topic, 6, settings)
    log_path = Path(f"/tmp/bench_streaming_{run}.log")
    consumer = start_consumer(settings, topic, group, log_path)
    deadline = time.monotonic() + 60
    while "assigned " + topic not in log_path.read_text(errors="replace"):
        if time.monotonic() > deadline or consumer.poll() is not None:
            raise RuntimeError(f"the consumer did not join the group; see {log_path}")
        time.sleep(0.2)

    samples: list[tuple[float, dict[int, int]]] = []
    conn = psycopg2.connect(settings.dsn)
    conn.autocommit = True
    events = int(rate * seconds)
    pool = multiprocessing.get_context("fork").Pool(processes)
    shares = [events // processes] * processes
    jobs = [
        (catalog, topic, share, 2000 + number, rate / processes, True)
        for number, share in enumerate(shares)
    ]
    pending = pool.map_async(_produce_share, jobs)
    try:
        while True:
            offsets = committed_offsets(conn, group)
            samples.append((time.time(), offsets))
            if pending.ready() and sum(offsets.values()) >= sum(shares):
                break
            time.sleep(OFFSET_SAMPLE_SECONDS)
        produced = pending.get()
    finally:
        pool.close()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=120)
        conn.close()

    # Per partition: the first sample in which the committed offset passed each record.
    latencies = []
    by_partition: dict[int, tuple[list[int], list[float]]] = {}
    for at, offsets in samples:
        for partition, next_offset in offsets.items():
            ends, times = by_partition.setdefault(partition, ([], []))
            ends.append(next_offset)
            times.append(at)
    for share in produced:
        for sent, partition, offset in share["sends"]:
            ends, times = by_partition[partition]
            visible_at = times[bisect.bisect_right(ends, offset)]
            latencies.append(visible_at - sent)
    latencies.sort()
    sent_seconds = max(share["seconds"] for share in produced)

    def percentile(fraction: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))], 3)

    return {
        "target_events_per_second": rate,
        "achieved_events_per_second": round(len(latencies) / sent_seconds),
        "events": len(latencies),
        "p50_seconds": percentile(0.50),
        "p95_seconds": percentile(0.95),
        "p99_seconds": percentile(0.99),
        "max_seconds": round(latencies[-1], 3),
        "sampling_resolution_seconds": OFFSET_SAMPLE_SECONDS,
    }


def machine_description() -> dict:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        memory_kb = int(meminfo.read_text().split()[1])
    from kafka import __version__ as kafka_python_version

    from customer360.kafka_broker import kafka_version

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kafka_broker": kafka_version(),
        "kafka_python": kafka_python_version,
    }


if __name__ == "__main__":
    sys.exit(main())
