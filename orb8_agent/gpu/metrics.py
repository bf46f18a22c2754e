"""Prometheus metrics over the latest GPU snapshots.

A custom collector renders whatever the latest snapshot of each session
holds, so a pod that is gone from the snapshot is gone from /metrics: label
sets never accumulate. Labels are namespace, pod and gpu (the UUID) only.

At most ``max_pods`` pods get series of their own: those using the most GPU
memory. The rest are folded per GPU into ``namespace="_other", pod="_other"``
(memory summed, utilisation, temperature and power the highest), and each
pod newly folded is counted in ``capped_total``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orb8_agent.gpu.model import GpuSnapshot
from orb8_agent.podmetrics import OTHER

_LABELS = ("namespace", "pod", "gpu")


class GpuMetrics(Collector):
    """Register once (``registry.register(metrics)``); publish each session's snapshot."""

    def __init__(self, *, max_pods: int = 500) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, GpuSnapshot] = {}
        self.max_pods = max_pods
        self.capped_total = 0
        self._folded: set[tuple[str, str]] = set()

    def publish(self, *, session: str, snapshot: GpuSnapshot) -> None:
        with self._lock:
            self._snapshots[session] = snapshot

    def forget(self, *, session: str) -> None:
        with self._lock:
            self._snapshots.pop(session, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshots = list(self._snapshots.values())
        util = GaugeMetricFamily(
            "orb8_gpu_utilization_ratio", "GPU utilization of the pod, 0 to 1.", labels=_LABELS
        )
        mem = GaugeMetricFamily(
            "orb8_gpu_memory_used_bytes", "GPU framebuffer memory used, in bytes.", labels=_LABELS
        )
        temp = GaugeMetricFamily(
            "orb8_gpu_temperature_celsius", "GPU temperature, in degrees Celsius.", labels=_LABELS
        )
        power = GaugeMetricFamily(
            "orb8_gpu_power_watts", "GPU power draw, in watts.", labels=_LABELS
        )
        up = GaugeMetricFamily(
            "orb8_gpu_source_up",
            "1 when the GPU source answered in the latest scrape.",
            labels=("source",),
        )
        # One value per (namespace, pod, gpu): a pod's containers on one GPU are
        # summed when measured per process, shown once when device-wide.
        agg: dict[tuple[str, str, str], list[float | None]] = {}
        sources: dict[str, bool] = {}
        seen: set[tuple[str, str, str, str]] = set()  # a pod in two sessions counts once
        for snap in snapshots:
            for s in snap.sources:
                sources[s.name] = sources.get(s.name, False) or s.ok
            for row in snap.rows:
                for g in row.gpus:
                    if g.last_updated is None:
                        continue  # nothing fresh to show
                    key = (row.namespace, row.pod, g.uuid)
                    if (*key, row.container) in seen:
                        continue
                    seen.add((*key, row.container))
                    vals: list[float | None] = [
                        g.utilization_percent,
                        None if g.memory_used_bytes is None else float(g.memory_used_bytes),
                        g.temperature_celsius,
                        g.power_watts,
                    ]
                    prev = agg.get(key)
                    if prev is None:
                        agg[key] = vals
                    elif g.scope == "process":
                        for i in (0, 1):
                            a, b = prev[i], vals[i]
                            prev[i] = b if a is None else (a if b is None else a + b)
        for (ns, pod, gpu), (pct, m, t, p) in sorted(self._fold(agg).items()):
            labels = [ns, pod, gpu]
            if pct is not None:
                util.add_metric(labels, min(pct, 100.0) / 100.0)
            if m is not None:
                mem.add_metric(labels, m)
            if t is not None:
                temp.add_metric(labels, t)
            if p is not None:
                power.add_metric(labels, p)
        for name, ok in sorted(sources.items()):
            up.add_metric([name], 1.0 if ok else 0.0)
        yield from (util, mem, temp, power, up)

    def _fold(
        self, agg: dict[tuple[str, str, str], list[float | None]]
    ) -> dict[tuple[str, str, str], list[float | None]]:
        memory: dict[tuple[str, str], float] = {}
        for (ns, pod, _), vals in agg.items():
            memory[(ns, pod)] = memory.get((ns, pod), 0.0) + (vals[1] or 0.0)
        ranked = sorted(memory, key=lambda k: (-memory[k], k))
        own = set(ranked[: self.max_pods])
        folded = set(ranked[self.max_pods :])
        with self._lock:
            self.capped_total += len(folded - self._folded)
            self._folded = folded
        if not folded:
            return agg
        out: dict[tuple[str, str, str], list[float | None]] = {}
        for (ns, pod, gpu), vals in agg.items():
            if (ns, pod) in own:
                out[(ns, pod, gpu)] = vals
                continue
            key = (OTHER, OTHER, gpu)
            prev = out.get(key)
            if prev is None:
                out[key] = list(vals)
                continue
            for i, value in enumerate(vals):
                if value is None:
                    continue
                old = prev[i]
                if old is None:
                    prev[i] = value
                else:
                    prev[i] = old + value if i == 1 else max(old, value)
        return out
