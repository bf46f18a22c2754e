from __future__ import annotations

from orb8_common.models import (
    GpuTelemetrySpec,
    NodeAgentConfigSpec,
    Selector,
    SessionKind,
    TraceSessionSpec,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
    to_wire,
)
from orb8_operator.nodeconfig import (
    ActiveSession,
    build_node_configs,
    keep_unreconciled,
    node_config_wires,
    plan_node_configs,
    refresh_targets,
)
from orb8_operator.pods import PodEntry

from .factories import pod

TRACE = parse_trace_session_spec({"probes": {"network": {"enabled": True}}, "reportInterval": "5s"})
GPU = parse_gpu_telemetry_spec({"source": {"nvml": {}}, "interval": "30s"})


def session(
    name: str,
    targets: dict[str, tuple[PodEntry, ...]],
    spec: TraceSessionSpec | GpuTelemetrySpec = TRACE,
    namespace: str = "shop",
) -> ActiveSession:
    kind: SessionKind = "TraceSession" if isinstance(spec, TraceSessionSpec) else "GpuTelemetry"
    return ActiveSession(
        uid=f"uid-{name}",
        kind=kind,
        namespace=namespace,
        name=name,
        generation=1,
        spec=spec,
        targets=targets,
    )


A1 = pod("a1", node="node-a", ip="10.0.1.1")
A2 = pod("a2", node="node-a", ip="10.0.1.2")
B1 = pod("b1", node="node-b", ip="10.0.2.1")
C1 = pod("c1", namespace="ml", node="node-c", ip="10.0.3.1")


def test_build_node_configs_groups_sessions_per_node() -> None:
    configs = build_node_configs(
        sessions=[
            session("zeta", {"node-a": (A2, A1), "node-b": (B1,)}),
            session("alpha", {"node-a": (A1,), "node-z": ()}),
            session("train", {"node-c": (C1,)}, spec=GPU, namespace="ml"),
        ]
    )
    assert list(configs) == ["node-a", "node-b", "node-c"]  # node-z has no pods
    node_a = to_wire(configs["node-a"])
    assert node_a["nodeName"] == "node-a"
    assert [s["name"] for s in node_a["sessions"]] == ["alpha", "zeta"]
    zeta = node_a["sessions"][1]
    assert zeta == {
        "uid": "uid-zeta",
        "kind": "TraceSession",
        "namespace": "shop",
        "name": "zeta",
        "generation": 1,
        "podUids": ["uid-shop-a1", "uid-shop-a2"],
    }
    # Each pod once per node, however many sessions select it (a1 is alpha's and zeta's).
    assert node_a["sessions"][0]["podUids"] == ["uid-shop-a1"]
    assert node_a["pods"] == [
        {
            "uid": "uid-shop-a1",
            "namespace": "shop",
            "name": "a1",
            "ips": ["10.0.1.1"],
            "hostNetwork": False,
            "containers": [{"name": "app", "id": "containerd://a1-app"}],
        },
        {
            "uid": "uid-shop-a2",
            "namespace": "shop",
            "name": "a2",
            "ips": ["10.0.1.2"],
            "hostNetwork": False,
            "containers": [{"name": "app", "id": "containerd://a2-app"}],
        },
    ]
    # Read back, every session sees its own pods again.
    parsed = NodeAgentConfigSpec.model_validate(node_a)
    assert [[p.name for p in s.pods] for s in parsed.sessions] == [["a1"], ["a1", "a2"]]
    gpu = to_wire(configs["node-c"])["sessions"][0]
    assert gpu["kind"] == "GpuTelemetry"
    # Settings are not copied per node: agents read them from the session itself.
    assert set(gpu) == {"uid", "kind", "namespace", "name", "generation", "podUids"}


def test_entries_that_list_their_pods_inline_are_read_and_rewritten_once_per_node() -> None:
    """An older operator's shape (pods inside each session) parses, and writes back deduped."""
    pod_a1 = {"uid": "uid-shop-a1", "namespace": "shop", "name": "a1", "ips": ["10.0.1.1"]}
    old = {
        "nodeName": "node-a",
        "sessions": [
            {"uid": "u1", "kind": "TraceSession", "namespace": "shop", "name": "one",
             "pods": [pod_a1]},
            {"uid": "u2", "kind": "TraceSession", "namespace": "shop", "name": "two",
             "pods": [pod_a1]},
        ],
    }  # fmt: skip
    spec = NodeAgentConfigSpec.model_validate(old)
    assert [[p.name for p in s.pods] for s in spec.sessions] == [["a1"], ["a1"]]
    wire = to_wire(spec)
    assert [p["uid"] for p in wire["pods"]] == ["uid-shop-a1"]
    assert [s["podUids"] for s in wire["sessions"]] == [["uid-shop-a1"], ["uid-shop-a1"]]
    assert all("pods" not in s for s in wire["sessions"])


def test_build_is_deterministic_whatever_the_input_order() -> None:
    s1 = session("one", {"node-a": (A1, A2)})
    s2 = session("two", {"node-a": (A2,), "node-b": (B1,)})
    first = {n: to_wire(c) for n, c in build_node_configs(sessions=[s1, s2]).items()}
    s1r = session("one", {"node-a": (A2, A1)})
    second = {n: to_wire(c) for n, c in build_node_configs(sessions=[s2, s1r]).items()}
    assert first == second


