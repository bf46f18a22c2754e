"""The agent's async main loop: config watch, collection ticks, status reports, HTTP.

All data-plane work happens on one worker thread (the reconciler is not
thread-safe and BPF/netlink calls block); the event loop only waits on it.

Health: ``/healthz`` answers 200 while the loops run (every task alive, a
tick within ``TICK_STALL_S``) and the probes the agent wanted are loaded
(at least one of them; none wanted is fine). ``/readyz`` answers 200 once
the NodeAgentConfig watch has synced and while it (and the Service and
EndpointSlice watches, while they run) stays connected and heard from the
apiserver within ``READY_SYNC_AGE_S``; it turns 503 as soon as a watch loses
the apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from aiohttp import web
from kubernetes_asyncio.client import CustomObjectsApi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.gpu_sessions import GpuSessions
from orb8_agent.control.kube import patch_agent_status, read_agent_status, watch_node_config
from orb8_agent.control.node_report import fit_reports
from orb8_agent.control.service_watch import ServiceWatches, apply_changes
from orb8_agent.control.services import ServiceIndex
from orb8_agent.control.settings import SessionSettings, unreadable_report
from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.metrics import build_registry
from orb8_common.errors import Orb8Error
from orb8_common.models import (
    NodeAgentConfigSpec,
    NodeAgentConfigStatus,
    SessionReport,
    format_epoch,
)
from orb8_common.watchstate import WatchState

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK_S = 1.0
RESYNC_S = 5.0
HEARTBEAT_S = 30.0
TICK_STALL_S = 60.0  # no tick for this long: the loop (or its worker thread) is stuck
READY_SYNC_AGE_S = 150.0  # each watch request ends (and is renewed) every 60 s


class AgentRunner:
    def __init__(
        self, *, agent: NodeAgent, gpu: GpuSessions, api: CustomObjectsApi,
        capability_report: Callable[[], Mapping[str, Any]], version: str,
        probes: ProbeSet | None = None, wanted_probes: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._agent = agent
        self._gpu = gpu
        self._api = api
        self._capability_report = capability_report
        self._version = version
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orb8-dataplane")
        self._configured = asyncio.Event()
        self._config_appeared = asyncio.Event()  # wakes the heartbeat: its object exists now
        self._stop = asyncio.Event()
        self._settings = SessionSettings(api=api)
        self._spec: NodeAgentConfigSpec | None = None
        self._next_report = 0.0
        self._last_write = 0.0
        self._probes = probes or ProbeSet()
        self._wanted_probes = wanted_probes
        self._clock = clock
        self._last_tick = clock()
        self._tasks: list[asyncio.Task[None]] = []
        self.watch = WatchState(name="nodeagentconfig")
        # Services and EndpointSlices, watched only while a session counts flows
        self.services = ServiceWatches(api=api.api_client)  # type: ignore[attr-defined]
        self._watches = [self.watch]  # what /metrics shows: the service watches while they run
        self.registry, self._status_writes = build_registry(
            agent=agent, probes=self._probes, watches=self._watches, gpu=gpu.metrics
        )
        self.registry.register(gpu.metrics)

    async def _on_worker(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, func)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, http_host: str, http_port: int) -> None:
        site_runner = await self._serve_http(host=http_host, port=http_port)
        self._tasks = tasks = [
            asyncio.create_task(self._watch_config(), name="watch-config"),
            asyncio.create_task(self._tick(), name="tick"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        for task in tasks:
            task.add_done_callback(_log_task_end)
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.services.stop()
            await self._shutdown()
            await site_runner.cleanup()
            self._worker.shutdown(wait=True)

    async def _watch_config(self) -> None:
        node = self._agent.node
        await self._restore()
        async for raw in watch_node_config(api=self._api, node=node, state=self.watch):
            try:
                self._spec = NodeAgentConfigSpec.model_validate(raw) if raw else None
            except ValueError as err:
                log.warning("NodeAgentConfig/%s: unreadable spec ignored: %s", node, err)
                continue
            log.info("NodeAgentConfig/%s: %d session(s)", node, self._session_count())
            if raw:
                self._config_appeared.set()
            try:
                await self._configure()
            except Exception:
                # A spec the agent cannot adopt must not end the watch; the next one may do.
                log.exception("NodeAgentConfig/%s could not be applied", node)
                continue
            self._configured.set()

    def _session_count(self) -> int:
        return len(self._spec.sessions) if self._spec else 0

    async def _restore(self) -> None:
        """Continue from this node's last reports (an earlier run of this agent wrote them)."""
        while True:
            try:
                raw = await read_agent_status(api=self._api, node=self._agent.node)
                break
            except Exception as err:  # aiohttp errors are not Orb8Errors; never end the watch
                log.warning("reading the previous report failed, retrying: %s", err)
                await asyncio.sleep(2)
        try:
            reports = NodeAgentConfigStatus.model_validate(raw).reports
        except ValueError as err:
            log.warning("previous report unreadable; totals start from zero: %s", err)
            return
        if reports:
            log.info("continuing from %d session report(s) of an earlier run", len(reports))
        await self._on_worker(partial(self._agent.restore, reports=reports))

    async def _configure(self) -> None:
        """Apply the current spec with each session's settings (read once per generation)."""
        sessions = tuple(self._spec.sessions) if self._spec else ()
        served = await self._settings.resolve(sessions=sessions)
        await self._on_worker(partial(self._agent.configure, sessions=served))
        self._gpu.configure(sessions=served)

    async def _tick(self) -> None:
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            self._last_tick = self._clock()
            if not self._configured.is_set():
                continue
            try:
                await self._steer_services()
                if time.monotonic() - last_resync >= RESYNC_S:
                    last_resync = time.monotonic()
                    if self._settings.incomplete:
                        await self._configure()  # a session's settings could not be read yet
                    await self._on_worker(self._agent.resync)
                await self._on_worker(self._agent.poll_alerts)
                await self._gpu.scrape_due()
                now = time.time()
                if now >= self._next_report:
                    await self._write_report(now=now)
            except Orb8Error as err:
                log.warning("tick failed: %s", err)
            except Exception:
                # The loop must outlive a bug in one step; /healthz watches that it keeps ticking.
                log.exception("tick failed")

    def _interval(self) -> float | None:
        # A session whose spec this agent refused has a Failed entry to report (now and then).
        refused = HEARTBEAT_S if self._settings.unreadable() else None
        intervals = [i for i in (self._agent.report_interval(), self._gpu.report_interval(),
                                 refused) if i is not None]  # fmt: skip
        return min(intervals) if intervals else None

    async def _write_report(self, *, now: float) -> None:
        """One merge patch of NodeAgentConfig/<node>.status with every session's share."""
        interval = self._interval()
        if interval is None and self._last_write:
            self._next_report = now + RESYNC_S
            return  # nothing served, and the last report said so already
        await self._steer_services()
        await self._on_worker(self._agent.collect)
        wire = await self._on_worker(partial(fit_reports, build=self._build_reports))
        status = {"reports": wire[0], "heartbeat": format_epoch(now)}
        try:
            found = await patch_agent_status(api=self._api, node=self._agent.node, status=status)
            self._status_writes.add(target="report", result="ok" if found else "gone")
        except Exception as err:  # the apiserver gone: aiohttp errors are not Orb8Errors
            self._status_writes.add(target="report", result="error")
            log.warning("report failed, retrying: %s", err or type(err).__name__)
            self._next_report = now + min(interval or RESYNC_S, RESYNC_S)
            return
        self._last_write = now
        await self._on_worker(self._agent.forget_stopped)
        self._next_report = now + (interval if interval is not None else RESYNC_S)

    async def _steer_services(self) -> None:
        """Run the Service and EndpointSlice watches while a session counts flows (and
        only then), and hand what they heard to the index on the worker."""
        if self._agent.wants_services and not self.services.running:
            self.services.start()
            self._watches[1:] = self.services.states
        elif not self._agent.wants_services and self.services.running:
            await self.services.stop()
            self._watches[1:] = []
            await self._on_worker(partial(self._agent.set_services, index=ServiceIndex()))
            return
        changes = self.services.take()
        if changes:
            await self._on_worker(
                partial(apply_changes, attributor=self._agent.services, changes=changes)
            )

    def _build_reports(self, scale: float) -> list[SessionReport]:
        now = time.time()
        refused = [
            unreadable_report(node=self._agent.node, unreadable=u, now=now)
            for u in self._settings.unreadable()
        ]
        # A served session whose new generation was refused is Failed here, not Stopped.
        uids = {r.uid for r in refused}
        served = [*self._agent.reports(scale=scale), *self._gpu.reports(scale=scale)]
        return [*(r for r in served if r.uid not in uids), *refused]

    async def _heartbeat(self) -> None:
        written: dict[str, Any] | None = None
        while True:
            report = {
                **await self._on_worker(self._capability_report),
                "agentVersion": self._version,
            }
            # Reports carry the heartbeat too; write here only what changed, or when idle.
            if report != written or time.time() - self._last_write >= HEARTBEAT_S:
                status = {**report, "heartbeat": format_epoch(time.time())}
                try:
                    found = await patch_agent_status(
                        api=self._api, node=self._agent.node, status=status
                    )
                    self._status_writes.add(target="heartbeat", result="ok" if found else "gone")
                    # Not there yet (the operator creates it with the first session):
                    # write it again next time, or its status lacks why a probe failed.
                    written = report if found else None
                except Exception as err:  # the apiserver gone: aiohttp errors are not Orb8Errors
                    self._status_writes.add(target="heartbeat", result="error")
                    log.warning("heartbeat failed: %s", err or type(err).__name__)
            # Woken early when NodeAgentConfig/<node> appears (written was then None).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._config_appeared.wait(), timeout=HEARTBEAT_S)
            self._config_appeared.clear()

    async def _shutdown(self) -> None:
        if self._configured.is_set():
            await self._on_worker(self._agent.collect)
            wire, _ = await self._on_worker(
                partial(fit_reports, build=lambda scale: self._agent.final_reports(scale=scale))
            )
            status = {"reports": wire, "heartbeat": format_epoch(time.time())}
            try:
                await patch_agent_status(api=self._api, node=self._agent.node, status=status)
            except Exception as err:  # the apiserver may be gone: still detach and unload
                log.warning("final report failed: %s", err or type(err).__name__)
        await self._on_worker(self._agent.shutdown)
        self._gpu.close()

    async def _serve_http(self, *, host: str, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    async def _metrics(self, _: web.Request) -> web.Response:
        body = await self._on_worker(lambda: generate_latest(self.registry))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def health(self) -> tuple[bool, str]:
        """(healthy, why): the loops run and the wanted probes (any of them) are loaded."""
        dead = [task.get_name() for task in self._tasks if task.done()]
        if dead:
            return False, f"task(s) ended: {', '.join(dead)}"
        stalled = self._clock() - self._last_tick
        if stalled > TICK_STALL_S:
            return False, f"no tick for {stalled:.0f}s"
        loaded = {
            name for name in ("flows", "syscalls", "tcp", "dns") if getattr(self._probes, name)
        }
        if self._wanted_probes and not loaded & self._wanted_probes:
            failures = "; ".join(f"{k}: {v}" for k, v in sorted(self._probes.failures.items()))
            return False, f"no probe loaded ({failures or 'none started'})"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): configured from a NodeAgentConfig watch that is connected and fresh."""
        if not self.watch.healthy(max_age_s=READY_SYNC_AGE_S):
            return False, self.watch.describe(max_age_s=READY_SYNC_AGE_S)
        if not self._configured.is_set():
            return False, "waiting for NodeAgentConfig"
        return self.services.healthy(max_age_s=READY_SYNC_AGE_S)

    async def _healthz(self, _: web.Request) -> web.Response:
        ok, why = self.health()
        return web.Response(status=200 if ok else 503, text=why)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, why = self.readiness()
        return web.Response(status=200 if ok else 503, text=why)


def _log_task_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    err = task.exception()
    if err is not None:
        log.error("task %s died: %r", task.get_name(), err)
    else:
        log.error("task %s ended", task.get_name())
