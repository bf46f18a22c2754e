"""A private cluster for fault tests: its own control plane, kubelet, agent and operator.

Fault tests kill servers, so they never use the session-wide control plane.
Each fault test records its measured recovery time with
orb8_dev.reliability.record (rendered into docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orb8_agent.dataplane.cgroupfs import cgroup2_mount
from orb8_dev import controlplane
from orb8_dev.controlplane import REPO_ROOT, ControlPlane, free_port
from orb8_dev.kubelet import SimKubelet, SimPod
from tests.e2e.conftest import AGENT, AgentProcess, Transfer, get_json

SHOP = {"app": "shop"}
AGENT_GRACE_S = 30.0  # the chart's terminationGracePeriodSeconds for both processes
OPERATOR_GRACE_S = 30.0


@dataclass
class Cluster:
    plane: ControlPlane
    kubelet: SimKubelet
    tmp: Path
    agents: list[AgentProcess] = field(default_factory=list)
    operators: list[tuple[subprocess.Popen[str], Path]] = field(default_factory=list)
    operator_ports: dict[int, int] = field(default_factory=dict)  # pid → /metrics, /readyz
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    def start_agent(
        self, node: str, *extra: str, kubeconfig: Path | None = None,
        env: dict[str, str] | None = None, wrap: Sequence[str] = (),
    ) -> AgentProcess:  # fmt: skip
        """Start an agent for ``node``; ``wrap`` is a command prefix (e.g. setpriv)."""
        port = free_port()
        log = self.tmp / f"agent-{node}-{len(self.agents)}.log"
        proc = subprocess.Popen(
            [*wrap, *AGENT, "--node", node,
             "--kubeconfig", str(kubeconfig or self.plane.kubeconfig),
             "--cgroup-root", str(self.kubelet.cgroup_root), "--http-host", "127.0.0.1",
             "--http-port", str(port), "--agent-id", f"{node}-{self.run_id}", *extra],
            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        agent = AgentProcess(node=node, proc=proc, http_port=port, log=log)
        self.agents.append(agent)
        return agent

    def start_operator(self, *extra: str) -> subprocess.Popen[str]:
        log = self.tmp / f"operator-{len(self.operators)}.log"
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orb8_operator.main",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
             "--metrics-host", "127.0.0.1", "--metrics-port", str(port), *extra],
            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
            env={**self.plane.env(), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.operators.append((proc, log))
        self.operator_ports[proc.pid] = port
        return proc

    def namespace(self) -> str:
        name = f"fault-{secrets.token_hex(4)}"
        self.plane.kubectl("create", "namespace", name)
        return name


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    plane = controlplane.start(state_dir=tmp_path / "controlplane")
    kubelet: SimKubelet | None = None
    found: Cluster | None = None
    try:
        plane.apply_crds()
        kubelet = SimKubelet(
            plane=plane, cgroup_root=cgroup2_mount() / "orb8-test" / f"f-{secrets.token_hex(4)}"
        )
        found = Cluster(plane=plane, kubelet=kubelet, tmp=tmp_path)
        yield found
    finally:
        if found is not None:
            for agent in found.agents:
                agent.stop()
                print(f"--- agent {agent.node} (exit {agent.proc.returncode}) ---")
                print(agent.logs()[-3000:])
            for proc, log in found.operators:
                terminate(proc, grace_s=OPERATOR_GRACE_S)
                print(f"--- operator (exit {proc.returncode}) ---")
                print(log.read_text(errors="replace")[-3000:])
        if kubelet is not None:
            kubelet.close()
        controlplane.stop(state_dir=plane.state_dir)


def terminate(proc: subprocess.Popen[str], *, grace_s: float) -> float | None:
    """SIGTERM ``proc``; seconds it took to exit, or None when it outlived ``grace_s``."""
    if proc.poll() is not None:
        return 0.0
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return time.monotonic() - start


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def http_text(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, why) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()
    except OSError as err:
        return 0, str(err)


def apply_session(plane: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": SHOP}},
            "probes": {"network": {"enabled": True, "topFlows": 50},
                       "syscalls": {"enabled": True, "alertOn": ["ptrace"]}},
            "reportInterval": "1s",
            **spec,
        },
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def session_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    result = plane.kubectl("get", "ts", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    found: dict[str, Any] = (json.loads(result.stdout).get("status")) or {}
    return found


def running_on(plane: ControlPlane, namespace: str, name: str, nodes: set[str]) -> bool:
    st = session_status(plane, namespace, name)
    reporting = {e["node"] for e in st.get("nodes") or [] if e.get("state") == "Running"}
    return st.get("phase") == "Running" and reporting >= nodes


def bytes_to_port(
    plane: ControlPlane, namespace: str, name: str, src: SimPod, dst: SimPod, port: int
) -> int:
    """Bytes of the session's src→dst flows to ``port``."""
    return sum(
        int(f["bytes"]) for f in session_status(plane, namespace, name).get("flows") or []
        if (f["source"].get("pod"), f["destination"].get("pod")) == (src.name, dst.name)
        and f["destination"].get("port") == port
    )  # fmt: skip


def reported_all(
    plane: ControlPlane, namespace: str, name: str, src: SimPod, dst: SimPod, port: int,
    transfer: Transfer,
) -> int | None:  # fmt: skip
    """The flow's bytes once they hold the transfer's wire bytes (the veth oracle; ARP aside)."""
    seen = bytes_to_port(plane, namespace, name, src, dst, port)
    return seen if seen >= transfer.wire_bytes * 0.99 else None


def node_config(plane: ControlPlane, node: str) -> dict[str, Any]:
    return get_json(plane, "nac", node)


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() of the first poll that saw it
    value: Any


def first_seen(
    checks: Mapping[str, Callable[[], Any]], *, timeout: float, interval: float = 0.1
) -> dict[str, Seen]:
    """Poll every check (in order) until each has returned something truthy once.

    Each is polled on its own until it holds, so one slow condition never
    delays the timing of another (as waiting for them one after the other
    would). Fails the test naming those still pending at ``timeout``.
    """
    seen: dict[str, Seen] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(checks):
        for name, check in checks.items():
            if name not in seen and (value := check()):
                seen[name] = Seen(time.monotonic(), value)
        if len(seen) == len(checks):
            break
        if time.monotonic() > deadline:
            pending = [name for name in checks if name not in seen]
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {', '.join(pending)}")
        time.sleep(interval)
    return seen
