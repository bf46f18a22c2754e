"""A failed attach is reported, not silent: the session says which pod and why.

The flow probe's tc attach fails for real when the pod's host veth already
carries an ``ingress`` qdisc (it holds the handle clsact needs); removing it
lets the agent's next resync attach, and the node turns Running again. An
alert-list name this node's architecture lacks is named in the node's
message, and the rest of the list still alerts.
"""

from __future__ import annotations

import subprocess
from typing import Any

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import make_victim, wait_for
from tests.e2e.test_trace_session import SHOP, apply_session, status

NODE = "node-attach"
NOT_ON_X86 = "arch_specific_syscall"  # an arm64-only name: admitted, absent on x86_64


def _node_entry(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    for entry in status(plane, namespace, name).get("nodes") or []:
        if entry.get("node") == NODE:
            return dict(entry)
    return {}


def test_a_failed_attach_and_an_unknown_syscall_show_in_the_session_status(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name=NODE)
    pod = kubelet.run_pod(namespace=namespace, name="blocked", node=NODE, labels=SHOP)
    subprocess.run(["tc", "qdisc", "add", "dev", pod.host_if, "ingress"], check=True)
    start_agent(NODE)
    apply_session(
        control_plane, namespace, "attach-fails",
        probes={"network": {"enabled": True},
                "syscalls": {"enabled": True, "alertOn": [NOT_ON_X86, "ptrace"]}},
    )  # fmt: skip

    def degraded() -> dict[str, Any] | None:
        entry = _node_entry(control_plane, namespace, "attach-fails")
        message = entry.get("message") or ""
        ok = entry.get("state") == "Degraded" and pod.host_if in message and NOT_ON_X86 in message
        return entry if ok else None

    entry = wait_for(degraded, timeout=90, what="a Degraded node naming the pod and the syscall")
    message = entry["message"]
    assert f"{namespace}/blocked" in message, message
    assert "flow probe not attached" in message, message
    assert "not watched" in message, message
    # The rest of the alert list still works: ptrace from the pod raises an alert.
    make_victim(pod, calls="ptrace")
    wait_for(
        lambda: any(a.get("syscall") == "ptrace" and a.get("pod") == "blocked"
                    for a in status(control_plane, namespace, "attach-fails").get("alerts") or []),
        timeout=60, what="a ptrace alert although another alertOn name is unknown here",
    )  # fmt: skip

    subprocess.run(["tc", "qdisc", "del", "dev", pod.host_if, "ingress"], check=True)

    def attached() -> dict[str, Any] | None:
        entry = _node_entry(control_plane, namespace, "attach-fails")
        message = entry.get("message") or ""
        return entry if pod.host_if not in message and NOT_ON_X86 in message else None

    entry = wait_for(attached, timeout=90, what="the attach to succeed once the qdisc is gone")
    assert "blocked" not in entry["message"], entry
    assert entry["state"] == "Degraded"  # the syscall name is still unknown on this node
