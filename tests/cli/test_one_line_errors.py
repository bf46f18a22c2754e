"""Every user error of every orb8 program is one line on stderr, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orb8_dev.controlplane import ControlPlane

BIN = Path(sys.executable).parent
NO_KUBECONFIG = "/nonexistent/kubeconfig"


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": NO_KUBECONFIG, **env},
    )  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess[str], prog: str, fragment: str) -> None:
    assert result.returncode in (1, 2), result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: ") and fragment in lines[0], lines[0]


CASES = [
    (["orb8", "get", "bogus"], "invalid choice"),
    (["orb8", "get", "flows"], "SESSION"),
    (["orb8", "get", "flows", "x", "-o", "yaml2"], "invalid choice"),
    (["orb8", "get", "flows", "x"], "cannot load kubeconfig"),
    (["orb8", "get", "gpus", "x", "--kubeconfig", "/etc/hostname"], "not a kubeconfig file"),
    (["orb8", "trace"], "KIND"),
    (["orb8", "trace", "network", "--local", "--duration", "5x"], "invalid duration"),
    (["orb8", "trace", "network", "--local", "--duration", "-5s"], "duration"),
    (["orb8", "trace", "network", "--local", "--interface", "nosuchif0", "-d", "1s"],
     "unknown interface"),
    (["orb8", "trace", "network", "--local", "--top", "-3", "-d", "1s"], "--top"),
    (["orb8", "trace", "syscalls", "--local", "--pid", "999999999", "-d", "1s"], "no process"),
    (["orb8", "trace", "syscalls", "--local", "--pid", "1", "--alert", "notasyscall", "-d", "1s"],
     "notasyscall"),
    (["orb8", "trace", "syscalls", "--local", "--cgroup", "/nonexistent", "-d", "1s"],
     "not a cgroup v2 directory"),
    (["orb8", "diagnose", "--bogus"], "unrecognized arguments"),
    (["orb8", "diagnose", "-o", "xml"], "invalid choice"),
    (["orb8-agent", "--bogus"], "unrecognized arguments"),
    (["orb8-agent", "--node", "n1", "--http-port", "99999"], "between 1 and 65535"),
    (["orb8-agent", "--node", "n1", "--http-port", "abc"], "not a port number"),
    (["orb8-agent", "--node", "n1", "--log-level", "loud"], "invalid choice"),
    (["orb8-agent", "--node", "n1", "--syscall-hook", "nope"], "invalid choice"),
    (["orb8-agent", "--node", "n1", "--kubeconfig", NO_KUBECONFIG], "no such file"),
    (["orb8-agent", "--node", "n1", "--kubeconfig", "/etc/hostname"], "not a kubeconfig file"),
    (["orb8-operator", "--bogus"], "unrecognized arguments"),
    (["orb8-operator", "--liveness", "notaurl"], "not an http://HOST:PORT/PATH URL"),
    (["orb8-operator", "--session-resync", "0"], "between 0 and 86400"),
    (["orb8-operator", "--allow-cross-namespace", "shop"], "expected FROM:TO"),
    (["orb8-operator"], "no such file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "fragment"), CASES, ids=[" ".join(argv)[:60] for argv, _ in CASES]
)
def test_user_errors_are_one_line(argv: list[str], fragment: str) -> None:
    assert_one_line(run(argv), argv[0], fragment)


def test_the_kubeconfig_that_is_not_one_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "kubeconfig"
    bogus.write_text("- just\n- a list\n")
    result = run(["orb8-operator"], KUBECONFIG=str(bogus))
    assert_one_line(result, "orb8-operator", f"{bogus}: not a kubeconfig file")


@pytest.mark.cluster
@pytest.mark.kernel
def test_agent_port_in_use_is_one_line(control_plane: ControlPlane) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["orb8-agent", "--node", "n1", "--kubeconfig", kubeconfig,
                      "--http-host", "127.0.0.1", "--http-port", str(port)])  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("orb8-agent: ")]
    assert errors == [errors[0]] and "cannot serve http on 127.0.0.1:" in errors[0], result.stderr
