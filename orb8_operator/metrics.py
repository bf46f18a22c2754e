"""The operator's Prometheus metrics and readiness, served on ``--metrics-port`` (default 8081).

``/readyz`` answers 200 once the operator's own list-then-watch loops (pods
and NodeAgentConfigs) have synced and while they stay connected, and 503
with the reason as soon as either loses the apiserver (kopf's liveness
endpoint says only that the process runs).

Labels are bounded by the two session kinds and a few results; never a
session, pod or node name. Handlers record through the small functions here;
the rest is read from the operator's state at scrape time. Scrapes run on
the HTTP server's thread, so readers only take sizes and copies.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orb8_common.models import SessionKind
from orb8_common.watchmetrics import watch_families
from orb8_common.watchstate import WatchState

KINDS: tuple[SessionKind, ...] = ("TraceSession", "GpuTelemetry")
# Each watch request ends (and is renewed) every 270 s (WATCH_TIMEOUT_S), with bookmarks between.
READY_SYNC_AGE_S = 330.0
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*BUCKETS_S, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


@dataclass
class OperatorMetrics:
    """What the handlers record, plus views of live state read at scrape time."""

    pods_watch: WatchState | None = None
    nodes_watch: WatchState | None = None
    kopf_watch: WatchState = field(default_factory=lambda: WatchState(name="kopf"))
    sessions_by_kind: Callable[[], dict[str, int]] = dict
    pods_tracked: Callable[[], int] = lambda: 0
    node_configs: int = 0
    reconcile: dict[str, _Histogram] = field(
        default_factory=lambda: {kind: _Histogram() for kind in KINDS}
    )
    syncs: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observe_reconcile(self, *, kind: str, seconds: float) -> None:
        with self._lock:
            self.reconcile.setdefault(kind, _Histogram()).observe(seconds)
        self.kopf_watch.synced()  # kopf delivered an event or a timer tick

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): both watch loops started, synced, connected and fresh."""
        why = []
        for name, state in (("pods", self.pods_watch), ("nodeagentconfigs", self.nodes_watch)):
            if state is None:
                why.append(f"{name} watch: not started")
            elif not state.healthy(max_age_s=READY_SYNC_AGE_S):
                why.append(state.describe(max_age_s=READY_SYNC_AGE_S))
        return (not why, "; ".join(why) or "ok")

    def node_config_sync(self, *, ok: bool) -> None:
        with self._lock:
            self.syncs["ok" if ok else "error"] += 1


class OperatorCollector(Collector):
    def __init__(self, *, metrics: OperatorMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        with m._lock:
            reconcile = {kind: (list(h.buckets()), h.total) for kind, h in m.reconcile.items()}
            syncs = dict(m.syncs)
            node_configs = m.node_configs
        durations = HistogramMetricFamily(
            "orb8_operator_reconcile_duration_seconds",
            "Time to reconcile one session (build status, node targets, events)",
            labels=["kind"],
        )
        for kind, (buckets, total) in sorted(reconcile.items()):
            durations.add_metric([kind], buckets, total)
        yield durations
        sessions = GaugeMetricFamily(
            "orb8_operator_sessions_active", "Sessions the agents are serving now",
            labels=["kind"],
        )  # fmt: skip
        by_kind = m.sessions_by_kind()
        for kind in KINDS:
            sessions.add_metric([kind], by_kind.get(kind, 0))
        yield sessions
        yield GaugeMetricFamily(
            "orb8_operator_pods_tracked", "Pods in the operator's pod cache",
            value=m.pods_tracked(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "orb8_operator_node_configs", "NodeAgentConfigs wanted after the last sync",
            value=node_configs,
        )  # fmt: skip
        sync_family = CounterMetricFamily(
            "orb8_operator_node_config_syncs",
            "Rounds of NodeAgentConfig writes (create, update, delete) by result",
            labels=["result"],
        )
        for result, count in sorted(syncs.items()):
            sync_family.add_metric([result], count)
        yield sync_family
        yield from watch_families(
            states=[w for w in (m.pods_watch, m.nodes_watch) if w is not None]
        )
        last_event = GaugeMetricFamily(
            "orb8_operator_kopf_last_event_timestamp_seconds",
            "When kopf last delivered a session event or timer tick to the operator",
        )
        if m.kopf_watch.last_sync is not None:
            last_event.add_metric([], m.kopf_watch.last_sync)
        yield last_event


_METRICS = OperatorMetrics()


def metrics() -> OperatorMetrics:
    return _METRICS


def serve(*, host: str, port: int, metrics: OperatorMetrics) -> CollectorRegistry:
    """Serve ``/metrics`` and ``/readyz`` on a daemon thread; returns the registry."""
    registry = CollectorRegistry()
    registry.register(OperatorCollector(metrics=metrics))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/readyz":
                ok, why = metrics.readiness()
                self._answer(200 if ok else 503, why.encode(), "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics or /readyz", "text/plain")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds: no access log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="orb8-metrics", daemon=True).start()
    return registry
