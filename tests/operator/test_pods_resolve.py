from __future__ import annotations

import pytest

from orb8_common.models import Selector
from orb8_operator.pods import is_target, node_index_value, pod_entry_from_body
from orb8_operator.resolve import count_pods, resolve_targets

from .factories import pod, pod_body


def test_pod_entry_from_body_is_small_and_hashable() -> None:
    body = pod_body(
        "checkout-1",
        labels={"tier": "web", "app": "checkout"},
        containers={"app": "containerd://aa", "sidecar": None},
    )
    body["status"]["podIPs"] = [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]
    body["status"]["initContainerStatuses"] = [{"name": "init", "containerID": "containerd://ii"}]
    entry = pod_entry_from_body(body=body)
    assert entry is not None
    assert entry.uid == "uid-shop-checkout-1"
    assert (entry.namespace, entry.name, entry.node, entry.phase) == (
        "shop",
        "checkout-1",
        "node-a",
        "Running",
    )
    assert entry.labels == (("app", "checkout"), ("tier", "web"))
    assert entry.label_map == {"app": "checkout", "tier": "web"}
    assert entry.ips == ("10.244.1.5", "fd00::5")
    # The sidecar has no containerID yet, so it is left out until it has one.
    assert entry.containers == (("app", "containerd://aa"), ("init", "containerd://ii"))
    assert hash(entry) == hash(pod_entry_from_body(body=body))


def test_pod_entry_needs_identity() -> None:
    assert pod_entry_from_body(body={"metadata": {"name": "x"}}) is None
    assert pod_entry_from_body(body={}) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"phase": "Pending"}, True),  # sandbox up, IP assigned: init containers are traced
        ({"phase": "Pending", "ip": None}, False),
        ({"node": None, "phase": "Pending", "ip": None}, False),
        ({"node": None}, False),
        ({"phase": "Succeeded"}, False),
        ({"phase": "Failed"}, False),
        ({"deleting": True}, False),
        ({"host_network": True, "ip": None}, True),
        ({"ip": None}, False),
    ],
)
def test_is_target(kwargs: dict[str, object], expected: bool) -> None:
    assert is_target(pod=pod("p", **kwargs)) is expected


def test_resolve_three_nodes_mixed_pods() -> None:
    pods = [
        pod("checkout-1", node="node-a", labels={"app": "checkout"}, ip="10.0.1.1"),
        pod("checkout-2", node="node-b", labels={"app": "checkout"}, ip="10.0.2.1"),
        pod("checkout-0", node="node-b", labels={"app": "checkout"}, ip="10.0.2.2"),
        pod("checkout-3", node="node-c", labels={"app": "checkout"}, ip="10.0.3.1"),
        # not targets:
        pod("cart-1", node="node-a", labels={"app": "cart"}),
        pod("checkout-x", namespace="other", node="node-a", labels={"app": "checkout"}),
        pod("checkout-done", node="node-c", labels={"app": "checkout"}, phase="Succeeded"),
        pod("checkout-new", node=None, labels={"app": "checkout"}, phase="Pending", ip=None),
        pod("checkout-bye", node="node-a", labels={"app": "checkout"}, deleting=True),
    ]
    selector = Selector.model_validate({"podSelector": {"matchLabels": {"app": "checkout"}}})
    targets = resolve_targets(
        selector=selector, session_namespace="shop", pods=pods, node_labels={}
    )
    assert list(targets) == ["node-a", "node-b", "node-c"]
    assert [p.name for p in targets["node-a"]] == ["checkout-1"]
    assert [p.name for p in targets["node-b"]] == ["checkout-0", "checkout-2"]
    assert [p.name for p in targets["node-c"]] == ["checkout-3"]
    assert count_pods(targets=targets) == 4


def test_resolve_node_selector_and_namespaces() -> None:
    node_labels = {"node-a": {"gpu": "true"}, "node-b": {"gpu": "false"}}
    pods = [
        pod("a", namespace="ml", node="node-a"),
        pod("b", namespace="ml", node="node-b"),
        pod("c", namespace="shop", node="node-a"),
        pod("d", namespace="ml", node="node-unknown"),  # labels not indexed yet
        pod("e", namespace="web", node="node-a"),
    ]
    selector = Selector.model_validate(
        {"namespaces": ["ml", "shop"], "nodeSelector": {"gpu": "true"}}
    )
    targets = resolve_targets(
        selector=selector, session_namespace="ignored", pods=pods, node_labels=node_labels
    )
    assert {n: [p.name for p in ps] for n, ps in targets.items()} == {"node-a": ["a", "c"]}


def test_resolve_counts_a_pod_once() -> None:
    entry = pod("a")
    targets = resolve_targets(
        selector=Selector(), session_namespace="shop", pods=[entry, entry], node_labels={}
    )
    assert count_pods(targets=targets) == 1


def test_node_index_values() -> None:
    node = {"metadata": {"name": "node-a", "labels": {"zone": "b", "gpu": "true"}}}
    assert node_index_value(body=node) == {"node-a": (("gpu", "true"), ("zone", "b"))}
    assert node_index_value(body={"metadata": {}}) == {}
