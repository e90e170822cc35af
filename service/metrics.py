"""Prometheus metrics: what the service counts, and the text a scrape of /metrics answers.

Every label has a small, fixed set of values (route templates, never raw paths: a raw path
carries addresses and tokens). Each application builds its own ``Metrics``; with
``PROMETHEUS_MULTIPROC_DIR`` set (``keydir serve --workers N`` sets it), every process
writes its counts to files there and a scrape adds up all of them. The gauges that describe
the stored data are read from the database at scrape time, whichever process answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format: every Prometheus version and most other scrapers read it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UPLOAD_RESULTS = ("created", "updated", "unchanged", "rejected")
LOOKUP_PROTOCOLS = ("vks", "hkp", "wkd", "web")
LOOKUP_RESULTS = ("found", "not_modified", "not_found", "invalid", "rate_limited", "error")
MAIL_RESULTS = ("sent", "failed")


@dataclass(frozen=True, slots=True)
class Stats:
    """What the store holds right now (cheap COUNT queries)."""

    keys: int
    published_addresses: int
    outbox_depth: int


class _StoreCollector(Collector):
    """Gauges read from the database when scraped; a failed read leaves them out."""

    def __init__(self, read: Callable[[], Stats]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would call collect() and touch the database.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._read()
        except Exception:  # noqa: BLE001 - a scrape while the database is away still answers
            return
        keys, published, outbox = self._families()
        keys.add_metric([], stats.keys)
        published.add_metric([], stats.published_addresses)
        outbox.add_metric([], stats.outbox_depth)
        yield from (keys, published, outbox)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("keydir_keys", "Keys stored."),
            GaugeMetricFamily(
                "keydir_published_addresses",
                "Distinct addresses confirmed by their owners and published.",
            ),
            GaugeMetricFamily("keydir_outbox_depth", "Mails queued and not sent yet."),
        )


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


class Metrics:
    """The counters of one application (or one `keydir worker`)."""

    def __init__(self) -> None:
        # `*_created` timestamps would double the series and tell Prometheus nothing new.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = multiprocess_dir() is not None
        if not self._multiprocess:
            # Per-process figures make no sense summed over processes.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self._store: _StoreCollector | None = None
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._lookup_children: dict[tuple[str, str], Any] = {}
        self.requests = Counter(
            "keydir_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "keydir_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.uploads = Counter(
            "keydir_uploads",
            "Uploaded keys by result (an upload of several keys counts each; a refused "
            "upload counts once as rejected).",
            ["result"],
            registry=self.registry,
        )
        self.lookups = Counter(
            "keydir_lookups",
            "Key lookups by protocol and result.",
            ["protocol", "result"],
            registry=self.registry,
        )
        self.mails = Counter(
            "keydir_mails",
            "Mails handed to the mail server (sent) or refused by it (failed, retried later).",
            ["result"],
            registry=self.registry,
        )
        # Known label values appear at 0 from the start, so that rate() and alerts work
        # before the first event of each kind.
        for result in UPLOAD_RESULTS:
            self.uploads.labels(result)
        for result in MAIL_RESULTS:
            self.mails.labels(result)
        for protocol in LOOKUP_PROTOCOLS:
            for result in ("found", "not_found"):
                self.lookups.labels(protocol, result)

    def read_store_with(self, read: Callable[[], Stats]) -> None:
        """Report the store's gauges on every scrape, read by ``read``."""
        self._store = _StoreCollector(read)
        if not self._multiprocess:
            self.registry.register(self._store)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Children by label values, kept: labels() validates and locks on every call, a
        # cost worth saving on every request. The label values are few (route templates,
        # methods, statuses), so these dicts stay small.
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.requests.labels(
                method if method in METHODS else "other", route, str(status)
            )
            self._request_children[key] = child
        child.inc()
        timer = self._duration_children.get(route)
        if timer is None:
            timer = self._duration_children[route] = self.duration.labels(route)
        timer.observe(seconds)

    def upload(self, result: str) -> None:
        self.uploads.labels(result).inc()

    def lookup(self, protocol: str, result: str) -> None:
        child = self._lookup_children.get((protocol, result))
        if child is None:
            child = self._lookup_children[(protocol, result)] = self.lookups.labels(
                protocol, result
            )
        child.inc()

    def mail(self, result: str) -> None:
        self.mails.labels(result).inc()

    def render(self) -> bytes:
        """The text exposition of a scrape: this process, or all processes' files."""
        if not self._multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        if self._store is not None:
            registry.register(self._store)
        return generate_latest(registry)
