"""The learned syscall baseline, end to end: a real process in a pod's real cgroup,
the real syscall probe, the agent and the operator, the session's status and
``orb8 get alerts``.

The workload (orb8_dev/syscall_workload.py) makes a fixed syscall mix. The
session learns it, stays quiet through steady windows and an agent restart
(the baseline is kept, not relearned), then alerts with ``not seen during
learning`` on a syscall the workload never made, and with ``rate spike``
when it bursts a known one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import AgentProcess, get_json, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.cluster]

APP = {"app": "baseline"}
BASELINE_REASONS = {"not seen during learning", "rate spike"}
BURST = 300_000


def _metrics(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The agent's samples; none while its http server is not up yet."""
    try:
        url = f"http://127.0.0.1:{agent.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _metric(agent: AgentProcess, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in _metrics(agent).items()
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )  # fmt: skip


def _alerts(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    st = get_json(plane, "ts", "learn", "-n", namespace).get("status") or {}
    return list(st.get("alerts") or [])


@pytest.fixture
def workload(kubelet: SimKubelet, namespace: str) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    kubelet.add_node(name="node-a")
    pod = kubelet.run_pod(namespace=namespace, name="web", node="node-a", labels=APP)
    proc = pod.spawn([sys.executable, "-m", "orb8_dev.syscall_workload"], stdin=subprocess.PIPE)
    yield pod, proc
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_learns_a_workload_then_alerts_on_a_new_syscall_and_a_burst(
    control_plane: ControlPlane, namespace: str, operator: Any, start_agent: Any,
    workload: tuple[Any, subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    _, proc = workload
    assert proc.stdin is not None
    agent: AgentProcess = start_agent("node-a")
    body = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "learn", "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": APP}},
            "probes": {"syscalls": {
                "enabled": True, "alertOn": ["ptrace"], "learningPeriod": "6s",
                "baseline": {"spikeFactor": 10, "spikeMinCount": 5000},
            }},
            "reportInterval": "1s",
        },
    }  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))

    # Steady state: the container's baseline is learned, then judged window after window.
    wait_for(lambda: _metric(agent, "orb8_syscall_baseline_containers", state="learned") >= 1,
             timeout=90, what="the web container's baseline learned")  # fmt: skip
    judged = _metric(agent, "orb8_syscall_baseline_windows_total", result="judged")
    wait_for(
        lambda: _metric(agent, "orb8_syscall_baseline_windows_total", result="judged")
        >= judged + 8, timeout=60, what="eight steady windows judged",
    )  # fmt: skip
    assert _alerts(control_plane, namespace) == []
    assert _metric(agent, "orb8_syscall_baseline_alerts_total") == 0

    # An agent restart continues from the baseline it saved under /run/orb8: the new
    # process judges from its first window and learns nothing again.
    assert agent.stop() == 0, agent.logs()
    agent = start_agent("node-a")
    wait_for(
        lambda: _metric(agent, "orb8_syscall_baseline_windows_total", result="judged") >= 3,
        timeout=90, what="the restarted agent judging windows",
    )  # fmt: skip
    assert _metric(agent, "orb8_syscall_baseline_windows_total", result="learned") == 0
    assert _metric(agent, "orb8_syscall_baseline_containers", state="learning") == 0
    assert _alerts(control_plane, namespace) == []

    # A syscall the workload never made while learning.
    proc.stdin.write(b"new\n")
    proc.stdin.flush()

    def found(syscall: str, reason: str) -> dict[str, Any] | None:
        for alert in _alerts(control_plane, namespace):
            if (alert["syscall"], alert.get("reason")) == (syscall, reason):
                return alert
        return None

    new = wait_for(lambda: found("getpriority", "not seen during learning"), timeout=60,
                   what="a 'not seen during learning' alert for getpriority")  # fmt: skip
    assert (new["pod"], new["container"], new["node"]) == ("web", "app", "node-a")
    assert new["severity"] == "Medium" and new["count"] >= 1
    assert "ratePerSecond" not in new

    # A burst of a syscall the baseline knows.
    proc.stdin.write(f"burst {BURST}\n".encode())
    proc.stdin.flush()

    spike = wait_for(lambda: found("getppid", "rate spike"), timeout=60,
                     what="a 'rate spike' alert for getppid's burst")  # fmt: skip
    assert spike["count"] >= 1  # windows above the threshold (the burst may straddle some)
    assert spike["severity"] in ("Low", "Medium")
    assert spike["ratePerSecond"] > 10 * spike["learnedRatePerSecond"]
    assert proc.poll() is None

    alerts = _alerts(control_plane, namespace)
    assert {(a["syscall"], a["reason"]) for a in alerts} == {
        ("getpriority", "not seen during learning"), ("getppid", "rate spike"),
    }, alerts  # fmt: skip
    assert _metric(agent, "orb8_syscall_baseline_alerts_total", reason="rate spike") >= 1
    assert (
        _metric(agent, "orb8_syscall_baseline_alerts_total", reason="not seen during learning") >= 1
    )

    cli = subprocess.run(
        [sys.executable, "-m", "orb8_cli.main", "get", "alerts", "learn", "-n", namespace],
        capture_output=True, text=True, env=control_plane.env(), timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    print(cli.stdout, json.dumps(alerts, indent=1))  # with -s; docs/syscall-baseline.md quotes it
    lines = cli.stdout.splitlines()
    assert lines[0].split()[-1] == "REASON"
    rows = {line.split()[3]: line for line in lines[1:]}
    assert rows["getpriority"].rstrip().endswith("not seen during learning")
    assert rows["getppid"].rstrip().endswith("rate spike")

    # The baseline file lives while the session does, and goes with it.
    args = [str(arg) for arg in agent.proc.args]  # type: ignore[union-attr]
    saved = Path("/run/orb8") / args[args.index("--agent-id") + 1] / "baseline.json"
    snapshot = json.loads(saved.read_text())["sessions"]
    [containers] = [snap["containers"] for snap in snapshot.values()]
    assert [(c["pod"], c["container"]) for c in containers] == [("web", "app")]
    assert {"getppid", "read", "clock_nanosleep"} <= set(containers[0]["learned"])
    assert "getpriority" not in containers[0]["learned"]
    control_plane.kubectl("delete", "ts", "learn", "-n", namespace, "--timeout=60s")
    wait_for(lambda: not saved.exists(), timeout=60, what=f"{saved} removed with the session")
