"""The operator's view of every NodeAgentConfig: its spec (to compare before
writing) and the agent's reports in its status (to merge into sessions).

One list-then-watch keeps it, like the pod cache. Each agent writes one
status patch per interval, so the watch delivers O(nodes) events per
interval; each report is validated once with the orb8_common models when it
arrives and indexed by session uid.

Kept compact, because this cache is most of the operator's memory when
every node serves every session: a spec as its canonical JSON text (read
again only when its ``metadata.generation`` moves), a report as its compact
JSON text plus its state; a report is parsed again (``model_validate_json``)
only when its session is merged, once per report interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from kubernetes_asyncio import client
from pydantic import ValidationError

from orb8_common.crd import GROUP, NODE_AGENT_CONFIGS, VERSION
from orb8_common.listwatch import Listing, list_watch, raw
from orb8_common.models import NodeAgentConfigSpec, SessionKind, SessionReport
from orb8_common.watchstate import WatchState
from orb8_operator.nodeconfig import canonical_json

_log = logging.getLogger("orb8.operator.nodeconfigs")
WATCH_TIMEOUT_S = 270
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
MANAGED_LABEL = ("app.kubernetes.io/managed-by", "orb8-operator")


class KeptReport(NamedTuple):
    """A validated report as kept between merges: what picking needs, and its JSON text."""

    kind: SessionKind
    state: str  # the entry's state ("" when the entry is missing)
    text: str  # compact JSON of the report as the agent wrote it

    def parse(self) -> SessionReport:
        return SessionReport.model_validate_json(self.text)


def keep_reports(*, status: Mapping[str, Any]) -> tuple[dict[str, KeptReport], list[str]]:
    """uid → kept report from one NodeAgentConfig's status; malformed reports are skipped
    and named."""
    out: dict[str, KeptReport] = {}
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
        entry = report.entry
        text = json.dumps(item, separators=(",", ":"))
        out[report.uid] = KeptReport(report.kind, entry.state if entry else "", text)
    return out, problems


def _session_uids(text: str) -> frozenset[str]:
    try:
        spec = NodeAgentConfigSpec.model_validate_json(text)
    except ValidationError:
        return frozenset()
    return frozenset(session.uid for session in spec.sessions)


class NodeConfigCache:
    """node → spec (canonical JSON, as stored) and node → uid → the agent's latest report."""

    def __init__(self) -> None:
        self.specs: dict[str, str] = {}  # managed objects only: canonical JSON of the spec
        self.session_uids: dict[str, frozenset[str]] = {}  # node → the sessions its spec names
        self._generations: dict[str, int] = {}  # node → metadata.generation of that spec
        self._reports: dict[str, dict[str, KeptReport]] = {}  # node → uid → report
        self._by_uid: dict[str, dict[str, KeptReport]] = {}  # uid → node → report
        self._changed: set[str] = set()  # session uids whose reports changed
        self.problems: dict[str, list[str]] = {}
        self.ready = asyncio.Event()
        self.watch = WatchState(name="nodeagentconfigs")  # for /readyz and /metrics

    def put_spec(
        self,
        *,
        node: str,
        spec: Mapping[str, Any] | None,
        uids: Collection[str] = (),
        text: str | None = None,
    ) -> None:
        """Record what was just written (None: deleted) and the session uids it names;
        the watch confirms it later. ``text``: the spec's canonical JSON, when the
        caller has it (it wrote that text)."""
        if spec is None:
            self.specs.pop(node, None)
            self.session_uids.pop(node, None)
        else:
            self.specs[node] = text if text is not None else canonical_json(spec)
            self.session_uids[node] = frozenset(uids)
        self._generations.pop(node, None)

    def nodes_naming(self, *, uids: Collection[str]) -> set[str]:
        """Nodes whose stored spec names any of ``uids``."""
        wanted = set(uids)
        return {node for node, named in self.session_uids.items() if named & wanted}

    def reports_for(self, *, uid: str) -> dict[str, SessionReport]:
        """node → the report of session ``uid`` from every agent that serves it.

        Parsed from the kept text on each call; a text that no longer parses
        (it was validated on arrival) is left out.
        """
        out = {}
        for node, kept in self._by_uid.get(uid, {}).items():
            try:
                out[node] = kept.parse()
            except ValidationError:
                continue
        return out

    def states_for(self, *, uid: str) -> dict[str, str]:
        """node → the state each agent reports for session ``uid`` (no parsing)."""
        return {node: kept.state for node, kept in self._by_uid.get(uid, {}).items()}

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
            generation = meta.get("generation")
            # A status write leaves the generation alone: the spec is the one we hold.
            if not (isinstance(generation, int) and self._generations.get(node) == generation
                    and node in self.specs):  # fmt: skip
                spec = canonical_json(body.get("spec") or {})
                changed = self.specs.get(node) != spec
                if changed or node not in self.session_uids:
                    # Our own write comes back as the text put_spec recorded, with its
                    # uids: a whole spec is parsed only when someone else changed it.
                    self.session_uids[node] = _session_uids(spec)
                self.specs[node] = spec
                if isinstance(generation, int):
                    self._generations[node] = generation
        else:
            self.specs.pop(node, None)
            self.session_uids.pop(node, None)
            self._generations.pop(node, None)
        reports, problems = keep_reports(status=body.get("status") or {})
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
        self, node: str, old: Mapping[str, KeptReport], new: Mapping[str, KeptReport]
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
        self._generations.pop(node, None)
        self.session_uids.pop(node, None)
        return self.specs.pop(node, None) is not None or bool(gone)

    def replace(self, *, bodies: Collection[Mapping[str, Any]]) -> None:
        names = {(b.get("metadata") or {}).get("name") for b in bodies}
        for node in set(self._reports) | set(self.specs):
            if node not in names:
                self._drop(node)
        for body in bodies:
            self.apply(event_type="ADDED", body=body)

    async def run(self, *, api: client.ApiClient, on_change: Callable[[], None]) -> None:
        """List, then watch from the listed version, resuming from the last version seen;
        relist after 410 Gone (orb8_common.listwatch). Never returns."""
        async for item in list_watch(
            list_func=client.CustomObjectsApi(api).list_cluster_custom_object,
            args=(GROUP, VERSION, NODE_AGENT_CONFIGS), state=self.watch,
            timeout_s=WATCH_TIMEOUT_S, backoff_s=BACKOFF_S, log=_log, what="nodeagentconfigs",
            convert=raw,
        ):  # fmt: skip
            if isinstance(item, Listing):
                self.replace(bodies=item.items)
                on_change()
                self.ready.set()
            elif self.apply(event_type=item.type, body=item.obj):
                on_change()
