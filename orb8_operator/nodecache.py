"""The operator's view of every NodeAgentConfig: its spec (to compare before
writing) and the agent's reports in its status (to merge into sessions).

One list-then-watch keeps it, like the pod cache. Each agent writes one
status patch per interval, so the watch delivers O(nodes) events per
interval; each is parsed once with the orb8_common models and indexed by
session uid.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kubernetes_asyncio import client, watch
from pydantic import ValidationError

from orb8_common.crd import GROUP, NODE_AGENT_CONFIGS, VERSION
from orb8_common.models import SessionReport
from orb8_common.watchstate import WatchState

_log = logging.getLogger("orb8.operator.nodeconfigs")
WATCH_TIMEOUT_S = 270
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
MANAGED_LABEL = ("app.kubernetes.io/managed-by", "orb8-operator")


def parse_reports(*, status: Mapping[str, Any]) -> tuple[dict[str, SessionReport], list[str]]:
    """uid → report from one NodeAgentConfig's status; malformed reports are skipped and named."""
    out: dict[str, SessionReport] = {}
    problems: list[str] = []
    raw = status.get("reports")
    for index, item in enumerate(raw if isinstance(raw, list) else ()):
        try:
            report = SessionReport.model_validate(item)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            problems.append(f"status.reports[{index}]: {where}: {first['msg']}")
            continue
        out[report.uid] = report
    return out, problems


class NodeConfigCache:
    """node → spec (raw, as stored) and node → uid → the agent's latest report."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}  # managed objects only
        self._reports: dict[str, dict[str, SessionReport]] = {}  # node → uid → report
        self._by_uid: dict[str, dict[str, SessionReport]] = {}  # uid → node → report
        self._changed: set[str] = set()  # session uids whose reports changed
        self.problems: dict[str, list[str]] = {}
        self.ready = asyncio.Event()
        self.watch = WatchState(name="nodeagentconfigs")  # for /readyz and /metrics

    def reports_for(self, *, uid: str) -> dict[str, SessionReport]:
        """node → the report of session ``uid`` from every agent that serves it."""
        return {node: reports[uid] for node, reports in self._reports.items() if uid in reports}

    def take_changed(self) -> set[str]:
        """Session uids whose reports changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def apply(self, *, event_type: str, body: Mapping[str, Any]) -> bool:
        """Fold one watch event in; True when a spec or a report changed."""
        meta = body.get("metadata") or {}
        node = meta.get("name")
        if not isinstance(node, str):
            return False
        if event_type == "DELETED":
            return self._drop(node)
        changed = False
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1]:
            spec = dict(body.get("spec") or {})
            changed = self.specs.get(node) != spec
            self.specs[node] = spec
        else:
            self.specs.pop(node, None)
        reports, problems = parse_reports(status=body.get("status") or {})
        old = self._reports.get(node, {})
        moved = {u for u in set(old) | set(reports) if old.get(u) != reports.get(u)}
        if moved:
            self._changed |= moved
            self._index(node, old, reports)
            self._reports[node] = reports
            changed = True
        self.problems[node] = problems
        return changed

    def _index(
        self, node: str, old: Mapping[str, SessionReport], new: Mapping[str, SessionReport]
    ) -> None:
        for uid in set(old) - set(new):
            per_node = self._by_uid.get(uid, {})
            per_node.pop(node, None)
            if not per_node:
                self._by_uid.pop(uid, None)
        for uid, report in new.items():
            self._by_uid.setdefault(uid, {})[node] = report

    def _drop(self, node: str) -> bool:
        gone = self._reports.pop(node, {})
        self._index(node, gone, {})
        self._changed |= set(gone)
        self.problems.pop(node, None)
        return self.specs.pop(node, None) is not None or bool(gone)

    def replace(self, *, bodies: Collection[Mapping[str, Any]]) -> None:
        names = {(b.get("metadata") or {}).get("name") for b in bodies}
        for node in set(self._reports) | set(self.specs):
            if node not in names:
                self._drop(node)
        for body in bodies:
            self.apply(event_type="ADDED", body=body)

    async def run(self, *, api: client.ApiClient, on_change: Callable[[], None]) -> None:
        """List, then watch from the listed version; relist after any error. Never returns."""
        objects = client.CustomObjectsApi(api)
        failures = 0
        while True:
            try:
                listing = await objects.list_cluster_custom_object(
                    GROUP, VERSION, NODE_AGENT_CONFIGS
                )
                self.watch.synced()
                self.replace(bodies=listing.get("items") or [])
                on_change()
                self.ready.set()
                version = listing["metadata"]["resourceVersion"]
                failures = 0
                async with watch.Watch() as stream:
                    async for event in stream.stream(
                        objects.list_cluster_custom_object, GROUP, VERSION, NODE_AGENT_CONFIGS,
                        resource_version=version, timeout_seconds=WATCH_TIMEOUT_S,
                        allow_watch_bookmarks=True, _request_timeout=WATCH_TIMEOUT_S + 30,
                    ):  # fmt: skip
                        self.watch.synced()
                        kind = event["type"]
                        if kind == "ERROR":
                            break  # 410 Gone and friends: relist
                        if kind != "BOOKMARK" and self.apply(
                            event_type=kind, body=event["raw_object"]
                        ):
                            on_change()
            except Exception as err:  # aiohttp payload errors too (a cut stream): relist
                self.watch.lost(error=err)
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                _log.warning("nodeagentconfig watch failed (%s); relisting in %.0fs", err, delay)
                await asyncio.sleep(delay)
