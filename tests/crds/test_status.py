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
    """spec.pods, each session's podUids and status.reports are atomic lists: their
    writer replaces them whole, so managedFields names each list once instead of
    every pod and uid in it (which doubled a NodeAgentConfig's size and the
    apiserver's time per write). spec.sessions stays a list-map keyed by uid."""
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
    sessions = spec_fields["f:sessions"]
    assert [key for key in sessions if key != "."] == ['k:{"uid":"session-uid"}']  # by uid
    assert sessions['k:{"uid":"session-uid"}']["f:podUids"] == {}
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


def test_agents_apply_their_own_node_entries(cluster: Cluster) -> None:
    """Each agent server-side-applies its node's entry of status.nodes with its
    own field manager; entries of other nodes are neither removed nor taken over."""
    name = "ssa-nodes"
    assert cluster.apply(trace_session(name)).returncode == 0

    for node in ("node-a", "node-b"):
        result = apply_status(
            cluster, "TraceSession", name, {"nodes": [trace_node_entry(node)]}, f"orb8-agent/{node}"
        )
        assert result.returncode == 0, result.stderr

    nodes = {entry["node"]: entry for entry in cluster.get_json("ts", name)["status"]["nodes"]}
    assert nodes == {"node-a": trace_node_entry("node-a"), "node-b": trace_node_entry("node-b")}

    # node-a reports again with new counters; node-b's entry stays as it was.
    updated = trace_node_entry("node-a", nbytes=99)
    result = apply_status(cluster, "TraceSession", name, {"nodes": [updated]}, "orb8-agent/node-a")
    assert result.returncode == 0, result.stderr
    nodes = {entry["node"]: entry for entry in cluster.get_json("ts", name)["status"]["nodes"]}
    assert nodes == {"node-a": updated, "node-b": trace_node_entry("node-b")}

    # node-b's manager may not overwrite node-a's fields: the apiserver reports a conflict.
    clash = apply_status(
        cluster,
        "TraceSession",
        name,
        {"nodes": [trace_node_entry("node-a", nbytes=1)]},
        "orb8-agent/node-b",
    )
    assert clash.returncode != 0
    assert "conflict" in clash.stderr.lower(), clash.stderr

    # The operator writes the merged fields with its own manager, without touching nodes.
    operator_status = {"phase": "Running", "summary": {"nodes": 2, "bytes": 18734211}}
    result = apply_status(cluster, "TraceSession", name, operator_status, "orb8-operator")
    assert result.returncode == 0, result.stderr
    stored = cluster.get_json("ts", name, "--show-managed-fields")
    assert {entry["node"] for entry in stored["status"]["nodes"]} == {"node-a", "node-b"}
    assert stored["status"]["phase"] == "Running"
    managers = {
        entry["manager"]
        for entry in stored["metadata"]["managedFields"]
        if entry.get("subresource") == "status"
    }
    assert {"orb8-agent/node-a", "orb8-agent/node-b", "orb8-operator"} <= managers


def test_gpu_agents_apply_their_own_node_entries(cluster: Cluster) -> None:
    name = "ssa-gpu-nodes"
    assert cluster.apply(gpu_telemetry(name)).returncode == 0
    entry = gpu_telemetry_status()["nodes"][0]
    for node in ("gpu-node-1", "gpu-node-2"):
        mine = {**entry, "node": node}
        result = apply_status(
            cluster, "GpuTelemetry", name, {"nodes": [mine]}, f"orb8-agent/{node}"
        )
        assert result.returncode == 0, result.stderr
    stored = cluster.get_json("gput", name)["status"]["nodes"]
    assert sorted(row["node"] for row in stored) == ["gpu-node-1", "gpu-node-2"]
    assert stored[0]["pods"] == entry["pods"]


def test_agent_withdraws_its_node_entry(cluster: Cluster) -> None:
    """An agent whose node leaves the session applies a status without its entry;
    server-side apply then removes the fields only that manager owned."""
    name = "ssa-withdraw"
    assert cluster.apply(trace_session(name)).returncode == 0
    for node in ("node-a", "node-b"):
        entry = {"nodes": [trace_node_entry(node)]}
        assert (
            apply_status(cluster, "TraceSession", name, entry, f"orb8-agent/{node}").returncode == 0
        )
    result = apply_status(cluster, "TraceSession", name, {}, "orb8-agent/node-b")
    assert result.returncode == 0, result.stderr
    nodes = cluster.get_json("ts", name)["status"]["nodes"]
    assert [entry["node"] for entry in nodes] == ["node-a"]


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
        assert '.status.nodes[node="node-a"].bogus: field not declared in schema' in refused.stderr

    patched = patch_status(cluster, "ts", name, {"nodes": [entry]})
    assert 'Warning: unknown field "status.nodes[0].bogus"' in patched.stderr
    (stored,) = cluster.get_json("ts", name)["status"]["nodes"]
    assert stored == trace_node_entry("node-a")