def test_plan_create_patch_delete_and_noop() -> None:
    before = build_node_configs(sessions=[session("one", {"node-a": (A1,), "node-b": (B1,)})])
    current = {node: to_wire(spec) for node, spec in before.items()}
    current["node-old"] = {"nodeName": "node-old", "sessions": []}
    desired = build_node_configs(
        sessions=[session("one", {"node-a": (A1, A2), "node-b": (B1,), "node-c": (C1,)})]
    )
    plan = plan_node_configs(desired=desired, current=current)
    assert list(plan.create) == ["node-c"]
    assert plan.create["node-c"]["pods"][0]["name"] == "c1"
    assert plan.create["node-c"]["sessions"][0]["podUids"] == ["uid-ml-c1"]
    assert list(plan.patch) == ["node-a"]
    assert [p["name"] for p in plan.patch["node-a"]["pods"]] == ["a1", "a2"]
    assert plan.delete == ("node-old",)
    assert not plan.empty


def test_plan_ignores_apiserver_defaulting_and_deletes_emptied_nodes() -> None:
    desired = build_node_configs(sessions=[session("one", {"node-a": (A1,)})])
    stored = to_wire(desired["node-a"])
    # The apiserver may leave out defaulted fields; that is not a difference.
    del stored["pods"][0]["hostNetwork"]
    assert plan_node_configs(desired=desired, current={"node-a": stored}).empty
    # The session ends: nothing is left on node-a, so its object goes.
    plan = plan_node_configs(desired=build_node_configs(sessions=[]), current={"node-a": stored})
    assert plan.delete == ("node-a",) and not plan.create and not plan.patch


def test_plan_replaces_an_unparseable_stored_spec() -> None:
    desired = build_node_configs(sessions=[session("one", {"node-a": (A1,)})])
    plan = plan_node_configs(desired=desired, current={"node-a": {"sessions": "garbage"}})
    assert list(plan.patch) == ["node-a"]


def test_keep_unreconciled_carries_over_unknown_sessions_only() -> None:
    stored = build_node_configs(
        sessions=[
            session("known", {"node-a": (A1,)}),
            session("later", {"node-a": (A2,), "node-b": (B1,)}),
            session("gone", {"node-b": (B1,)}),
        ]
    )
    current = {node: to_wire(spec) for node, spec in stored.items()}
    # Right after a restart only "known" has been reconciled; "later" exists, "gone" does not.
    desired = build_node_configs(sessions=[session("known", {"node-a": (A1, A2)})])
    kept = keep_unreconciled(desired=desired, current=current, keep_uids={"uid-later"})
    assert [s.name for s in kept["node-a"].sessions] == ["known", "later"]
    assert [p.name for p in kept["node-a"].sessions[0].pods] == ["a1", "a2"]
    assert [s.name for s in kept["node-b"].sessions] == ["later"]
    plan = plan_node_configs(desired=kept, current=current)
    assert list(plan.patch) == ["node-a", "node-b"] and plan.delete == ()


def test_a_session_spanning_many_nodes_costs_each_node_only_its_pods() -> None:
    many: dict[str, tuple[PodEntry, ...]] = {
        f"node-{i:02d}": (pod(f"p{i}", node=f"node-{i:02d}"),) for i in range(10)
    }
    configs = build_node_configs(sessions=[session("wide", many)])
    wires = [to_wire(c) for c in configs.values()]
    assert len(wires) == 10
    assert all(len(w["pods"]) == 1 and len(w["sessions"][0]["podUids"]) == 1 for w in wires)
    assert all("probes" not in w["sessions"][0] for w in wires)


def test_refresh_targets_walks_only_sessions_in_changed_namespaces() -> None:
    shop = session("shop-all", {"node-a": (A1,)})
    ml = session("ml-all", {"node-c": (C1,)}, namespace="ml")
    walked: list[frozenset[str]] = []

    def pods_in(selector: Selector, namespaces: frozenset[str]) -> list[PodEntry]:
        walked.append(namespaces)
        return [p for p in (A1, A2, B1, C1) if p.namespace in namespaces]

    refreshed = refresh_targets(
        sessions={shop.uid: shop, ml.uid: ml}, changed_namespaces={"shop"}, pods_in=pods_in,
        node_labels={},
    )  # fmt: skip
    assert walked == [frozenset({"shop"})]
    assert refreshed[shop.uid].targets == {"node-a": (A1, A2), "node-b": (B1,)}
    assert refreshed[ml.uid] is ml


def test_cached_wires_equal_the_models_serialisation() -> None:
    """The cached per-session entries the sync loop compares are exactly the models' wire form."""
    sessions = [
        session("zeta", {"node-a": (A2, A1), "node-b": (B1,)}),
        session("train", {"node-c": (C1,)}, spec=GPU, namespace="ml"),
    ]
    expected = {n: to_wire(c) for n, c in build_node_configs(sessions=sessions).items()}
    assert node_config_wires(sessions=sessions) == expected
    assert node_config_wires(sessions=list(reversed(sessions))) == expected
    plan = plan_node_configs(desired=node_config_wires(sessions=sessions), current=expected)
    assert plan.empty
