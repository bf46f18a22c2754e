"""The soak: 10,000 active flows and steady alerts for ``--soak-seconds`` (600 in CI).

A real agent and operator serve one session on a simulated node while a
client pod keeps 10,000 UDP flows active (a datagram to each of 10,000 ports
every 2 s) and makes an alert-listed syscall ten times a second. After a
warm-up (every flow and the alerts in the session status), the test samples
both processes' resident memory, the agent's BPF maps (entries walked through
the bpf syscall, memlock from fdinfo) and the session object's size, and
asserts that none of them grows: the last third of the run against the first.
The figures go to build/reliability.jsonl (docs/reliability.md).

``make soak SOAK_SECONDS=28800`` runs it for 8 hours; ``--soak-seconds 60``
is enough to try a change.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orb8_dev import procstats, reliability, soakcheck
from orb8_dev.controlplane import REPO_ROOT, ControlPlane
from orb8_dev.kubelet import SimKubelet
from orb8_dev.soakcheck import MIB, Sample, mean
from tests.e2e.conftest import TRAFFIC, VICTIM, AgentProcess, wait_for

pytestmark = [pytest.mark.soak, pytest.mark.kernel]

NODE = "node-soak"
LABELS = {"app": "soak"}
FLOWS = 10_000
ROUND_S = 2.0  # every flow gets a datagram this often (the active window is 30 s)
ALERT_INTERVAL_S = 0.1
REPORT_INTERVAL = "5s"


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)

    def thirds(self) -> tuple[Sequence[Sample], Sequence[Sample]]:
        return soakcheck.thirds(self.samples)


def _session(plane: ControlPlane, namespace: str) -> None:
    body = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "soak", "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": LABELS}},
            "probes": {"network": {"enabled": True, "topFlows": 50},
                       "syscalls": {"enabled": True, "alertOn": ["ptrace"], "maxAlerts": 100}},
            "reportInterval": REPORT_INTERVAL,
        },
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def _session_object(plane: ControlPlane, namespace: str) -> tuple[dict[str, Any], int]:
    out = plane.kubectl("get", "ts", "soak", "-n", namespace, "-o", "json").stdout
    return json.loads(out), len(out.encode())


def _metric_sum(agent: AgentProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )  # fmt: skip


def test_ten_thousand_flows_and_steady_alerts_keep_memory_and_maps_flat(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str,
    start_agent: Callable[..., AgentProcess], start_operator: Callable[..., Any],
    pytestconfig: pytest.Config,
) -> None:  # fmt: skip
    soak_s = int(pytestconfig.getoption("--soak-seconds"))
    plane = control_plane
    kubelet.add_node(name=NODE)
    client = kubelet.run_pod(namespace=namespace, name="client", node=NODE, labels=LABELS)
    server = kubelet.run_pod(namespace=namespace, name="server", node=NODE, labels=LABELS)
    operator = start_operator()
    agent = start_agent(NODE)
    _session(plane, namespace)
    wait_for(lambda: (_session_object(plane, namespace)[0].get("status") or {}).get("phase")
             == "Running", timeout=120, what="the soak session Running")  # fmt: skip

    # A little longer than the run: the generators end by themselves, never orphaned.
    lifetime = soak_s + 600
    load = client.spawn(
        [*TRAFFIC, "udp-flows", "--dst", server.ip, "--flows", str(FLOWS),
         "--interval", str(ROUND_S), "--duration", str(lifetime)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    alerts = client.spawn(
        [*VICTIM, "--calls", "ptrace", "--repeat", str(int(lifetime / ALERT_INTERVAL_S)),
         "--interval", str(ALERT_INTERVAL_S)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        soak = _run(plane=plane, namespace=namespace, agent=agent, operator_pid=operator.pid,
                    soak_s=soak_s)  # fmt: skip
        assert load.poll() is None and alerts.poll() is None, "a load generator ended early"
    finally:
        for proc in (load, alerts):
            proc.kill()
            proc.wait()
    _assert_flat(soak)
    agent_cpu = procstats.cpu_seconds(pid=agent.proc.pid)
    assert agent.proc.poll() is None and operator.poll() is None
    _record(soak, soak_s=soak_s, agent_cpu_s=agent_cpu,
            operator_cpu_s=procstats.cpu_seconds(pid=operator.pid))  # fmt: skip


def _run(
    *, plane: ControlPlane, namespace: str, agent: AgentProcess, operator_pid: int, soak_s: int
) -> Soak:
    def warmed_up() -> bool:
        status = _session_object(plane, namespace)[0].get("status") or {}
        summary = status.get("summary") or {}
        return (
            int(summary.get("flows") or 0) >= FLOWS
            and int(summary.get("alerts") or 0) > 0
            and _metric_sum(agent, "orb8_flows_active", pod="client") >= FLOWS
        )

    wait_for(warmed_up, timeout=300, interval=2,
             what=f"{FLOWS} active flows and alerts in the session status")  # fmt: skip
    soak = Soak()
    every = max(5.0, soak_s / 60)  # about 60 samples, never more often than 5 s
    start = time.monotonic()
    while (now := time.monotonic()) - start < soak_s:
        soak.samples.append(_sample(plane, namespace, agent, operator_pid, at=now - start))
        time.sleep(max(0.0, every - (time.monotonic() - now)))
    soak.samples.append(_sample(plane, namespace, agent, operator_pid,
                                at=time.monotonic() - start))  # fmt: skip
    return soak


def _sample(
    plane: ControlPlane, namespace: str, agent: AgentProcess, operator_pid: int, *, at: float
) -> Sample:
    held = procstats.held_maps(pid=agent.proc.pid)
    obj, size = _session_object(plane, namespace)
    summary = (obj.get("status") or {}).get("summary") or {}
    return Sample(
        at=at,
        agent_rss=procstats.rss_bytes(pid=agent.proc.pid),
        operator_rss=procstats.rss_bytes(pid=operator_pid),
        maps={m.name: m.entries for m in held if m.entries is not None},
        memlock=sum(m.memlock for m in held),
        status_bytes=size,
        active_flows=_metric_sum(agent, "orb8_flows_active", pod="client"),
        alert_count=int(summary.get("alerts") or 0),
    )


def _assert_flat(soak: Soak) -> None:
    # The flow maps (flows4, flows6: the kernel's map names) are drained every report:
    # a snapshot holds what arrived since, at most both veths' entries of every flow.
    # Other maps hold cgroups and counts.
    drained = {"flows4": 2 * FLOWS, "flows6": 2 * FLOWS}
    problems = soakcheck.problems(samples=soak.samples, flows=FLOWS, expected_maps=drained)
    assert not problems, "\n".join(problems)


def _record(soak: Soak, *, soak_s: int, agent_cpu_s: float, operator_cpu_s: float) -> None:
    first, last = soak.thirds()

    def mib(values: Sequence[int]) -> str:
        return f"{mean(values) / MIB:.1f}"

    peaks = ", ".join(
        f"{name} ≤ {max(s.maps.get(name, 0) for s in soak.samples)}"
        for name in sorted(set().union(*(s.maps for s in soak.samples)))
    )
    elapsed = soak.samples[-1].at
    reliability.record(
        fault=f"soak: {FLOWS:,} active UDP flows and 10 alerts/s for {soak_s} s",
        asserted=(
            f"RSS flat, first third → last third: agent {mib([s.agent_rss for s in first])} → "
            f"{mib([s.agent_rss for s in last])} MiB, operator "
            f"{mib([s.operator_rss for s in first])} → {mib([s.operator_rss for s in last])} MiB; "
            f"agent BPF map entries bounded ({peaks}), memlock "
            f"{mib([s.memlock for s in last])} MiB; session object "
            f"{mean([s.status_bytes for s in last]) / 1024:.0f} KiB; every flow active in "
            f"all {len(soak.samples)} samples; CPU over the whole run incl. warm-up: agent "
            f"{agent_cpu_s:.0f} s, operator {operator_cpu_s:.0f} s ({elapsed:.0f} s sampled)"
        ),
        recovery_s=None,
    )
