"""Service metrics, exported at /metrics in the Prometheus text format.

Counters are free-form (``inc(name, by, **labels)``) so any part can count something without
declaring it first; they are rendered through ``prometheus_client`` with a registry per Service,
so two servers in one process (tests) never share numbers. Gauges that describe live state
(spool depth and bytes) are read when scraped, never cached.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# "_created" series only restate the start time; they double the histogram output for nothing.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# What each counter means; counters not listed still export, with a generic help line.
HELP = {
    "replay_events_ingested_total": "rrweb events accepted (fsynced to the spool)",
    "replay_bytes_ingested_total": "packed event bytes accepted",
    "replay_duplicate_batches_total": "batches dropped because their batch_id was already kept",
    "replay_rejections_total": "requests answered with a 4xx/5xx, by status and error code",
    "replay_store_errors_total": "blob store operations that failed, by operation",
    "replay_erased_sessions_total": "sessions erased through the API",
    "replay_http_requests_total": "HTTP requests answered, by method, route and status",
    "replay_batches_packed_total": "JSON uploads packed straight from their text, their events never decoded "
                                   "whole (full snapshots masked on their packed form)",
}


class _LiveCollector(Collector):
    def __init__(self, metrics: "Metrics"):
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for (name, labels), value in sorted(self._metrics.counters.items()):
            base = name[:-len("_total")] if name.endswith("_total") else name
            family = families.get(base)
            if family is None:
                family = families[base] = CounterMetricFamily(base, HELP.get(name, name.replace("_", " ")),
                                                              labels=[k for k, _ in labels])
            family.add_metric([v for _, v in labels], value)
        yield from families.values()
        for name, (doc, read) in sorted(self._metrics.gauges.items()):
            yield GaugeMetricFamily(name, doc, value=float(read()))


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    # Most counters have no labels, and ingest counts several per upload: skip the sort for them.
    return (name, tuple(sorted((k, str(v)) for k, v in labels.items())) if labels else ())


class Metrics:
    """Counters, live gauges and the flush-latency histogram of one Service."""

    def __init__(self) -> None:
        self.counters: Counter = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.flush_seconds = Histogram("replay_flush_seconds", "time to write one spool segment to the store "
                                       "and catalogue it (successful flushes)", buckets=FLUSH_BUCKETS,
                                       registry=self.registry)
        self.registry.register(_LiveCollector(self))

    def inc(self, name: str, by: float = 1, **labels: str) -> None:
        """Add to a counter; a counter with labels must always be used with the same label names."""
        self.counters[_key(name, labels)] += by

    def value(self, name: str, **labels: str) -> float:
        return self.counters[_key(name, labels)]

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Export ``read()`` as a gauge, evaluated at every scrape."""
        self.gauges[name] = (doc, read)

    def observe_flush(self, seconds: float) -> None:
        self.flush_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
