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
from orb8_agent.control.kube import apply_node_entry, patch_agent_status, watch_node_config
from orb8_agent.control.report import rfc3339
from orb8_agent.control.targets import sessions_from_spec
from orb8_agent.metrics import build_registry
from orb8_common.errors import Orb8Error

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
        async for spec in watch_node_config(api=self._api, node=node):
            log.info("NodeAgentConfig/%s: %d session(s)", node, len(spec.get("sessions") or []))
            await self._on_worker(partial(self._agent.configure, spec=spec))
            self._gpu.configure(sessions=sessions_from_spec(spec=spec))
            self._configured.set()

    async def _tick(self) -> None:
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            if not self._configured.is_set():
                continue
            try:
                if time.monotonic() - last_resync >= RESYNC_S:
                    last_resync = time.monotonic()
                    await self._on_worker(self._agent.resync)
                await self._on_worker(self._agent.collect)
                await self._report(await self._on_worker(self._agent.due_reports))
                await self._report(await self._gpu.due())
            except Orb8Error as err:
                log.warning("tick failed: %s", err)

    async def _report(self, reports: list[tuple[Any, dict[str, Any]]]) -> None:
        for target, entry in reports:
            try:
                found = await apply_node_entry(
                    api=self._api, kind=target.kind, namespace=target.namespace,
                    name=target.name, node=self._agent.node, entry=entry,
                )  # fmt: skip
                self._status_writes.labels(result="ok" if found else "gone").inc()
            except Orb8Error as err:
                self._status_writes.labels(result="error").inc()
                log.warning("report for %s failed: %s", target.key, err)

    async def _heartbeat(self) -> None:
        while True:
            report = dict(await self._on_worker(self._capability_report))
            status = {**report, "agentVersion": self._version, "heartbeat": rfc3339(at=time.time())}
            try:
                await patch_agent_status(api=self._api, node=self._agent.node, status=status)
            except Orb8Error as err:
                log.warning("heartbeat failed: %s", err)
            await asyncio.sleep(HEARTBEAT_S)

    async def _shutdown(self) -> None:
        reports = await self._on_worker(self._agent.final_reports)
        await self._report(reports)
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
