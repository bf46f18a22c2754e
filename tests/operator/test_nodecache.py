"""The operator's NodeAgentConfig cache: which sessions each stored spec names."""

from __future__ import annotations

from typing import Any

from orb8_operator.nodecache import MANAGED_LABEL, NodeConfigCache
from orb8_operator.nodeconfig import canonical_json


def _spec(node: str, *uids: str) -> dict[str, Any]:
    return {
        "nodeName": node,
        "pods": [{"uid": "pod-1", "namespace": "shop", "name": "web-1"}],
        "sessions": [
            {"uid": uid, "kind": "TraceSession", "namespace": "shop", "name": uid,
             "generation": 1, "podUids": ["pod-1"]}
            for uid in uids
        ],
    }  # fmt: skip


def _event(node: str, spec: dict[str, Any], generation: int) -> dict[str, Any]:
    return {
        "metadata": {"name": node, "generation": generation,
                     "labels": {MANAGED_LABEL[0]: MANAGED_LABEL[1]}},
        "spec": spec,
    }  # fmt: skip


def test_our_own_write_coming_back_keeps_the_sessions_it_names() -> None:
    cache = NodeConfigCache()
    spec = _spec("node-a", "s1", "s2")
    cache.put_spec(node="node-a", spec=spec, uids={"s1", "s2"}, text=canonical_json(spec))
    assert not cache.apply(event_type="MODIFIED", body=_event("node-a", spec, generation=2))
    assert cache.session_uids["node-a"] == {"s1", "s2"}
    assert cache.nodes_naming(uids={"s2"}) == {"node-a"}
    assert cache.specs["node-a"] == canonical_json(spec)


def test_a_spec_someone_else_changed_is_read_for_the_sessions_it_names() -> None:
    cache = NodeConfigCache()
    ours = _spec("node-a", "s1")
    cache.put_spec(node="node-a", spec=ours, uids={"s1"}, text=canonical_json(ours))
    theirs = _spec("node-a", "s3")
    assert cache.apply(event_type="MODIFIED", body=_event("node-a", theirs, generation=3))
    assert cache.session_uids["node-a"] == {"s3"}
    assert cache.nodes_naming(uids={"s1"}) == set()


def test_a_listed_spec_is_read_for_the_sessions_it_names() -> None:
    cache = NodeConfigCache()
    cache.replace(bodies=[_event("node-b", _spec("node-b", "s4"), generation=1)])
    assert cache.session_uids["node-b"] == {"s4"}
    assert cache.nodes_naming(uids={"s4", "other"}) == {"node-b"}
