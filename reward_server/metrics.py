"""Prometheus metrics: one registry per server, so several servers (tests,
replicas in one process) never collide, served over HTTP on their own port."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.rpcs = Counter("arbiter_rpcs", "gRPC calls handled", ["method", "code"], registry=r)
        self.rpc_seconds = Histogram(
            "arbiter_rpc_seconds", "gRPC call latency", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.rpcs_in_flight = Gauge("arbiter_rpcs_in_flight", "gRPC calls in progress", registry=r)
        self.samples = Counter(
            "arbiter_samples", "samples scored, by status", ["scorer", "status"], registry=r
        )
        self.component_calls = Counter(
            "arbiter_component_calls",
            "calls a scorer made to another (composite components), by status; not samples",
            ["scorer", "status"],
            registry=r,
        )
        self.scoring_seconds = Histogram(
            "arbiter_scoring_seconds",
            "time inside the scorer",
            ["scorer"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "arbiter_queue_seconds",
            "time waiting for a concurrency slot or worker",
            ["scorer"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.worker_restarts = Gauge(
            "arbiter_worker_restarts", "worker processes replaced (timeouts, crashes)", registry=r
        )
        self._sample_children: dict[tuple[str, str, bool], Any] = {}
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def count_sample(self, scorer: str, status: str, scoring_s: float, *, component: bool = False) -> None:
        """One scored sample, or one component call of a scorer that calls others
        (label children cached: this runs once per sample)."""
        key = (scorer, status, component)
        children = self._sample_children.get(key)
        if children is None:
            counter = self.component_calls if component else self.samples
            children = (counter.labels(scorer, status), self.scoring_seconds.labels(scorer))
            self._sample_children[key] = children
        children[0].inc()
        if scoring_s:
            children[1].observe(scoring_s)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint (``/metrics``); returns the bound port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
