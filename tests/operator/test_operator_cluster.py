"""The operator process against the real apiserver: NodeAgentConfigs, merged
status, completion and TTL deletion. The test plays kubelet and agents: it
creates Nodes and Pods with their status, and writes each node's share of the
session's status by server-side apply, as an agent does.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orb8_common.models import NodeAgentConfigSpec
from orb8_dev.controlplane import ControlPlane, free_port

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _wait(what: str, probe: Callable[[], T | None], timeout: float = 40.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _get(plane: ControlPlane, *args: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def _apply(plane: ControlPlane, doc: dict[str, Any], *flags: str) -> None:
    plane.kubectl("apply", *flags, "-f", "-", input=json.dumps(doc))


@pytest.fixture
def ns(control_plane: ControlPlane) -> str:
    """A fresh namespace per test; the operator below serves only it."""
    name = f"op-e2e-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def operator(
    control_plane: ControlPlane, ns: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "operator.log").open("wb")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orb8_operator.main",
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(free_port()),
            # Sessions other tests leave in the shared cluster are not ours to finalize.
            "--namespace",
            ns,
        ],
        env={**control_plane.env(), "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if os.environ.get("ORB8_SHOW_OPERATOR_LOG"):
            print((tmp_path / "operator.log").read_text())


def _kubelet(
    plane: ControlPlane, ns: str, nodes: list[str], pods: list[tuple[str, str, str, str]]
) -> None:
    for node in nodes:
        _apply(plane, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    for index, (name, node, ip, app) in enumerate(pods, start=1):
        _apply(
            plane,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
            },
        )
        status = {
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "containerStatuses": [
                    {
                        "name": "app",
                        "containerID": f"containerd://{index:064d}",
                        "image": "busybox",
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {}},
                    }
                ],
            }
        }
        plane.kubectl(
            "-n", ns, "patch", "pod", name, "--subresource=status", "--type=merge",
            "-p", json.dumps(status),
        )  # fmt: skip


def _agent_report(
    plane: ControlPlane, ns: str, name: str, entry: dict[str, Any], kind: str = "TraceSession"
) -> None:
    """Play the node's agent: put this session's share into NodeAgentConfig/<node>.status."""
    plural = "tracesessions" if kind == "TraceSession" else "gputelemetries"
    session = _get(plane, "-n", ns, plural, name)
    assert session is not None
    uid = session["metadata"]["uid"]
    node = entry["node"]
    nac = _get(plane, "nodeagentconfig", node)
    assert nac is not None
    reports = [r for r in (nac.get("status") or {}).get("reports") or [] if r["uid"] != uid]
    field = "trace" if kind == "TraceSession" else "gpu"
    reports.append({"uid": uid, "kind": kind, "namespace": ns, "name": name, field: entry})
    plane.kubectl(
        "patch", "nodeagentconfig", node, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"reports": reports}}),
    )  # fmt: skip


def _flow(
    src: tuple[str, int],
    dst: tuple[str, int],
    nbytes: int,
    node: str,
    *,
    ns: str,
    src_pod: str = "",
    dst_pod: str = "",
) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def end(ip: str, port: int, pod: str) -> dict[str, Any]:
        return {"ip": ip, "port": port, **({"namespace": ns, "pod": pod} if pod else {})}

    return {
        "source": end(*src, src_pod),
        "destination": end(*dst, dst_pod),
        "protocol": "TCP",
        "bytes": nbytes,
        "packets": nbytes // 100,
        "firstSeen": now,
        "lastSeen": now,
        "node": node,
    }


def _sessions_on(plane: ControlPlane, node: str) -> dict[str, list[str]]:
    nac = _get(plane, "nodeagentconfig", node)
    if nac is None:
        return {}
    spec = NodeAgentConfigSpec.model_validate(nac["spec"])
    return {s.name: [p.name for p in s.pods] for s in spec.sessions}


def test_trace_session_end_to_end(
    control_plane: ControlPlane, ns: str, operator: subprocess.Popen[bytes]
) -> None:
    plane = control_plane
    node_a, node_b = f"{ns}-a", f"{ns}-b"
    _kubelet(
        plane,
        ns,
        [node_a, node_b],
        [
            ("checkout-1", node_a, "10.244.1.5", "checkout"),
            ("checkout-2", node_b, "10.244.2.5", "checkout"),
            ("cart-1", node_b, "10.244.2.6", "cart"),
        ],
    )
    session = {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "TraceSession",
        "metadata": {"name": "checkout-debug", "namespace": ns},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"app": "checkout"}}},
            "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}},
            "duration": "25s",
            "ttlSecondsAfterFinished": 3,
        },
    }
    _apply(plane, session)

    # One NodeAgentConfig per node with a target, listing that node's pods only.
    _wait(
        "node configs", lambda: _sessions_on(plane, node_a).get("checkout-debug") == ["checkout-1"]
    )
    assert _sessions_on(plane, node_b).get("checkout-debug") == ["checkout-2"]
    pending = _wait(
        "Pending status",
        lambda: (_get(plane, "-n", ns, "ts", "checkout-debug") or {}).get("status"),
    )
    assert pending["phase"] == "Pending" and pending["matchedPods"] == 2

    # Both ends report the same cross-node flow; it is counted once.
    _agent_report(plane, ns, "checkout-debug", {
        "node": node_a, "state": "Running", "flowCount": 2, "bytes": 1500, "packets": 15,
        "flows": [
            _flow(("10.244.1.5", 43122), ("10.244.2.6", 8080), 1000, node_a, ns=ns,
                  src_pod="checkout-1"),
            _flow(("10.244.1.5", 5353), ("10.96.0.10", 53), 500, node_a, ns=ns,
                  src_pod="checkout-1"),
        ],
    })  # fmt: skip
    _agent_report(plane, ns, "checkout-debug", {
        "node": node_b, "state": "Degraded", "message": "syscalls probe not loadable",
        "flowCount": 1, "bytes": 900, "packets": 9,
        "flows": [_flow(("10.244.1.5", 43122), ("10.244.2.6", 8080), 900, node_b, ns=ns,
                        dst_pod="cart-1")],
    })  # fmt: skip

    def running() -> dict[str, Any] | None:
        status = (_get(plane, "-n", ns, "ts", "checkout-debug") or {}).get("status", {})
        return status if status.get("summary", {}).get("nodes") == 2 else None

    status = _wait("merged status", running)
    assert status["phase"] == "Running"
    assert status["summary"]["bytes"] == 1500
    assert status["summary"]["flows"] == 2
    top = status["flows"][0]
    assert (top["bytes"], top["source"]["pod"], top["destination"]["pod"]) == (
        1000,
        "checkout-1",
        "cart-1",
    )
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "True"
    assert node_b in conditions["Degraded"]["message"]
    # Each node's state and totals, without its rows (those are merged above).
    assert {n["node"]: n["bytes"] for n in status["nodes"]} == {node_a: 1500, node_b: 900}
    assert all("flows" not in n for n in status["nodes"])

    # The duration ends the session: Complete=True, the node configs drop it.
    def completed() -> dict[str, Any] | None:
        st = (_get(plane, "-n", ns, "ts", "checkout-debug") or {}).get("status", {})
        return st if st.get("phase") == "Completed" else None

    done = _wait("Completed", completed, timeout=60)
    assert {c["type"]: c["status"] for c in done["conditions"]}["Complete"] == "True"
    assert done["completionTime"]
    _wait(
        "node configs emptied",
        lambda: not _sessions_on(plane, node_a) and not _sessions_on(plane, node_b),
    )
    # ttlSecondsAfterFinished deletes it, and the finalizer lets go.
    _wait("TTL deletion", lambda: _get(plane, "-n", ns, "ts", "checkout-debug") is None, timeout=30)
    events = plane.kubectl("-n", ns, "get", "events", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Accepted", "Running", "Degraded", "Completed"} <= reasons
    assert operator.poll() is None


def test_gpu_telemetry_merge_and_delete(
    control_plane: ControlPlane, ns: str, operator: subprocess.Popen[bytes]
) -> None:
    plane = control_plane
    node = f"{ns}-g"
    _kubelet(plane, ns, [node], [("trainer-0", node, "10.244.9.5", "trainer")])
    _apply(
        plane,
        {
            "apiVersion": "orb8.io/v1alpha1",
            "kind": "GpuTelemetry",
            "metadata": {"name": "train", "namespace": ns},
            "spec": {
                "selector": {"podSelector": {"matchLabels": {"app": "trainer"}}},
                "source": {"nvml": {}},
                "alerts": {"memoryUsedPercent": 90},
            },
        },
    )
    _wait("node config", lambda: _sessions_on(plane, node).get("train") == ["trainer-0"])
    nac = _get(plane, "nodeagentconfig", node)
    assert nac is not None
    (entry,) = nac["spec"]["sessions"]
    # Settings stay in the session; the node's config says who and which pods only.
    assert set(entry) == {"uid", "kind", "namespace", "name", "generation", "podUids"}
    assert [p["name"] for p in nac["spec"]["pods"]] == ["trainer-0"]

    gpu = {
        "uuid": "GPU-1",
        "utilizationPercent": 40.5,
        "memoryUsedBytes": 95,
        "memoryTotalBytes": 100,
    }
    alert = {"namespace": ns, "pod": "trainer-0", "container": "app", "gpu": "GPU-1",
             "kind": "MemoryHigh", "value": 95.0}  # fmt: skip
    _agent_report(plane, ns, "train", {
        "node": node, "state": "Running", "source": "nvml",
        "pods": [{"namespace": ns, "pod": "trainer-0", "container": "app", "gpus": [gpu]}],
        "alerts": [alert],
    }, kind="GpuTelemetry")  # fmt: skip

    def merged() -> dict[str, Any] | None:
        st = (_get(plane, "-n", ns, "gputelemetry", "train") or {}).get("status", {})
        return st if st.get("phase") == "Running" and st.get("pods") else None

    status = _wait("merged GPU status", merged)
    assert status["summary"] == {
        "gpus": 1,
        "pods": 1,
        "avgUtilization": 40.5,
        "memoryUsedBytes": 95,
    }
    assert status["pods"][0]["node"] == node
    assert status["alerts"] == [{**alert, "node": node, "message": ""}]
    # kopf's only write to a session is its finalizer: no diff-base annotation (one
    # PATCH more per new session, for change detection no handler uses).
    stored = _get(plane, "-n", ns, "gputelemetry", "train")
    assert stored is not None
    assert stored["metadata"]["finalizers"] == ["orb8.io/finalizer"]
    annotations = stored["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("orb8.io/")], annotations

    # Deleting the session empties its node's config before the finalizer lets go.
    plane.kubectl("-n", ns, "delete", "gputelemetry", "train", "--wait=true", "--timeout=30s")
    _wait("node config gone", lambda: not _sessions_on(plane, node))
