"""A session selects pods only in its own namespace unless the operator allows more."""

from __future__ import annotations

import json
import secrets
import signal
from pathlib import Path
from typing import Any

from orb8_common.models import NodeAgentConfigSpec
from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import wait_for
from tests.e2e.test_trace_session import SHOP, apply_session, status


def _config_pods(plane: ControlPlane, node: str, namespaces: set[str]) -> set[tuple[str, str]]:
    """The pods of ``namespaces`` in the node's config (other tests share node names)."""
    result = plane.kubectl("get", "nac", node, "-o", "json", check=False)
    if result.returncode != 0:
        return set()
    spec = NodeAgentConfigSpec.model_validate(json.loads(result.stdout)["spec"])
    return {
        (p.namespace, p.name) for s in spec.sessions if s.namespace in namespaces for p in s.pods
    }


def _ready(st: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})


def test_cross_namespace_selection_needs_the_operators_consent(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, start_operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    other = f"e2e-other-{secrets.token_hex(4)}"
    mine = {namespace, other}
    control_plane.kubectl("create", "namespace", other)
    kubelet.add_node(name="node-a")
    kubelet.run_pod(namespace=other, name="victim", node="node-a", labels=SHOP)
    kubelet.run_pod(namespace=namespace, name="own", node="node-a", labels=SHOP)

    operator = start_operator()
    apply_session(
        control_plane, namespace, "peek", selector={
            "podSelector": {"matchLabels": SHOP}, "namespaces": [namespace, other]},
    )  # fmt: skip
    st = wait_for(lambda: (s := status(control_plane, namespace, "peek")).get("phase") == "Failed"
                  and s, timeout=60, what="the session refused")  # fmt: skip
    ready = _ready(st)
    assert ready["reason"] == "CrossNamespaceNotAllowed"
    assert ready["message"].startswith("spec.selector.namespaces: ")
    assert (
        other in ready["message"]
        and f"--allow-cross-namespace {namespace}:{other}" in (ready["message"])
    )
    assert st.get("matchedPods") == 0
    # Nothing of the session reached the node, not even the pod in its own namespace.
    assert _config_pods(control_plane, "node-a", mine) == set()
    events = json.loads(control_plane.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", "reason=CrossNamespaceNotAllowed").stdout)["items"]  # fmt: skip
    assert len(events) == 1 and events[0].get("count", 1) == 1

    # A session selecting only its own namespace is unaffected.
    apply_session(control_plane, namespace, "own-only")
    own = {(namespace, "own")}
    wait_for(lambda: _config_pods(control_plane, "node-a", mine) == own, timeout=60,
             what="the own-namespace session's pod in the node config")  # fmt: skip

    operator.send_signal(signal.SIGTERM)
    assert operator.wait(timeout=60) == 0
    # Refused once, logged once: the periodic reconciles that followed stayed quiet.
    log = (tmp_path / "operator-0.log").read_text()
    # (other tests' sessions may be refused by the same cluster-wide operator)
    assert log.count(f"a session in namespace {namespace} may not select") == 1, log[-3000:]
    start_operator("--allow-cross-namespace", f"{namespace}:{other}")
    both = {(namespace, "own"), (other, "victim")}
    wait_for(lambda: _config_pods(control_plane, "node-a", mine) == both,
             timeout=60, what="the allowed namespace's pod in the node config")  # fmt: skip
    st = wait_for(lambda: (s := status(control_plane, namespace, "peek")).get("phase") == "Pending"
                  and s, timeout=60, what="the allowed session out of Failed")  # fmt: skip
    assert st["matchedPods"] == 2
