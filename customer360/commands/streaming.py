"""``c360 kafka``: start, stop and show the local broker; ``c360 stream``: produce and consume."""

from __future__ import annotations

import argparse

from customer360.kafka_broker import broker_for_settings, kafka_version
from customer360.settings import get_settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    kafka = subparsers.add_parser("kafka", help="start, stop or show the local Kafka broker")
    actions = kafka.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "start", help="fetch the broker jars if needed and start a KRaft broker on 127.0.0.1"
    ).set_defaults(handler=kafka_start)
    actions.add_parser("stop", help="stop the local broker").set_defaults(handler=kafka_stop)
    actions.add_parser("status", help="show whether the broker runs").set_defaults(
        handler=kafka_status
    )

    try:
        from streaming import consumer, producer
    except ModuleNotFoundError as exc:
        # An image that ships only the core (the Airflow image) has no streaming jobs to run.
        if exc.name != "streaming":
            raise
        return
    stream = subparsers.add_parser("stream", help="produce or consume clickstream events")
    stream_actions = stream.add_subparsers(dest="action", required=True, metavar="ACTION")

    produce = stream_actions.add_parser(
        "produce", help="send simulated sessions of warehouse customers (default: 10000 events)"
    )
    producer.add_arguments(produce)
    produce.set_defaults(handler=producer.run_from_args)

    consume = stream_actions.add_parser(
        "consume", help="aggregate events into PostgreSQL until SIGTERM (start several to scale)"
    )
    consumer.add_arguments(consume)
    consume.set_defaults(handler=consumer.run_from_args)


def kafka_start(args: argparse.Namespace) -> int:
    broker = broker_for_settings(get_settings())
    already = broker.pid()
    broker.start()
    state = "already running" if already else "started"
    print(
        f"Kafka {kafka_version()} {state} at {broker.bootstrap_servers}"
        f" (pid {broker.pid()}, logs in {broker.log_dir})"
    )
    return 0


def kafka_stop(args: argparse.Namespace) -> int:
    broker = broker_for_settings(get_settings())
    if broker.stop():
        print("Kafka broker stopped")
    else:
        print("Kafka broker was not running")
    return 0


def kafka_status(args: argparse.Namespace) -> int:
    broker = broker_for_settings(get_settings())
    pid = broker.pid()
    if pid is None:
        print(f"Kafka broker not running (would listen on {broker.bootstrap_servers})")
        return 1
    ready = "serving" if broker.is_ready() else "starting"
    print(f"Kafka broker {ready} at {broker.bootstrap_servers} (pid {pid})")
    return 0
