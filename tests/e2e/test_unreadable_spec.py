"""A session spec the agent cannot parse is reported, Failed with the field named.

Admission and the operator refuse bad specs before an agent sees them, so
this reaches the agent's own parser the way a real cluster does: through
version skew. Helm never upgrades CRDs, so an older, looser GpuTelemetry CRD
may stay installed under a newer agent; here the private control plane's
GpuTelemetry CRD is replaced by one that keeps any spec. A GpuTelemetry with
``interval: 1d`` (not a Go duration) is stored, and a NodeAgentConfig written
straight to the apiserver (no operator: it would refuse the spec itself)
gives the agent that session and a valid TraceSession.

The agent must report the GpuTelemetry's node entry Failed with a one-line
message naming ``spec.interval``, keep serving the TraceSession, and serve
the GpuTelemetry once a new generation fixes it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from orb8_common.models import AgentSession, NodeAgentConfigSpec, to_wire
from tests.e2e.conftest import get_json, wait_for
from tests.e2e.faults import Cluster

pytestmark = [pytest.mark.kernel, pytest.mark.cluster]

NODE = "node-skew"
LOOSE_SCHEMA = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _loosen_gpu_crd(cluster: Cluster, namespace: str) -> None:
    """Replace the GpuTelemetry CRD's spec schema by one that keeps anything."""
    patch = [{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec",
              "value": LOOSE_SCHEMA}]  # fmt: skip
    cluster.plane.kubectl("patch", "crd", "gputelemetries.orb8.io", "--type=json",
                          "-p", json.dumps(patch))  # fmt: skip
    probe = {"apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
             "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"interval": "1d"}}  # fmt: skip

    def admitted() -> bool:
        # the apiserver rebuilds its validators asynchronously after a CRD update
        out = cluster.plane.kubectl("apply", "--dry-run=server", "-f", "-",
                                    input=json.dumps(probe), check=False)  # fmt: skip
        return out.returncode == 0

    wait_for(admitted, timeout=60, what="the loosened GpuTelemetry CRD in force")


def _create(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    meta = body["metadata"]
    return get_json(cluster.plane, body["kind"].lower(), meta["name"], "-n", meta["namespace"])


def _session(obj: dict[str, Any]) -> AgentSession:
    meta = obj["metadata"]
    return AgentSession(uid=meta["uid"], kind=obj["kind"], namespace=meta["namespace"],
                        name=meta["name"], generation=meta["generation"])  # fmt: skip


def _write_config(cluster: Cluster, sessions: list[AgentSession]) -> None:
    spec = to_wire(NodeAgentConfigSpec(node_name=NODE, sessions=tuple(sessions)))
    config = {"apiVersion": "orb8.io/v1alpha1", "kind": "NodeAgentConfig",
              "metadata": {"name": NODE}, "spec": spec}  # fmt: skip
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(config))


def _reports(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """This node's reports by session name."""
    status = get_json(cluster.plane, "nac", NODE).get("status") or {}
    return {r["name"]: r for r in status.get("reports") or []}


def test_a_spec_the_agent_cannot_parse_is_reported_failed_naming_the_field(
    cluster: Cluster,
) -> None:
    namespace = cluster.namespace()
    _loosen_gpu_crd(cluster, namespace)
    gpu = _create(cluster, {
        "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
        "metadata": {"name": "gpu-skew", "namespace": namespace},
        "spec": {"selector": {"podSelector": {}}, "interval": "1d"},
    })  # fmt: skip
    trace = _create(cluster, {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "trace-ok", "namespace": namespace},
        "spec": {"selector": {"podSelector": {}}, "probes": {"network": {"enabled": True}},
                 "reportInterval": "2s"},
    })  # fmt: skip
    _write_config(cluster, [_session(gpu), _session(trace)])
    agent = cluster.start_agent(NODE)

    def both_reported() -> dict[str, dict[str, Any]] | None:
        reports = _reports(cluster)
        return reports if {"gpu-skew", "trace-ok"} <= set(reports) else None

    reports = wait_for(both_reported, timeout=120, what="reports of both sessions")
    entry = reports["gpu-skew"]["gpu"]
    assert reports["gpu-skew"]["kind"] == "GpuTelemetry"
    assert reports["gpu-skew"]["uid"] == gpu["metadata"]["uid"]
    assert entry["state"] == "Failed", entry
    assert entry["node"] == NODE
    message = entry["message"]
    assert "spec.interval" in message and "\n" not in message, message
    assert entry.get("lastReportTime"), entry
    # The other session on the node is served as usual.
    assert reports["trace-ok"]["trace"]["state"] == "Running", reports["trace-ok"]
    assert agent.proc.poll() is None, agent.logs()

    # A new generation that fixes the spec is read again and served.
    fixed = _create(cluster, {
        "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
        "metadata": {"name": "gpu-skew", "namespace": namespace},
        "spec": {"selector": {"podSelector": {}}, "interval": "2s"},
    })  # fmt: skip
    assert fixed["metadata"]["generation"] > gpu["metadata"]["generation"]
    _write_config(cluster, [_session(fixed), _session(trace)])

    def served() -> dict[str, Any] | None:
        report = _reports(cluster).get("gpu-skew")
        if report is None or report["generation"] != fixed["metadata"]["generation"]:
            return None
        return report if "spec not served" not in report["gpu"].get("message", "") else None

    report = wait_for(served, timeout=120, what="the fixed GpuTelemetry served")
    assert "spec.interval" not in report["gpu"].get("message", ""), report
    assert agent.stop() == 0, agent.logs()
