"""The agent's /readyz follows its NodeAgentConfig watch through an apiserver crash.

A private control plane (the session's shared one must keep running): the
agent process watches it, the apiserver is killed and started again on the
same address, and the agent must turn unready, ready again, and keep
reporting (its heartbeat in NodeAgentConfig status advances).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from orb8_dev import controlplane
from orb8_dev.controlplane import REPO_ROOT, ControlPlane, free_port
from tests.e2e.conftest import AGENT, AgentProcess, get_json, wait_for

NODE = "node-health"


@pytest.fixture
def private_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    plane = controlplane.start(state_dir=tmp_path / "controlplane")
    try:
        plane.apply_crds()
        yield plane
    finally:
        controlplane.stop(state_dir=plane.state_dir)


def _probe(agent: AgentProcess, path: str) -> tuple[int, str]:
    try:
        url = f"http://127.0.0.1:{agent.http_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _metric(agent: AgentProcess, line_prefix: str) -> float | None:
    status, text = _probe(agent, "/metrics")
    for line in text.splitlines() if status == 200 else []:
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _heartbeat(plane: ControlPlane) -> datetime | None:
    status = get_json(plane, "nac", NODE).get("status") or {}
    beat = status.get("heartbeat")
    return datetime.fromisoformat(beat.replace("Z", "+00:00")) if beat else None


def test_readyz_turns_false_while_the_apiserver_is_down_and_the_agent_recovers(
    private_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = private_plane
    config = {"apiVersion": "orb8.io/v1alpha1", "kind": "NodeAgentConfig",
              "metadata": {"name": NODE}, "spec": {"nodeName": NODE, "sessions": []}}  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(config))
    log = tmp_path / "agent.log"
    port = free_port()
    proc = subprocess.Popen(
        [*AGENT, "--node", NODE, "--agent-id", f"agent-{tmp_path.name}",
         "--kubeconfig", str(plane.kubeconfig), "--cgroup-root",
         str(tmp_path), "--http-host", "127.0.0.1", "--http-port", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    agent = AgentProcess(node=NODE, proc=proc, http_port=port, log=log)
    try:
        wait_for(lambda: _probe(agent, "/readyz")[0] == 200, timeout=90,
                 what="the agent ready against the private apiserver")  # fmt: skip
        assert _probe(agent, "/healthz") == (200, "ok")
        wait_for(lambda: _heartbeat(plane), timeout=60, what="a first heartbeat")
        watch = '{watch="nodeagentconfig"}'
        assert _metric(agent, f"orb8_watch_connected{watch}") == 1.0
        reconnects_before = _metric(agent, f"orb8_watch_reconnects_total{watch}") or 0.0

        before = _heartbeat(plane)
        assert before is not None
        controlplane.stop_apiserver(state_dir=plane.state_dir)
        code, why = wait_for(
            lambda: (r := _probe(agent, "/readyz"))[0] == 503 and r, timeout=60,
            what="/readyz to fail while the apiserver is down",
        )  # fmt: skip
        assert "disconnected" in why, why
        # Alive and unready: the process loop runs, only the watch is down.
        assert _probe(agent, "/healthz") == (200, "ok")
        assert _metric(agent, f"orb8_watch_connected{watch}") == 0.0
        assert proc.poll() is None, agent.logs()

        controlplane.start_apiserver(state_dir=plane.state_dir)
        wait_for(lambda: _probe(agent, "/readyz")[0] == 200, timeout=120,
                 what="/readyz to pass again once the apiserver is back")  # fmt: skip
        after = wait_for(
            lambda: (beat := _heartbeat(plane)) is not None and beat > before and beat,
            timeout=120, what="a heartbeat newer than the one before the crash",
        )  # fmt: skip
        assert after > before
        assert (_metric(agent, f"orb8_watch_reconnects_total{watch}") or 0.0) > reconnects_before
        assert _metric(agent, f"orb8_watch_connected{watch}") == 1.0
        assert proc.poll() is None, agent.logs()
    finally:
        code = agent.stop()
        print(agent.logs()[-3000:])
    assert code == 0
