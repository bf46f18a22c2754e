"""Per-node agent configuration: build the desired NodeAgentConfig specs from
all active sessions, and plan the writes that bring the cluster there.

The builder is a pure function of *all* active sessions, so a caller must
have seen every session (e.g. after the initial listing) before it acts on a
plan's deletions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from pydantic import ValidationError

from orb8_common.models import (
    AgentContainer,
    AgentPod,
    AgentSession,
    GpuTelemetrySpec,
    NodeAgentConfigSpec,
    Selector,
    SessionKind,
    TraceSessionSpec,
    to_wire,
)
from orb8_operator.pods import PodEntry
from orb8_operator.resolve import resolve_targets
from orb8_operator.selectors import resolve_namespaces

__all__ = [
    "ActiveSession",
    "NodeConfigPlan",
    "agent_pod",
    "agent_session",
    "build_node_configs",
    "canonical_json",
    "keep_unreconciled",
    "node_config_texts",
    "node_config_wires",
    "plan_node_configs",
]


@dataclass(frozen=True)
class ActiveSession:
    """A session the agents should serve now, with its resolved targets."""

    uid: str
    kind: SessionKind
    namespace: str
    name: str
    generation: int
    spec: TraceSessionSpec | GpuTelemetrySpec
    targets: Mapping[str, tuple[PodEntry, ...]]

    @functools.cached_property
    def node_entries(self) -> dict[str, NodeEntryText]:
        """node → this session's entry in that node's spec (wire, canonical JSON, pods).

        Built once per object: the operator keeps an unchanged session's
        object, so a full comparison of every node's spec serialises only
        the sessions that changed since the last one.
        """
        out = {}
        for node, pods in self.targets.items():
            if node and pods:
                ordered = sorted(pods, key=lambda p: (p.namespace, p.name, p.uid))
                out[node] = session_entry(session=self, pods=ordered)
        return out


@dataclass(frozen=True)
class NodeConfigPlan:
    """Writes needed: full specs to create or replace, and node names to delete."""

    create: dict[str, dict[str, Any]] = field(default_factory=dict)
    patch: dict[str, dict[str, Any]] = field(default_factory=dict)
    delete: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.create or self.patch or self.delete)


def agent_pod(*, pod: PodEntry) -> AgentPod:
    return AgentPod(
        uid=pod.uid,
        namespace=pod.namespace,
        name=pod.name,
        ips=pod.ips,
        host_network=pod.host_network,
        containers=tuple(AgentContainer(name=n, id=cid) for n, cid in pod.containers),
    )


def agent_session(*, session: ActiveSession, pods: Iterable[PodEntry]) -> AgentSession:
    """The entry one node's agent gets for ``session``: who it is and that node's pods.

    No settings: the agent reads those from the session object (once per
    generation), so a session's settings are stored once, not once per node.
    """
    rows = tuple(agent_pod(pod=p) for p in sorted(pods, key=lambda p: (p.namespace, p.name, p.uid)))
    return AgentSession(
        uid=session.uid,
        kind=session.kind,
        namespace=session.namespace,
        name=session.name,
        generation=session.generation,
        pod_uids=tuple(row.uid for row in rows),
        pods=rows,
    )


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal specs give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 16)
def pod_entry_wire(pod: PodEntry) -> tuple[dict[str, Any], str]:
    """``to_wire(agent_pod(pod))`` and its canonical JSON, once per pod state.

    A pod selected by several sessions is serialised once; callers never
    modify the returned dict.
    """
    wire = to_wire(agent_pod(pod=pod))
    return wire, canonical_json(wire)


class NodeEntryText(NamedTuple):
    """One session's entry in one node's spec, serialised once."""

    wire: dict[str, Any]  # to_wire of the AgentSession (podUids, no pods)
    text: str  # canonical_json(wire)
    pods: tuple[PodEntry, ...]  # the pods it names, for the node's pod list


def session_entry(*, session: ActiveSession, pods: Sequence[PodEntry]) -> NodeEntryText:
    """``to_wire(agent_session(...))`` and its canonical JSON, without serialising pods."""
    wire = to_wire(agent_session(session=session, pods=()))
    wire["podUids"] = [p.uid for p in pods]
    return NodeEntryText(wire, canonical_json(wire), tuple(pods))


def _node_spec(node: str, entries: Sequence[NodeEntryText]) -> tuple[dict[str, Any], str]:
    """A node's spec wire form and its canonical JSON, from its sessions' entries: each pod
    once, in (namespace, name, uid) order, as :class:`NodeAgentConfigSpec` writes it."""
    unique = {p.uid: p for entry in entries for p in entry.pods}
    pods = [pod_entry_wire(p) for p in sorted(unique.values(), key=_pod_order)]
    wire = {
        "nodeName": node,
        "pods": [w for w, _ in pods],
        "sessions": [entry.wire for entry in entries],
    }
    text = (
        f'{{"nodeName":{json.dumps(node)},"pods":[{",".join(t for _, t in pods)}],'
        f'"sessions":[{",".join(entry.text for entry in entries)}]}}'
    )
    return wire, text


def _pod_order(pod: PodEntry) -> tuple[str, str, str]:
    return (pod.namespace, pod.name, pod.uid)


def node_config_wires(*, sessions: Iterable[ActiveSession]) -> dict[str, dict[str, Any]]:
    """``to_wire`` of :func:`build_node_configs`, from each session's cached entries."""
    return {node: wire for node, (wire, _) in node_config_texts(sessions=sessions).items()}


