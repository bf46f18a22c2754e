"""The GpuTelemetry sessions on this node: one GPU collector each, scraped on its interval."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orb8_agent.control.served import GPU_TELEMETRY, Served
from orb8_agent.gpu import GpuCollector, GpuMetrics, gpu_settings
from orb8_agent.gpu import TargetContainer as GpuContainer
from orb8_agent.gpu import TargetPod as GpuPod
from orb8_common.models import AgentPod, GpuNodeEntry, SessionReport


def gpu_targets(*, pods: Sequence[AgentPod]) -> list[GpuPod]:
    return [
        GpuPod(
            namespace=pod.namespace, name=pod.name, uid=pod.uid,
            containers=tuple(GpuContainer(name=c.name, id=c.id) for c in pod.containers),
        )
        for pod in pods
    ]  # fmt: skip


@dataclass
class _GpuSession:
    target: Served
    collector: GpuCollector
    interval_s: float
    next_scrape: float
    entry: GpuNodeEntry | None = None  # the latest scrape's share


class GpuSessions:
    """Owns the GPU collectors; the runner awaits ``scrape_due()`` every tick."""

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

    def configure(self, *, sessions: Sequence[Served]) -> None:
        wanted = {s.uid: s for s in sessions if s.kind == GPU_TELEMETRY and s.gpu is not None}
        for uid in set(self._sessions) - set(wanted):
            gone = self._sessions.pop(uid)
            gone.collector.close()
            self.metrics.forget(session=gone.target.key)
        for uid, target in wanted.items():
            assert target.gpu is not None  # filtered above
            settings = gpu_settings(spec=target.gpu)
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

    def report_interval(self) -> float | None:
        """The shortest interval among the GPU sessions; None when there are none."""
        return min((s.interval_s for s in self._sessions.values()), default=None)

    async def scrape_due(self) -> bool:
        """Scrape every session whose interval elapsed; True when any was scraped."""
        now = self._clock()
        scraped = False
        for session in list(self._sessions.values()):
            if now < session.next_scrape:
                continue
            session.next_scrape = now + session.interval_s
            snapshot = await session.collector.scrape(targets=gpu_targets(pods=session.target.pods))
            self.metrics.publish(session=session.target.key, snapshot=snapshot)
            session.entry = snapshot.to_entry()
            scraped = True
        return scraped

    def reports(self, *, scale: float = 1.0) -> list[SessionReport]:
        """Each scraped session's latest share; ``scale`` (0..1) shortens its lists."""
        out = []
        for session in self._sessions.values():
            entry = session.entry
            if entry is None:
                continue
            if scale < 1.0:
                entry = entry.model_copy(
                    update={
                        "pods": entry.pods[: int(len(entry.pods) * scale)],
                        "alerts": entry.alerts[: int(len(entry.alerts) * scale)],
                    }
                )
            target = session.target
            out.append(
                SessionReport(
                    uid=target.uid,
                    kind=target.session.kind,
                    namespace=target.namespace,
                    name=target.name,
                    generation=target.generation,
                    gpu=entry,
                )
            )
        return out

    def close(self) -> None:
        for session in self._sessions.values():
            session.collector.close()
        self._sessions.clear()
