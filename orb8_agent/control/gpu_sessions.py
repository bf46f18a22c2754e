"""The GpuTelemetry sessions on this node: one GPU collector each, scraped on its interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orb8_agent.control.targets import SessionTarget, TargetPod
from orb8_agent.gpu import GpuCollector, GpuMetrics, settings_from_spec
from orb8_agent.gpu import TargetContainer as GpuContainer
from orb8_agent.gpu import TargetPod as GpuPod
from orb8_common.errors import InvalidSpecError

GPU_KIND = "GpuTelemetry"


def gpu_targets(*, pods: Sequence[TargetPod]) -> list[GpuPod]:
    return [
        GpuPod(
            namespace=pod.namespace, name=pod.name, uid=pod.uid,
            containers=tuple(GpuContainer(name=c.name, id=c.container_id) for c in pod.containers),
        )
        for pod in pods
    ]  # fmt: skip


@dataclass
class _GpuSession:
    target: SessionTarget
    collector: GpuCollector
    interval_s: float
    next_scrape: float


class GpuSessions:
    """Owns the GPU collectors; the runner awaits ``due()`` every tick."""

    def __init__(
        self, *, node: str, exporter_host: str, podresources_socket: str,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.node = node
        self.metrics = GpuMetrics()
        self._exporter_host = exporter_host
        self._socket = podresources_socket
        self._clock = clock
        self._sessions: dict[str, _GpuSession] = {}
        self.invalid: dict[str, str] = {}  # session key → why its settings were refused

    def configure(self, *, sessions: Sequence[SessionTarget]) -> None:
        wanted = {s.uid: s for s in sessions if s.kind == GPU_KIND}
        for uid in set(self._sessions) - set(wanted):
            gone = self._sessions.pop(uid)
            gone.collector.close()
            self.metrics.forget(session=gone.target.key)
        for uid, target in wanted.items():
            try:
                settings = settings_from_spec(gpu=target.gpu)
            except InvalidSpecError as err:
                self.invalid[target.key] = str(err)
                continue
            current = self._sessions.get(uid)
            if current is None:
                collector = GpuCollector(
                    node=self.node, settings=settings, exporter_host=self._exporter_host,
                    podresources_socket=self._socket,
                )  # fmt: skip
                self._sessions[uid] = _GpuSession(
                    target, collector, settings.interval.total_seconds(), self._clock()
                )
            else:
                current.target = target
                current.collector.configure(settings=settings)
                current.interval_s = settings.interval.total_seconds()

    async def due(self) -> list[tuple[SessionTarget, dict[str, Any]]]:
        """Scrape every session whose interval elapsed; return their ``status.nodes`` entries."""
        now = self._clock()
        reports: list[tuple[SessionTarget, dict[str, Any]]] = []
        for session in list(self._sessions.values()):
            if now < session.next_scrape:
                continue
            session.next_scrape = now + session.interval_s
            snapshot = await session.collector.scrape(targets=gpu_targets(pods=session.target.pods))
            self.metrics.publish(session=session.target.key, snapshot=snapshot)
            reports.append((session.target, snapshot.to_status()))
        return reports

    def close(self) -> None:
        for session in self._sessions.values():
            session.collector.close()
        self._sessions.clear()