def node_config_texts(
    *, sessions: Iterable[ActiveSession]
) -> dict[str, tuple[dict[str, Any], str]]:
    """node → (its spec's wire form, that spec's canonical JSON), from cached entries.

    The periodic full comparison rebuilds every node's spec; only sessions
    that changed since are serialised again. The text equals
    ``canonical_json`` of the wire form.
    """
    per_node: dict[str, list[NodeEntryText]] = {}
    for session in sorted(sessions, key=lambda s: (s.namespace, s.name, s.uid)):
        for node, entry in session.node_entries.items():
            per_node.setdefault(node, []).append(entry)
    return {node: _node_spec(node, per_node[node]) for node in sorted(per_node)}


def build_node_configs(*, sessions: Iterable[ActiveSession]) -> dict[str, NodeAgentConfigSpec]:
    """One spec per node that has at least one target pod, in node-name order.

    Sessions are ordered by (namespace, name, uid), pods by (namespace, name,
    uid), so equal inputs always give byte-identical specs.
    """
    per_node: dict[str, list[AgentSession]] = {}
    ordered = sorted(sessions, key=lambda s: (s.namespace, s.name, s.uid))
    for session in ordered:
        for node, pods in session.targets.items():
            if node and pods:
                per_node.setdefault(node, []).append(agent_session(session=session, pods=pods))
    return {
        node: NodeAgentConfigSpec(node_name=node, sessions=tuple(per_node[node]))
        for node in sorted(per_node)
    }


def _stored(raw: Mapping[str, Any] | str) -> NodeAgentConfigSpec:
    if isinstance(raw, str):
        return NodeAgentConfigSpec.model_validate_json(raw)
    return NodeAgentConfigSpec.model_validate(raw)


def _normalise(raw: Mapping[str, Any] | str) -> str | None:
    # Parse and re-serialise so defaults the apiserver filled in compare equal.
    try:
        return canonical_json(to_wire(_stored(raw)))
    except ValidationError:
        return None


def plan_node_configs(
    *,
    desired: Mapping[str, NodeAgentConfigSpec] | Mapping[str, dict[str, Any]],
    current: Mapping[str, Mapping[str, Any] | str],
    desired_texts: Mapping[str, str] | None = None,
) -> NodeConfigPlan:
    """Compare desired specs with the existing objects' specs (node → raw spec, or its
    :func:`canonical_json` text).

    Nodes missing from ``current`` are created, differing ones replaced
    (``patch`` carries the whole new spec), and existing objects no session
    needs any more are deleted. ``desired_texts``: the canonical JSON of each
    desired spec, when the caller has it (see :func:`node_config_texts`).
    """
    create: dict[str, dict[str, Any]] = {}
    patch: dict[str, dict[str, Any]] = {}
    for node, spec in desired.items():
        wire = to_wire(spec) if isinstance(spec, NodeAgentConfigSpec) else spec
        if node not in current:
            create[node] = wire
            continue
        text = (desired_texts or {}).get(node) or canonical_json(wire)
        stored = current[node]
        stored_text = stored if isinstance(stored, str) else canonical_json(stored)
        if stored_text != text and _normalise(stored) != text:
            patch[node] = wire
    delete = tuple(sorted(node for node in current if node not in desired))
    return NodeConfigPlan(create=create, patch=patch, delete=delete)


def keep_unreconciled(
    *,
    desired: Mapping[str, NodeAgentConfigSpec],
    current: Mapping[str, Mapping[str, Any] | str],
    keep_uids: Collection[str],
) -> dict[str, NodeAgentConfigSpec]:
    """Carry over stored entries of sessions that exist but have not been reconciled yet.

    Right after the operator starts, only some sessions are known; without
    this, the first sync would strip the others from the agents for a moment.
    """
    known = {s.uid for spec in desired.values() for s in spec.sessions}
    out = dict(desired)
    for node in sorted(current):
        try:
            stored = _stored(current[node])
        except ValidationError:
            continue
        carried = [s for s in stored.sessions if s.uid in keep_uids and s.uid not in known]
        if not carried:
            continue
        base = out.get(node)
        sessions = [*(base.sessions if base else ()), *carried]
        sessions.sort(key=lambda s: (s.namespace, s.name, s.uid))
        out[node] = NodeAgentConfigSpec(node_name=node, sessions=tuple(sessions))
    return dict(sorted(out.items()))


def refresh_targets(
    *,
    sessions: Mapping[str, ActiveSession],
    changed_namespaces: Set[str],
    pods_in: Callable[[Selector, frozenset[str]], Iterable[PodEntry]],
    node_labels: Mapping[str, Mapping[str, str]],
) -> dict[str, ActiveSession]:
    """Re-resolve the targets of sessions that select from namespaces whose pods changed.

    This lets a new or relabelled pod reach the agents without waiting for its
    session's next timer tick; sessions in other namespaces are not walked.
    ``pods_in(selector, namespaces)`` returns at least the pods of
    ``namespaces`` the selector matches (e.g. :meth:`PodCache.candidates`).
    """
    refreshed = dict(sessions)
    for uid, session in sessions.items():
        namespaces = resolve_namespaces(
            selector=session.spec.selector, session_namespace=session.namespace
        )
        if not namespaces & changed_namespaces:
            continue
        targets = resolve_targets(
            selector=session.spec.selector, session_namespace=session.namespace,
            pods=pods_in(session.spec.selector, namespaces), node_labels=node_labels,
        )  # fmt: skip
        if targets != session.targets:
            refreshed[uid] = replace(session, targets=targets)
    return refreshed
