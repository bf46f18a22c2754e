"""Status, printer columns, categories and server-side apply against the real
kube-apiserver: what the operator and the agents rely on."""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import Any

import pytest
import yaml

from tests.crds.conftest import Cluster
from tests.crds.manifests import (
    API_VERSION,
    CONTAINER_ID,
    T1,
    condition,
    gpu_telemetry,
    gpu_telemetry_status,
    node_agent_config,
    node_agent_config_status,
    trace_node_entry,
    trace_session,
    trace_session_status,
)

pytestmark = pytest.mark.cluster

TS_HEADER = [
    "NAME", "PHASE", "PODS", "NODES", "FLOWS", "BYTES", "ALERTS", "RETRANS", "DNS-ERRORS", "AGE",
]  # fmt: skip
GPUT_HEADER = ["NAME", "PHASE", "PODS", "GPUS", "UTIL", "MEMORY", "AGE"]


def table(cluster: Cluster, resource: str, *args: str) -> list[list[str]]:
    out = cluster.kubectl("get", resource, "-n", cluster.namespace, *args).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def patch_status(
    cluster: Cluster, resource: str, name: str, status: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A JSON merge patch of the status subresource (from a file: bodies may be large)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as patch:
        json.dump({"status": status}, patch)
        patch.flush()
        return cluster.kubectl(
            "patch", resource, name, "-n", cluster.namespace, "--subresource=status",
            "--type=merge", "--patch-file", patch.name, check=check,
        )  # fmt: skip


def apply_status(
    cluster: Cluster, kind: str, name: str, status: dict[str, Any], manager: str, *extra: str
) -> Any:
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "status": status}
    return cluster.kubectl(
        "apply",
        "--server-side",
        "--subresource=status",
        f"--field-manager={manager}",
        "-n",
        cluster.namespace,
        "-f",
        "-",
        *extra,
        input=yaml.safe_dump(body),
        check=False,
    )


@pytest.mark.parametrize("resource", ["tracesessions", "tracesession", "ts"])
def test_trace_session_columns(cluster: Cluster, resource: str) -> None:
    name = f"cols-{resource}"
    assert cluster.apply(trace_session(name)).returncode == 0
    rows = table(cluster, resource, name)
    assert rows[0] == TS_HEADER
    assert rows[1][0] == name and len(rows[1]) == 2  # only NAME and AGE before any status

    patch_status(
        cluster,
        "ts",
        name,
        {
            "phase": "Running",
            "matchedPods": 6,
            "summary": {
                "nodes": 3,
                "flows": 41,
                "bytes": 18734112,
                "packets": 14011,
                "alerts": 1,
                "pods": 6,
                "retransmits": 17,
            },
            "dns": {"queries": 40, "answers": 40, "nxdomain": 3, "servfail": 2, "errors": 5},
        },
    )
    header, row = table(cluster, resource, name)
    assert header == TS_HEADER
    assert row[:9] == [name, "Running", "6", "3", "41", "18734112", "1", "17", "5"]


@pytest.mark.parametrize("resource", ["gputelemetries", "gputelemetry", "gput"])
def test_gpu_telemetry_columns(cluster: Cluster, resource: str) -> None:
    name = f"cols-{resource}"
    assert cluster.apply(gpu_telemetry(name)).returncode == 0
    assert table(cluster, resource, name)[0] == GPUT_HEADER

    patch_status(
        cluster,
        "gput",
        name,
        {
            "phase": "Running",
            "summary": {
                "pods": 4,
                "gpus": 8,
                "avgUtilization": 87.5,
                "memoryUsedBytes": 85899345920,
            },
        },
    )
    header, row = table(cluster, resource, name)
    assert header == GPUT_HEADER
    assert row[:6] == [name, "Running", "4", "8", "87.5", "85899345920"]


