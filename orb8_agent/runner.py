"""The agent's async main loop: config watch, collection ticks, status reports, HTTP.

All data-plane work happens on one worker thread (the reconciler is not
thread-safe and BPF/netlink calls block); the event loop only waits on it.
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
from orb8_agent.control.settings import SessionSettings
from orb8_agent.metrics import build_registry
from orb8_common.errors import Orb8Error
from orb8_common.models import (
    NodeAgentConfigSpec,
    NodeAgentConfigStatus,
    SessionReport,
    format_epoch,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TICK_S = 1.0
RESYNC_S = 5.0
HEARTBEAT_S = 30.0


class AgentRunner:
    def __init__(
        self, *, agent: NodeAgent, gpu: GpuSessions, api: CustomObjectsApi,
        capability_report: Callable[[], Mapping[str, Any]], version: str,
    ) -> None:  # fmt: skip
        self._agent = agent
        self._gpu = gpu
        self._api = api
        self._capability_report = capability_report
        self._version = version
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orb8-dataplane")
        self._configured = asyncio.Event()
        self._stop = asyncio.Event()
        self._settings = SessionSettings(api=api)
        self._spec: NodeAgentConfigSpec | None = None
        self._next_report = 0.0
        self._last_write = 0.0
        self.registry, self._status_writes = build_registry(agent=agent)
        self.registry.register(gpu.metrics)

    async def _on_worker(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, func)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, http_host: str, http_port: int) -> None:
        site_runner = await self._serve_http(host=http_host, port=http_port)
        tasks = [
            asyncio.create_task(self._watch_config(), name="watch-config"),
            asyncio.create_task(self._tick(), name="tick"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._shutdown()
            await site_runner.cleanup()
            self._worker.shutdown(wait=True)

    async def _watch_config(self) -> None:
        node = self._agent.node
        await self._restore()
        async for raw in watch_node_config(api=self._api, node=node):
            try:
                self._spec = NodeAgentConfigSpec.model_validate(raw) if raw else None
            except ValueError as err:
                log.warning("NodeAgentConfig/%s: unreadable spec ignored: %s", node, err)
                continue
            log.info("NodeAgentConfig/%s: %d session(s)", node, self._session_count())
            await self._configure()
            self._configured.set()

    def _session_count(self) -> int:
        return len(self._spec.sessions) if self._spec else 0

    async def _restore(self) -> None:
        """Continue from this node's last reports (an earlier run of this agent wrote them)."""
        while True:
            try:
                raw = await read_agent_status(api=self._api, node=self._agent.node)
                break
            except Orb8Error as err:
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
            if not self._configured.is_set():
                continue
            try:
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

    def _interval(self) -> float | None:
        intervals = [i for i in (self._agent.report_interval(), self._gpu.report_interval())
                     if i is not None]  # fmt: skip
        return min(intervals) if intervals else None

    async def _write_report(self, *, now: float) -> None:
        """One merge patch of NodeAgentConfig/<node>.status with every session's share."""
        interval = self._interval()
        if interval is None and self._last_write:
            self._next_report = now + RESYNC_S
            return  # nothing served, and the last report said so already
        await self._on_worker(self._agent.collect)
        wire = await self._on_worker(partial(fit_reports, build=self._build_reports))
        status = {"reports": wire[0], "heartbeat": format_epoch(now)}
        try:
            found = await patch_agent_status(api=self._api, node=self._agent.node, status=status)
            self._status_writes.labels(result="ok" if found else "gone").inc()
        except Orb8Error as err:
            self._status_writes.labels(result="error").inc()
            log.warning("report failed, retrying: %s", err)
            self._next_report = now + min(interval or RESYNC_S, RESYNC_S)
            return
        self._last_write = now
        await self._on_worker(self._agent.forget_stopped)
        self._next_report = now + (interval if interval is not None else RESYNC_S)

    def _build_reports(self, scale: float) -> list[SessionReport]:
        return [*self._agent.reports(scale=scale), *self._gpu.reports(scale=scale)]

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
                    await patch_agent_status(api=self._api, node=self._agent.node, status=status)
                    written = report
                except Orb8Error as err:
                    log.warning("heartbeat failed: %s", err)
            await asyncio.sleep(HEARTBEAT_S)

    async def _shutdown(self) -> None:
        if self._configured.is_set():
            await self._on_worker(self._agent.collect)
            wire, _ = await self._on_worker(
                partial(fit_reports, build=lambda scale: self._agent.final_reports(scale=scale))
            )
            status = {"reports": wire, "heartbeat": format_epoch(time.time())}
            try:
                await patch_agent_status(api=self._api, node=self._agent.node, status=status)
            except Orb8Error as err:
                log.warning("final report failed: %s", err)
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

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._configured.is_set():
            return web.Response(text="ok")
        return web.Response(status=503, text="waiting for NodeAgentConfig")
