"""The agent's watches on Services and EndpointSlices, feeding its ServiceIndex.

Two :func:`~orb8_common.listwatch.list_watch` loops (cluster-wide, since a
pod may talk to a Service in any namespace) run while a served session
counts flows and are stopped when none does. They only queue what they
hear: the runner hands the queue to the data-plane worker once per tick
(:meth:`ServiceWatches.take` then :func:`apply_changes`), where the index is
changed in place, so a new Service names flows from the next report on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api, DiscoveryV1Api

from orb8_agent.control.services import ServiceAttributor
from orb8_common.listwatch import Listing, list_watch, raw
from orb8_common.watchstate import WatchState

log = logging.getLogger(__name__)
WATCH_TIMEOUT_S = 60
BACKOFF_S = (0.5, 1, 2, 5, 10)
SERVICES, SLICES = "services", "endpointslices"


@dataclass(frozen=True)
class IndexChange:
    """One thing a watch heard: a full listing of ``kind`` or one event."""

    kind: str  # SERVICES or SLICES
    listing: list[dict[str, Any]] | None = None  # set: replace everything of this kind
    event_type: str = ""
    obj: dict[str, Any] | None = None


def apply_changes(*, attributor: ServiceAttributor, changes: list[IndexChange]) -> None:
    """Fold queued changes into the attributor's index (on the data-plane worker)."""
    index = attributor.index
    for change in changes:
        if change.listing is not None:
            replace = index.replace_services if change.kind == SERVICES else index.replace_slices
            replace(objs=change.listing)
        elif change.obj is not None:
            apply = index.apply_service if change.kind == SERVICES else index.apply_slice
            apply(event_type=change.event_type, obj=change.obj)
    if changes:
        attributor.changed()


class ServiceWatches:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`take` drains the queue."""

    def __init__(self, *, api: ApiClient) -> None:
        self._api = api
        self.states = [WatchState(name=SERVICES), WatchState(name=SLICES)]
        self._queue: list[IndexChange] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        for state in self.states:
            state.connected, state.last_sync, state.last_error = False, None, ""
        funcs: dict[str, Callable[..., Awaitable[Any]]] = {
            SERVICES: CoreV1Api(self._api).list_service_for_all_namespaces,
            SLICES: DiscoveryV1Api(self._api).list_endpoint_slice_for_all_namespaces,
        }
        self._tasks = [
            asyncio.create_task(
                self._run(state=state, list_func=funcs[state.name]), name=f"watch-{state.name}"
            )
            for state in self.states
        ]

    async def stop(self) -> None:
        """End both watches and drop what they queued (the index is emptied by the caller)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.clear()
        for state in self.states:
            state.connected = False

    def take(self) -> list[IndexChange]:
        """What the watches heard since the last call, in order."""
        queued, self._queue = self._queue, []
        return queued

    def healthy(self, *, max_age_s: float) -> tuple[bool, str]:
        """(healthy, why): both watches connected and heard from lately (True when stopped)."""
        if not self._tasks:
            return True, "ok"
        for state in self.states:
            if not state.healthy(max_age_s=max_age_s):
                return False, state.describe(max_age_s=max_age_s)
        return True, "ok"

    async def _run(self, *, state: WatchState, list_func: Callable[..., Awaitable[Any]]) -> None:
        kind = state.name
        async for item in list_watch(
            list_func=list_func, state=state, timeout_s=WATCH_TIMEOUT_S, backoff_s=BACKOFF_S,
            log=log, convert=raw,
        ):  # fmt: skip
            if isinstance(item, Listing):
                # a listing replaces everything of its kind: what was queued before is moot
                self._queue = [c for c in self._queue if c.kind != kind]
                self._queue.append(IndexChange(kind=kind, listing=item.items))
                log.info("%s listed: %d", kind, len(item.items))
            else:
                self._queue.append(IndexChange(kind=kind, event_type=item.type, obj=item.obj))