def test_node_agent_config_columns_and_field_selector(cluster: Cluster) -> None:
    node = f"{cluster.namespace}-cols"
    nac = node_agent_config(node)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nac))
    patch_status(cluster, "nac", node, node_agent_config_status())  # kubectl ignores -n here
    out = cluster.kubectl("get", "nodeagentconfigs", node).stdout.splitlines()
    assert out[0].split() == ["NAME", "NODE", "AGENT", "HEARTBEAT", "AGE"]
    assert out[1].split()[:3] == [node, node, "0.1.0"]
    wide = cluster.kubectl("get", "nac", node, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "NODE", "AGENT", "KERNEL", "HEARTBEAT", "AGE"]
    assert wide[1].split()[3] == "6.18.44"
    # The agent watches its own object; spec.nodeName is a selectable field.
    selected = cluster.kubectl(
        "get", "nac", f"--field-selector=spec.nodeName={node}", "-o", "name"
    ).stdout.split()
    assert selected == [f"nodeagentconfig.orb8.io/{node}"]


def test_category_and_names(cluster: Cluster) -> None:
    assert cluster.apply(trace_session("cat-ts")).returncode == 0
    assert cluster.apply(gpu_telemetry("cat-gput")).returncode == 0
    names = cluster.kubectl("get", "orb8", "-n", cluster.namespace, "-o", "name").stdout.split()
    assert "tracesession.orb8.io/cat-ts" in names
    assert "gputelemetry.orb8.io/cat-gput" in names
    ts_names = cluster.kubectl("get", "ts", "-n", cluster.namespace, "-o", "name").stdout.split()
    assert "tracesession.orb8.io/cat-ts" in ts_names
    assert all(name.startswith("tracesession.orb8.io/") for name in ts_names)
    # The cluster-scoped NodeAgentConfig is in the category too.
    node = f"{cluster.namespace}-cat"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(node_agent_config(node)))
    assert f"nodeagentconfig.orb8.io/{node}" in cluster.kubectl("get", "orb8", "-o", "name").stdout


def test_trace_session_full_status_is_kept(cluster: Cluster) -> None:
    """Every status field of the contract survives a write: nothing is pruned."""
    assert cluster.apply(trace_session("full-status")).returncode == 0
    status = trace_session_status()
    patch_status(cluster, "ts", "full-status", status)
    assert cluster.get_json("ts", "full-status")["status"] == status


def test_gpu_telemetry_full_status_is_kept(cluster: Cluster) -> None:
    assert cluster.apply(gpu_telemetry("full-status")).returncode == 0
    status = gpu_telemetry_status()
    patch_status(cluster, "gput", "full-status", status)
    assert cluster.get_json("gput", "full-status")["status"] == status


def test_node_agent_config_contract_is_kept(cluster: Cluster) -> None:
    node = f"{cluster.namespace}-full"
    nac = node_agent_config(node)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nac))
    patch_status(cluster, "nac", node, node_agent_config_status())  # kubectl ignores -n here
    stored = cluster.get_json("nac", node, namespaced=False)
    assert stored["spec"] == nac["spec"]
    assert stored["status"] == node_agent_config_status()


def test_node_agent_config_lists_are_tracked_whole(cluster: Cluster) -> None:
    """spec.pods, spec.sessions, each session's podUids and status.reports are atomic
    lists: their writer replaces them whole, so managedFields names each list once
    instead of every pod, session and uid in it (which doubled a NodeAgentConfig's
    size and the apiserver's time per write)."""
    node = f"{cluster.namespace}-atomic"
    pods = [
        {"uid": f"pod-uid-{i}", "namespace": "shop", "name": f"web-{i}", "ips": [f"10.0.0.{i}"],
         "hostNetwork": False, "containers": [{"name": "app", "id": CONTAINER_ID}]}
        for i in range(3)
    ]  # fmt: skip
    session = {"uid": "session-uid", "kind": "TraceSession", "namespace": "shop",
               "name": "web", "generation": 1, "podUids": [p["uid"] for p in pods]}  # fmt: skip
    nac = {
        "apiVersion": API_VERSION, "kind": "NodeAgentConfig", "metadata": {"name": node},
        "spec": {"nodeName": node, "pods": pods, "sessions": [session]},
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nac))
    patch_status(cluster, "nac", node, node_agent_config_status())  # kubectl ignores -n here
    stored = cluster.get_json("nac", node, "--show-managed-fields", namespaced=False)
    assert stored["spec"] == nac["spec"]
    spec_fields: dict[str, Any] = {}
    status_fields: dict[str, Any] = {}
    for entry in stored["metadata"]["managedFields"]:
        fields = entry.get("fieldsV1") or {}
        spec_fields.update(fields.get("f:spec") or {})
        status_fields.update(fields.get("f:status") or {})
    assert spec_fields["f:pods"] == {}, spec_fields["f:pods"]
    assert spec_fields["f:sessions"] == {}, spec_fields["f:sessions"]
    assert status_fields["f:reports"] == {}, status_fields["f:reports"]


