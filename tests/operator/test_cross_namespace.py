"""The cross-namespace rule: a session selects pods in its own namespace only,
unless the operator's --allow-cross-namespace rules allow more."""

from __future__ import annotations

from typing import Any

import pytest

from orb8_common.errors import UsageError
from orb8_operator.main import main
from orb8_operator.reconcile import reconcile_session
from orb8_operator.selectors import CrossNamespacePolicy, refusal_message

from .factories import at, pod

PODS = [
    pod("checkout-1", namespace="shop", node="node-a", labels={"app": "checkout"}, ip="10.0.1.1"),
    pod("coredns-1", namespace="kube-system", node="node-a", labels={"app": "checkout"},
        ip="10.0.1.2"),
]  # fmt: skip


def body(kind: str, namespaces: list[str]) -> dict[str, Any]:
    selector = {"podSelector": {"matchLabels": {"app": "checkout"}}, "namespaces": namespaces}
    spec: dict[str, Any] = {"selector": selector}
    if kind == "TraceSession":
        spec["probes"] = {"network": {"enabled": True}}
    return {
        "metadata": {"uid": "u1", "namespace": "shop", "name": "peek", "generation": 1},
        "spec": spec,
        "status": {},
    }


def test_default_policy_allows_only_the_own_namespace() -> None:
    policy = CrossNamespacePolicy()
    assert policy.allows(session_namespace="shop", namespace="shop")
    assert not policy.allows(session_namespace="shop", namespace="kube-system")
    assert policy.refused(session_namespace="shop", selected=["shop", "b", "a"]) == ("a", "b")


@pytest.mark.parametrize(
    ("rules", "source", "target", "allowed"),
    [
        (["monitoring:shop"], "monitoring", "shop", True),
        (["monitoring:shop"], "monitoring", "kube-system", False),
        (["monitoring:shop"], "shop", "monitoring", False),  # one way only
        (["monitoring:*"], "monitoring", "kube-system", True),
        (["*:shared"], "anyone", "shared", True),
        (["*:shared"], "anyone", "other", False),
        (["*:*"], "a", "b", True),
    ],
)
def test_rules(rules: list[str], source: str, target: str, allowed: bool) -> None:
    policy = CrossNamespacePolicy.parse(rules=rules)
    assert policy.allows(session_namespace=source, namespace=target) is allowed
    again = CrossNamespacePolicy.parse(rules=policy.to_env().split(","))
    assert again == policy


@pytest.mark.parametrize("rule", ["shop", ":shop", "shop:", ""])
def test_malformed_rules_are_usage_errors(rule: str) -> None:
    with pytest.raises(UsageError, match="expected FROM:TO"):
        CrossNamespacePolicy.parse(rules=[rule])


def test_operator_refuses_a_malformed_flag_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--allow-cross-namespace", "shop"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected FROM:TO" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["TraceSession", "GpuTelemetry"])
def test_refused_selection_fails_the_session_and_names_the_field(kind: str) -> None:
    out = reconcile_session(
        kind=kind,  # type: ignore[arg-type]
        body=body(kind, ["shop", "kube-system"]),
        pods=PODS,
        node_labels={},
        now=at(0),
        cross_namespace=CrossNamespacePolicy(),
    )
    assert out.status["phase"] == "Failed"
    assert out.active is None  # nothing reaches any node
    assert out.status["matchedPods"] == 0
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "CrossNamespaceNotAllowed"
    assert ready["message"] == refusal_message(session_namespace="shop", refused=["kube-system"])
    assert ready["message"].startswith("spec.selector.namespaces: ")
    assert out.spec_error == ready["message"]
    assert [e.reason for e in out.events] == ["CrossNamespaceNotAllowed"]


def test_allowed_selection_targets_both_namespaces() -> None:
    out = reconcile_session(
        kind="TraceSession",
        body=body("TraceSession", ["shop", "kube-system"]),
        pods=PODS,
        node_labels={},
        now=at(0),
        cross_namespace=CrossNamespacePolicy.parse(rules=["shop:kube-system"]),
    )
    assert out.spec_error is None and out.status["phase"] == "Pending"
    assert out.active is not None
    assert {p.name for ps in out.active.targets.values() for p in ps} == {
        "checkout-1",
        "coredns-1",
    }


def test_own_namespace_listed_explicitly_needs_nothing() -> None:
    out = reconcile_session(
        kind="TraceSession",
        body=body("TraceSession", ["shop"]),
        pods=PODS,
        node_labels={},
        now=at(0),
        cross_namespace=CrossNamespacePolicy(),
    )
    assert out.spec_error is None and out.status["matchedPods"] == 1
