"""The Prometheus text rendering of the API's request metrics."""

from __future__ import annotations

from api.metrics import LATENCY_BUCKETS, RequestMetrics


def test_counters_and_cumulative_histogram() -> None:
    metrics = RequestMetrics()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 30.0):
        metrics.observe("GET", "/customers/{customer_id}", 200, seconds)
    metrics.observe("GET", "/customers/{customer_id}", 404, 0.001)
    lines = metrics.render().splitlines()

    route = 'method="GET",route="/customers/{customer_id}"'
    assert f'c360_api_requests_total{{{route},status="200"}} 5' in lines
    assert f'c360_api_requests_total{{{route},status="404"}} 1' in lines
    buckets = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("c360_api_request_duration_seconds_bucket")
    }
    # Six observations: 0.0005 and 0.001 fall in le=0.001, the two 0.003 in le=0.005,
    # 0.2 in le=0.25 and 30 only in +Inf.
    assert buckets["0.001"] == 2
    assert buckets["0.005"] == 4
    assert buckets["0.25"] == 5
    assert buckets["10.0"] == 5
    assert buckets["+Inf"] == 6
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert f"c360_api_request_duration_seconds_count{{{route}}} 6" in lines
    total = next(line for line in lines if line.startswith("c360_api_request_duration_seconds_sum"))
    assert float(total.rsplit(" ", 1)[1]) == sum((0.0005, 0.003, 0.003, 0.2, 30.0, 0.001))


def test_label_values_are_escaped() -> None:
    metrics = RequestMetrics()
    metrics.observe("GET", 'we"ird\\route', 200, 0.01)
    assert 'route="we\\"ird\\\\route"' in metrics.render()


def test_every_metric_has_help_and_type() -> None:
    text = RequestMetrics().render()
    for name in (
        "c360_api_requests_total",
        "c360_api_request_duration_seconds",
        "c360_api_requests_in_progress",
        "c360_api_start_time_seconds",
    ):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