def test_status_is_only_written_through_the_subresource(cluster: Cluster) -> None:
    """With the status subresource, status in a main-resource write is ignored."""
    manifest = trace_session("status-ignored")
    manifest["status"] = {"phase": "Completed"}
    assert cluster.apply(manifest).returncode == 0
    assert "status" not in cluster.get_json("ts", "status-ignored")


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        ({"phase": "Done"}, "status.phase: Unsupported value"),
        (
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "Maybe",
                        "reason": "X",
                        "message": "",
                        "lastTransitionTime": T1,
                    }
                ]
            },
            "status.conditions[0].status: Unsupported value",
        ),
        (
            {
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "", "lastTransitionTime": T1}
                ]
            },
            "status.conditions[0].reason: Required value",
        ),
        (
            {"conditions": [condition("Ready", "True", "A"), condition("Ready", "False", "B")]},
            "status.conditions[1]: Duplicate value",
        ),
        (
            {
                "conditions": [
                    {**condition("Ready", "True", "A"), "lastTransitionTime": "yesterday"}
                ]
            },
            "status.conditions[0].lastTransitionTime",
        ),
        ({"nodes": [{"state": "Running"}]}, "status.nodes[0].node: Required value"),
        (
            {"nodes": [{"node": "n", "state": "Sleeping"}]},
            "status.nodes[0].state: Unsupported value",
        ),
        ({"summary": {"bytes": -1}}, "status.summary.bytes"),
        ({"flows": [{"protocol": "SCTP"}]}, "status.flows[0].protocol: Unsupported value"),
        ({"alerts": [{"severity": "Urgent"}]}, "status.alerts[0].severity: Unsupported value"),
    ],
    ids=[
        "phase",
        "condition-status",
        "condition-reason",
        "condition-duplicate",
        "condition-time",
        "node-key",
        "node-state",
        "negative-counter",
        "flow-protocol",
        "alert-severity",
    ],
)
def test_invalid_status_is_refused(cluster: Cluster, status: dict[str, Any], expect: str) -> None:
    name = "bad-status"
    if not cluster.exists("tracesession", name):
        assert cluster.apply(trace_session(name)).returncode == 0
    result = patch_status(cluster, "ts", name, status, check=False)
    assert result.returncode != 0
    assert expect in result.stderr, result.stderr


