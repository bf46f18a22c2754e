"""Fixtures for end-to-end tests: simulated nodes and pods, agent processes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orb8_agent.dataplane.cgroupfs import cgroup2_mount
from orb8_dev.controlplane import REPO_ROOT, ControlPlane, free_port
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.netns import link_counters

AGENT = [sys.executable, "-m", "orb8_agent.main"]
TRAFFIC = [sys.executable, "-m", "orb8_dev.traffic"]
VICTIM = [sys.executable, "-m", "orb8_dev.victim"]


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    name = f"e2e-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def kubelet(control_plane: ControlPlane) -> Iterator[SimKubelet]:
    sim = SimKubelet(
        plane=control_plane,
        cgroup_root=cgroup2_mount() / "orb8-test" / f"e2e-{secrets.token_hex(4)}",
    )
    try:
        yield sim
    finally:
        sim.close()


@dataclass
class AgentProcess:
    node: str
    proc: subprocess.Popen[str]
    http_port: int
    log: Path

    def stop(self, *, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_agent(
    control_plane: ControlPlane, kubelet: SimKubelet, tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []
    # Per test, so concurrent test runs on one machine never share tc or state ids.
    run_id = secrets.token_hex(3)

    def start(node: str, *extra: str) -> AgentProcess:
        port = free_port()
        log = tmp_path / f"agent-{node}.log"
        proc = subprocess.Popen(
            [*AGENT, "--node", node, "--kubeconfig", str(control_plane.kubeconfig),
             "--cgroup-root", str(kubelet.cgroup_root), "--http-host", "127.0.0.1",
             "--http-port", str(port), "--agent-id", f"{node}-{run_id}", *extra],
            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        agent = AgentProcess(node=node, proc=proc, http_port=port, log=log)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
        print(f"--- agent {agent.node} (exit {agent.proc.returncode}) ---")
        print(agent.logs()[-4000:])


@dataclass(frozen=True)
class Transfer:
    received: int  # payload bytes the server read
    wire_bytes: int  # what the client's host veth carried from the pod: the probe's measure


def tcp_transfer(*, client: SimPod, server: SimPod, nbytes: int, port: int = 8080) -> Transfer:
    """Send ``nbytes`` from client to server over TCP.

    ``wire_bytes`` is the oracle for flow byte counts: the host-side veth's rx
    counter (the pod's transmit), which counts every header exactly as the
    probe does, however the kernel segmented the stream.
    """
    sink = server.spawn(
        [*TRAFFIC, "tcp-sink", "--bind", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    assert sink.stdout is not None
    ready = sink.stdout.readline()
    assert b"listening" in ready, ready
    before = link_counters(netns=None, interface=client.host_if)["rx_bytes"]
    client.run([*TRAFFIC, "tcp-send", "--dst", server.ip, "--port", str(port),
                "--bytes", str(nbytes)])  # fmt: skip
    out, _ = sink.communicate(timeout=60)
    after = link_counters(netns=None, interface=client.host_if)["rx_bytes"]
    received: int = json.loads(out.decode().strip().splitlines()[-1])["received"]
    return Transfer(received=received, wire_bytes=after - before)


def make_victim(pod: SimPod, *, calls: str = "ptrace,mount") -> int:
    """Run the alert-listed syscalls inside the pod; return the victim's pid."""
    out = pod.run([*VICTIM, "--calls", calls])
    return int(out.strip().splitlines()[-1])


def get_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return body


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 60, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or predicate} (last: {last!r})")


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the orb8 operator as its own process, as the Deployment runs it."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(*extra: str) -> subprocess.Popen[str]:
        log = tmp_path / f"operator-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "orb8_operator.main",
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
             "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()), *extra],
            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
            env={**control_plane.env(), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(log.read_text(errors="replace")[-4000:])


@pytest.fixture
def operator(start_operator: Callable[..., subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """The orb8 operator with its default settings."""
    return start_operator()


# The private cluster of the fault tests (defined there; it uses the helpers above).
from tests.e2e.faults import cluster  # noqa: E402,F401
