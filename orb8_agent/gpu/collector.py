"""One GpuTelemetry session's collector: fetch, join, alert, summarise.

The agent calls ``await collector.scrape(targets=...)`` every interval. The
blocking reads (HTTP, gRPC on the kubelet socket, NVML) run in worker
threads with deadlines. A failing source turns into a per-source health
entry and the ``degraded`` flag, never an exception; readings from a failed
scrape are never carried over, so every number in a snapshot is fresh and
its ``lastUpdated`` says when it was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from orb8_agent.gpu.alerts import AlertTracker
from orb8_agent.gpu.config import GpuSettings
from orb8_agent.gpu.errors import ExporterFetchError, ExporterFormatError
from orb8_agent.gpu.exporter import ExporterEndpoint, scrape_exporter
from orb8_agent.gpu.join import join
from orb8_agent.gpu.model import (
    ExporterScrape,
    GpuSnapshot,
    NvmlReading,
    PodResourcesView,
    SourceHealth,
    TargetPod,
)
from orb8_agent.gpu.nvml import NvmlSource
from orb8_agent.gpu.podresources.client import DEFAULT_SOCKET, read_pod_resources
from orb8_agent.gpu.summary import summarize
from orb8_common.errors import SourceUnavailableError

DEFAULT_TIMEOUT_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unexpected(exc: BaseException) -> str:
    return f"unexpected error: {type(exc).__name__}: {exc}"[:512]


@dataclass(frozen=True, slots=True)
class _Readings:
    source: str
    exporter: ExporterScrape | None
    nvml: NvmlReading | None
    health: tuple[SourceHealth, ...]
    degraded: bool
    notes: tuple[str, ...] = ()


class GpuCollector:
    """Collects one session's GPU rows on one node."""

    def __init__(
        self,
        *,
        node: str,
        settings: GpuSettings,
        exporter_host: str = "127.0.0.1",
        podresources_socket: str = DEFAULT_SOCKET,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        nvml: NvmlSource | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.node = node
        self.settings = settings
        self.exporter_host = exporter_host
        self.podresources_socket = podresources_socket
        self.timeout_s = timeout_s
        self._nvml = nvml if nvml is not None else NvmlSource()
        self._clock = clock
        self._alerts = AlertTracker(policy=settings.alerts)

    def configure(self, *, settings: GpuSettings) -> None:
        """Apply a changed session spec; alert streaks restart if the policy changed."""
        self.settings = settings
        self._alerts.set_policy(policy=settings.alerts)

    @property
    def endpoint(self) -> ExporterEndpoint:
        return ExporterEndpoint(
            host=self.exporter_host,
            port=self.settings.exporter_port,
            path=self.settings.exporter_path,
        )

    async def scrape(self, *, targets: Sequence[TargetPod]) -> GpuSnapshot:
        now = self._clock()
        resources_task = asyncio.to_thread(self._read_resources, now)
        readings_task = asyncio.to_thread(self._read_readings, now)
        resources, readings = await asyncio.gather(resources_task, readings_task)
        return self._assemble(now, targets, resources, readings)

    def scrape_blocking(self, *, targets: Sequence[TargetPod]) -> GpuSnapshot:
        """The same as scrape(), in the calling thread (benchmarks, the GPU check script)."""
        now = self._clock()
        return self._assemble(now, targets, self._read_resources(now), self._read_readings(now))

    def close(self) -> None:
        self._nvml.close()

    # ------------------------------------------------------------ sources

    def _read_resources(self, now: datetime) -> tuple[PodResourcesView | None, SourceHealth]:
        try:
            view = read_pod_resources(
                socket_path=self.podresources_socket, timeout_s=self.timeout_s, now=now
            )
        except SourceUnavailableError as exc:
            return None, SourceHealth(name="podResources", ok=False, message=str(exc))
        except Exception as exc:  # a fault in one source must not end the agent's loop
            return None, SourceHealth(name="podResources", ok=False, message=_unexpected(exc))
        if view.problem:
            # Partly answered: the allocations are used, the fault is still reported.
            return view, SourceHealth(name="podResources", ok=False, message=view.problem)
        return view, SourceHealth(name="podResources", ok=True)

    def _read_readings(self, now: datetime) -> _Readings:
        try:
            return self._read_readings_unguarded(now)
        except Exception as exc:  # a fault in one source must not end the agent's loop
            name: Literal["dcgmExporter", "nvml"] = (
                "nvml" if self.settings.source == "nvml" else "dcgmExporter"
            )
            health = SourceHealth(name=name, ok=False, message=_unexpected(exc))
            return _Readings("", None, None, (health,), degraded=True)

    def _read_readings_unguarded(self, now: datetime) -> _Readings:
        kind = self.settings.source
        if kind == "nvml":
            return self._nvml_readings(now)
        try:
            scrape = scrape_exporter(endpoint=self.endpoint, timeout_s=self.timeout_s, now=now)
        except (ExporterFetchError, ExporterFormatError) as exc:
            exporter_health = SourceHealth(name="dcgmExporter", ok=False, message=str(exc))
            if kind == "dcgmExporter":
                return _Readings("dcgmExporter", None, None, (exporter_health,), degraded=True)
            fallback = self._nvml_readings(now)
            if fallback.nvml is None:
                return _Readings("", None, None, (exporter_health, *fallback.health), degraded=True)
            # No exporter on this node is normal for auto; a broken one is not.
            broken = not (isinstance(exc, ExporterFetchError) and exc.unreachable)
            return _Readings(
                "nvml",
                None,
                fallback.nvml,
                (exporter_health, *fallback.health) if broken else fallback.health,
                degraded=broken,
                notes=() if broken else (f"dcgm-exporter not reachable ({exc}); using NVML",),
            )
        # NVML, when it happens to be usable, ties MIG ids to exporter instances.
        mig_map = None
        if any(e.is_mig_instance for e in scrape.entities):
            try:
                mig_map = self._nvml.read(now=now)
            except SourceUnavailableError:
                mig_map = None
        if scrape.lost:
            # Some readings could not be tied to a device: say which, and how many.
            lost = "readings lost: " + ", ".join(scrape.lost)
            health = SourceHealth(name="dcgmExporter", ok=False, message=lost)
            return _Readings("dcgmExporter", scrape, mig_map, (health,), degraded=True)
        return _Readings(
            "dcgmExporter",
            scrape,
            mig_map,
            (SourceHealth(name="dcgmExporter", ok=True),),
            degraded=False,
        )

    def _nvml_readings(self, now: datetime) -> _Readings:
        # NVML's own errors become NvmlUnavailableError; anything else is caught above.
        try:
            reading = self._nvml.read(now=now)
        except SourceUnavailableError as exc:
            return _Readings(
                "", None, None, (SourceHealth(name="nvml", ok=False, message=str(exc)),), True
            )
        return _Readings("nvml", None, reading, (SourceHealth(name="nvml", ok=True),), False)

    # ------------------------------------------------------------ assemble

    def _assemble(
        self,
        now: datetime,
        targets: Sequence[TargetPod],
        resources_result: tuple[PodResourcesView | None, SourceHealth],
        readings: _Readings,
    ) -> GpuSnapshot:
        resources, resources_health = resources_result
        result = join(
            node=self.node,
            targets=targets,
            exporter=readings.exporter,
            nvml=readings.nvml,
            resources=resources,
        )
        rows = result.rows
        missing = any(g.last_updated is None for r in rows for g in r.gpus)
        degraded = readings.degraded or not resources_health.ok or missing
        alerts = self._alerts.update(rows=rows, now=now)
        return GpuSnapshot(
            node=self.node,
            taken_at=now,
            source=readings.source,
            rows=rows,
            alerts=tuple(alerts),
            summary=summarize(rows=rows),
            sources=(*readings.health, resources_health),
            notes=(*readings.notes, *result.notes),
            degraded=degraded,
        )