@pytest.mark.parametrize("kind", ["TraceSession", "GpuTelemetry"])
def test_status_nodes_are_replaced_whole(cluster: Cluster, kind: str) -> None:
    """status.nodes is atomic: the operator, its only writer, replaces it whole, and
    managedFields names the list once rather than every node's fields (a 50-node
    list-map put 18 KB of managedFields on a 44 KB session: 1.6x the apiserver's
    time per status write). A second manager cannot take over single entries."""
    name = f"atomic-nodes-{kind.lower()}"
    manifest = trace_session(name) if kind == "TraceSession" else gpu_telemetry(name)
    assert cluster.apply(manifest).returncode == 0
    resource = "ts" if kind == "TraceSession" else "gput"
    if kind == "TraceSession":
        entries = [trace_node_entry("node-a"), trace_node_entry("node-b")]
    else:
        entry = gpu_telemetry_status()["nodes"][0]
        entries = [{**entry, "node": "node-a"}, {**entry, "node": "node-b"}]
    result = apply_status(cluster, kind, name, {"nodes": entries}, "orb8-operator")
    assert result.returncode == 0, result.stderr
    stored = cluster.get_json(resource, name, "--show-managed-fields")
    assert [e["node"] for e in stored["status"]["nodes"]] == ["node-a", "node-b"]
    owned = [
        (entry.get("fieldsV1") or {}).get("f:status", {}).get("f:nodes")
        for entry in stored["metadata"]["managedFields"]
        if entry["manager"] == "orb8-operator"
    ]
    assert owned == [{}], owned  # the list as one field

    # Another manager's entry for one node would replace the operator's list: a conflict.
    clash = apply_status(cluster, kind, name, {"nodes": entries[1:]}, "orb8-agent/node-b")
    assert clash.returncode != 0
    assert "conflict" in clash.stderr.lower(), clash.stderr

    # The operator's next write drops node-b by leaving it out.
    result = apply_status(cluster, kind, name, {"nodes": entries[:1]}, "orb8-operator")
    assert result.returncode == 0, result.stderr
    assert [e["node"] for e in cluster.get_json(resource, name)["status"]["nodes"]] == ["node-a"]


def test_wait_for_complete_condition(cluster: Cluster) -> None:
    """`kubectl wait --for=condition=Complete` works on the metav1.Condition list."""
    name = "wait-complete"
    assert cluster.apply(trace_session(name, duration="1m")).returncode == 0
    patch_status(
        cluster,
        "ts",
        name,
        {
            "phase": "Completed",
            "conditions": [
                condition("Ready", "False", "Completed"),
                condition("Complete", "True", "DurationElapsed", "ran for 1m"),
            ],
        },
    )
    result = cluster.kubectl(
        "wait", f"ts/{name}", "-n", cluster.namespace, "--for=condition=Complete", "--timeout=10s"
    )
    assert "condition met" in result.stdout


def test_status_lists_are_bounded(cluster: Cluster) -> None:
    """The operator may keep 1000 flows (the largest topFlows); one more is refused."""
    name = "bounded"
    assert cluster.apply(trace_session(name)).returncode == 0
    flows = [trace_node_entry("node-a")["flows"][0] for _ in range(1000)]
    patch_status(cluster, "ts", name, {"flows": flows})
    assert len(cluster.get_json("ts", name)["status"]["flows"]) == 1000
    result = patch_status(cluster, "ts", name, {"flows": [*flows, flows[0]]}, check=False)
    assert result.returncode != 0
    assert "status.flows: Too many: 1001: must have at most 1000 items" in result.stderr


def test_explain_describes_the_fields(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "tracesession.spec.probes.network").stdout
    for field in ("directions", "protocols", "topFlows", "enabled"):
        assert field in out
    out = cluster.kubectl("explain", "gputelemetry.status.pods.gpus").stdout
    assert "utilizationPercent" in out and "migProfile" in out


def test_unknown_status_fields(cluster: Cluster) -> None:
    """Unknown status fields: server-side apply refuses them whatever the field
    validation asked for (the apply configuration must type-check against the
    schema); a merge patch (kubectl patch) is accepted with a warning and the
    field pruned. Merge-patch writers that want schema drift to fail loudly
    must ask for fieldValidation=Strict."""
    name = "unknown-status"
    assert cluster.apply(trace_session(name)).returncode == 0
    entry = {**trace_node_entry("node-a"), "bogus": 1}
    for validate in ("--validate=strict", "--validate=false"):
        refused = apply_status(
            cluster, "TraceSession", name, {"nodes": [entry]}, "orb8-agent/node-a", validate
        )
        assert refused.returncode != 0
        assert ".status.nodes[0].bogus: field not declared in schema" in refused.stderr

    patched = patch_status(cluster, "ts", name, {"nodes": [entry]})
    assert 'Warning: unknown field "status.nodes[0].bogus"' in patched.stderr
    (stored,) = cluster.get_json("ts", name)["status"]["nodes"]
    assert stored == trace_node_entry("node-a")
