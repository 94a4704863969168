"""Request counts and latency histograms, exposed in the Prometheus text format.

A plain ASGI middleware records each HTTP request under its route template (``/customers/{
customer_id}``, not the concrete path, so label values stay few). The numbers live in the
memory of each worker process: with several workers a scrape sees the worker that answered it.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Upper bounds in seconds, spanning a primary-key lookup to a slow listing.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """Counters and histograms keyed by (method, route, status)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        # Per (method, route): bucket counts (non-cumulative, last is +Inf), sum, count.
        self.latency_buckets: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.in_progress = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests[(method, route, str(status))] += 1
        key = (method, route)
        buckets = self.latency_buckets.get(key)
        if buckets is None:
            buckets = self.latency_buckets[key] = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[key] += seconds

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format, version 0.0.4."""
        lines = [
            "# HELP c360_api_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE c360_api_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            labels = _labels(method=method, route=route, status=status)
            lines.append(f"c360_api_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP c360_api_request_duration_seconds Time to answer HTTP requests.",
            "# TYPE c360_api_request_duration_seconds histogram",
        ]
        for (method, route), buckets in sorted(self.latency_buckets.items()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                labels = _labels(method=method, route=route, le=le)
                lines.append(f"c360_api_request_duration_seconds_bucket{{{labels}}} {cumulative}")
            labels = _labels(method=method, route=route)
            total_seconds = self.latency_sum[(method, route)]
            lines.append(f"c360_api_request_duration_seconds_sum{{{labels}}} {total_seconds}")
            lines.append(f"c360_api_request_duration_seconds_count{{{labels}}} {cumulative}")
        lines += [
            "# HELP c360_api_requests_in_progress HTTP requests being answered now.",
            "# TYPE c360_api_requests_in_progress gauge",
            f"c360_api_requests_in_progress {self.in_progress}",
            "# HELP c360_api_start_time_seconds When this worker process started (Unix time).",
            "# TYPE c360_api_start_time_seconds gauge",
            f"c360_api_start_time_seconds {self.started_at}",
        ]
        return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """Times every HTTP request and records it in ``metrics`` under its route template."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500
        self.metrics.in_progress += 1

        async def send_recording_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self.metrics.in_progress -= 1
            self.metrics.observe(
                scope["method"], _route_template(scope), status_code, time.perf_counter() - started
            )


def _route_template(scope: dict[str, Any]) -> str:
    # The router stores the matched route in the scope; unmatched paths share one label.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
