"""``orb8 get`` and ``kubectl orb8 get`` read a session's status from the real apiserver."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orb8_dev.controlplane import ControlPlane

STATUS: dict[str, Any] = {
    "phase": "Running",
    "flows": [
        {
            "source": {"namespace": "shop", "pod": "checkout", "ip": "10.1.0.5", "port": 43122},
            "destination": {"ip": "192.0.2.7", "port": 443},
            "protocol": "TCP", "bytes": 3145728, "packets": 2100,
            "firstSeen": "2026-11-29T05:00:00Z", "lastSeen": "2026-11-29T05:00:10Z",
            "node": "node-a",
        },
        {
            "source": {"namespace": "shop", "pod": "checkout", "ip": "10.1.0.5", "port": 43124},
            "destination": {"ip": "10.96.0.10", "port": 80},
            "protocol": "TCP", "bytes": 2048, "packets": 4, "node": "node-a",
            "service": "shop/cart:80",
            "backend": {"namespace": "shop", "pod": "cart-1", "ip": "10.1.0.9", "port": 8080},
        },
    ],
    "alerts": [
        {
            "namespace": "shop", "pod": "checkout", "container": "app", "node": "node-a",
            "syscall": "ptrace", "count": 3, "severity": "High", "reason": "on the alert list",
            "firstSeen": "2026-11-29T05:00:01Z", "lastSeen": "2026-11-29T05:00:09Z",
            "process": {"pid": 4242, "comm": "gdb"},
        }
    ],
    "nodes": [
        {
            "node": "node-a", "state": "Degraded", "probes": ["network", "syscalls"],
            "message": "flow filter not applied for 2 pods (filter map full)",
            "lastReportTime": "2026-11-29T05:00:10Z", "flowCount": 2, "bytes": 3147776,
            "packets": 2104, "alertCount": 3, "unfilteredPods": 2,
        },
        {"node": "node-b", "state": "Running", "probes": ["network"], "flowCount": 0},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def session(control_plane: ControlPlane) -> tuple[str, str]:
    namespace = f"cli-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", namespace)
    manifest = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "checkout-debug", "namespace": namespace},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "checkout"}}},
                 "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}}},
    }  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    control_plane.kubectl(
        "patch", "ts", "checkout-debug", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": STATUS}),
    )  # fmt: skip
    return namespace, "checkout-debug"


def orb8(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orb8_cli.main", *args], capture_output=True, text=True,
        env=plane.env(), timeout=60, check=False,
    )  # fmt: skip


def test_get_flows_as_json_and_table(control_plane: ControlPlane, session: tuple[str, str]) -> None:
    namespace, name = session
    result = orb8(control_plane, "get", "flows", name, "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == STATUS["flows"]
    table = orb8(control_plane, "get", "flows", name, "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["SOURCE", "DESTINATION", "PROTO", "BYTES", "PACKETS", "NODE",
                                "LAST", "SEEN"]  # fmt: skip
    assert table[1].split()[:5] == ["shop/checkout:43122", "192.0.2.7:443", "TCP", "3.0", "MiB"]
    # a flow to a ClusterIP shows its Service and the backend (docs/services.md)
    assert table[2].split()[:2] == ["shop/checkout:43124", "svc:shop/cart:80->shop/cart-1:8080"]


def test_get_alerts_table(control_plane: ControlPlane, session: tuple[str, str]) -> None:
    namespace, name = session
    out = orb8(control_plane, "get", "alerts", name, "-n", namespace).stdout.splitlines()
    assert out[1].split()[:6] == ["High", "shop/checkout", "app", "ptrace", "3", "gdb[4242]"]
    assert out[0].split()[-1] == "REASON"
    assert out[1].rstrip().endswith("on the alert list")


def test_get_nodes_shows_each_nodes_share(
    control_plane: ControlPlane, session: tuple[str, str]
) -> None:
    namespace, name = session
    out = orb8(control_plane, "get", "nodes", name, "-n", namespace)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "PROBES", "FLOWS", "BYTES", "ALERTS",
                                "UNFILTERED", "LAST", "REPORT", "MESSAGE"]  # fmt: skip
    assert lines[1].split()[:9] == ["node-a", "Degraded", "network,syscalls", "2", "3.0", "MiB",
                                    "3", "2", "2026-11-29T05:00:10Z"]  # fmt: skip
    assert lines[1].rstrip().endswith("(filter map full)")
    assert lines[2].split() == ["node-b", "Running", "network", "0", "0", "B", "0", "0", "-"]
    as_json = json.loads(orb8(control_plane, "get", "nodes", name, "-n", namespace,
                              "-o", "json").stdout)  # fmt: skip
    # each node's state as the status holds it, without the rows the session lists
    assert as_json == STATUS["nodes"]


def test_status_parts_another_version_wrote_are_named_and_left_out() -> None:
    from orb8_cli.status import read_trace_status

    body = {
        "status": {
            "phase": "Running", "matchedPods": "three",
            "flows": [STATUS["flows"][0], {**STATUS["flows"][1], "protocol": "SCTP"}],
            "alerts": "not a list",
            "nodes": [{"node": "a", "state": "Running"}, {"node": "b", "bytes": "lots"}, "junk"],
            "dns": {"queries": -1},
            "summary": {"flows": 2, "bytes": 10},
        }
    }  # fmt: skip
    status = read_trace_status(body=body)
    assert [f.source.port for f in status.flows] == [43122]
    assert [n.node for n in status.nodes] == ["a"]
    assert status.alerts == () and status.dns is None
    assert (status.phase, status.matched_pods, status.summary.bytes) == ("Running", 0, 10)
    assert [p.split(":")[0] for p in status.problems] == [
        "status.matchedPods", "status.flows[1].protocol", "status.alerts", "status.dns.queries",
        "status.nodes[1].bytes", "status.nodes[2]",
    ]  # fmt: skip
    assert all(p.endswith("(left out)") for p in status.problems)
    # an empty object (before the operator's first write) is an empty status, no problem
    empty = read_trace_status(body={})
    assert (empty.flows, empty.nodes, empty.problems, empty.phase) == ((), (), (), "")


def test_phase_and_matched_pods_are_read_through_the_contract() -> None:
    """The status head is parsed by the model the operator writes it with: a phase
    outside the CRD's enum and a count that is not an integer are named and left out."""
    from orb8_cli.status import read_gpu_status, read_trace_status

    trace = read_trace_status(body={"status": {"phase": "Stopped", "matchedPods": True}})
    assert (trace.phase, trace.matched_pods) == ("", 0)
    assert trace.problems == (
        "status.phase: Input should be 'Pending', 'Running', 'Completed' or 'Failed' (left out)",
        "status.matchedPods: Input should be a valid integer (left out)",
    )
    gpu = read_gpu_status(body={"status": {"phase": "Running", "startTime": "soon"}})
    assert gpu.phase == "Running"
    assert [p.split(":")[0] for p in gpu.problems] == ["status.startTime"]
    good = read_trace_status(body={"status": {"phase": "Completed", "matchedPods": 4}})
    assert (good.phase, good.matched_pods, good.problems) == ("Completed", 4, ())


def test_missing_session_is_one_line_and_exit_1(control_plane: ControlPlane) -> None:
    result = orb8(control_plane, "get", "flows", "nope", "-n", "default")
    assert result.returncode == 1
    assert result.stderr.strip() == "orb8: tracesessions 'nope' not found in namespace 'default'"
    assert "Traceback" not in result.stderr


def test_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
    }))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "orb8_cli.main", "get", "flows", "s", "-n", "default",
         "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("orb8: cannot reach the cluster")
    assert len(result.stderr.strip().splitlines()) == 1


def test_kubectl_plugin_runs_the_same_cli(
    control_plane: ControlPlane, session: tuple[str, str]
) -> None:
    namespace, name = session
    plugin_dir = Path(sys.executable).parent
    assert (plugin_dir / "kubectl-orb8").exists()
    env: dict[str, Any] = {**control_plane.env(), "PATH": f"{plugin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(
        [control_plane.kubectl_path, "orb8", "get", "alerts", name, "-n", namespace, "-o", "json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["process"] == {"pid": 4242, "comm": "gdb"}
