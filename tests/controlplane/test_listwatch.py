"""orb8_common.listwatch against the real kube-apiserver, through the fault proxy.

An idle collection is the hard case for readiness: after a cut, the resumed
watch gets no event until the apiserver's next bookmark (about a minute), so a
loop that counted itself synced only at an event stayed unready that long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from orb8_common.listwatch import Listing, list_watch, raw
from orb8_common.watchstate import WatchState
from orb8_dev.controlplane import ControlPlane
from orb8_dev.faultproxy import FaultProxy

# well under the apiserver's bookmark interval (~60 s): a loop that waited for an
# event to count itself synced again could not meet it on an idle collection
RESYNC_DEADLINE_S = 20.0


async def _until(predicate: Callable[[], object], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def idle_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"lw-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("-n", name, "create", "configmap", "still", "--from-literal=k=v")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


async def test_a_resumed_watch_of_an_idle_collection_is_ready_without_waiting_for_an_event(
    control_plane: ControlPlane, idle_namespace: str, tmp_path: Path
) -> None:
    proxy = FaultProxy(plane=control_plane, state_dir=tmp_path).start()
    state = WatchState(name="configmaps")
    listings: list[Listing[dict[str, object]]] = []
    try:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(proxy.kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api:
            core = client.CoreV1Api(api)

            async def follow() -> None:
                async for item in list_watch(
                    list_func=core.list_namespaced_config_map, args=(idle_namespace,),
                    state=state, timeout_s=600, backoff_s=(0.2, 0.5, 1.0),
                    log=logging.getLogger("test.listwatch"), convert=raw,
                ):  # fmt: skip
                    if isinstance(item, Listing):
                        listings.append(item)

            task = asyncio.create_task(follow())
            try:
                await _until(lambda: listings and state.connected, within_s=60,
                             what="the first listing")  # fmt: skip
                assert [i["metadata"]["name"] for i in listings[0].items] == ["still"]  # type: ignore[index]

                # the watch is streaming before the cut is set: it must be cut all the same
                await _until(lambda: proxy.faults.watches_streaming >= 1, within_s=60,
                             what="the watch to begin")  # fmt: skip
                proxy.set(cut_watches_after_s=0.5)
                # A counter, not the connected flag: the loop may resume between two polls.
                await _until(lambda: proxy.faults.cut >= 1 and state.reconnects >= 1,
                             within_s=60, what="a cut watch to mark the loop lost")  # fmt: skip
                proxy.set(cut_watches_after_s=None)
                cleared = time.monotonic()
                await _until(lambda: state.connected, within_s=RESYNC_DEADLINE_S,
                             what="the resumed watch to count as synced")  # fmt: skip
                resynced_s = time.monotonic() - cleared
                assert not task.done(), task
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        proxy.close()

    # resumed from its version: one listing, however often the watch was cut
    lists = [t for m, t in proxy.requests() if m == "GET" and "watch=" not in t
             and f"/namespaces/{idle_namespace}/configmaps" in t]  # fmt: skip
    assert len(lists) == 1, json.dumps(proxy.requests(), indent=1)
    assert len(listings) == 1
    print(f"resynced {resynced_s:.2f}s after the faults stopped")
