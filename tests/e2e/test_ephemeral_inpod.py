"""The trace pod's side of ``orb8 trace dns|syscalls --pod``, run here for real.

The workstation side reads the target from a real apiserver
(:func:`orb8_cli.ephemeral.read_target`) and builds the trace pod's command
(:func:`orb8_cli.ephemeral.in_pod_command`); that exact command then runs on
this machine as the pod would run it on the target's node (root, the host's
network and PID namespaces), only with the simulated node's cgroup tree in
place of the pod's ``/host/cgroup`` mount. It must find the target's cgroups
and host veth itself, print one result line, and that line must render as the
local trace would. Oracles: the DNS client's own log of queries and rcodes;
the victim's exact call count and pid; the victim's own errno for a call a
seccomp filter refused. (Creating and removing the pod is the real-node test's
part: tests/node/test_ephemeral_trace.py.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from orb8_cli import ephemeral
from orb8_cli.ephemeral import PROBE_ATTACHED
from orb8_cli.kube import core_api
from orb8_cli.main import build_parser
from orb8_dev.controlplane import REPO_ROOT, ControlPlane
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.traffic_ctl import tc_filters
from tests.e2e.conftest import VICTIM, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.kernel]

DNSLOAD = [sys.executable, "-m", "orb8_dev.dnsload"]
PLAN: list[dict[str, Any]] = (
    [{"name": "cart.shop", "qtype": "A"}] * 5
    + [{"name": "typo.nx", "qtype": "A"}] * 3
    + [{"name": "flaky.fail", "qtype": "AAAA"}] * 2
    + [{"name": "tcp.shop", "qtype": "A", "tcp": True}] * 2
)
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}


class InPodTrace:
    """The trace pod's command, running here; stderr read as it comes."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orb8_cli.main", *command[1:]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def wait_attached(self) -> None:
        def live() -> bool:
            return any(PROBE_ATTACHED in line for line in self.err) or self.proc.poll() is not None

        wait_for(live, timeout=90, what="the probe attached")
        assert self.proc.poll() is None, self.finish()

    def finish(self) -> tuple[str, str]:
        """Stop it as the pod's deletion does (SIGTERM); its stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        self._reader.join(timeout=30)
        return out, "".join(self.err)


def _command(plane: ControlPlane, kubelet: SimKubelet, pod: SimPod, argv: list[str]) -> list[str]:
    """What `orb8 trace … --pod NS/POD` would run in the trace pod, aimed at this cgroup tree."""
    args: argparse.Namespace = build_parser().parse_args(
        ["trace", *argv, "--pod", f"{pod.namespace}/{pod.name}"]
    )
    target = ephemeral.read_target(core=core_api(kubeconfig=str(plane.kubeconfig)),
                                   namespace=pod.namespace, name=pod.name)  # fmt: skip
    assert target.node == pod.node and target.container_ids == (f"containerd://{pod.container_id}",)
    command = ephemeral.in_pod_command(args=args, probe=argv[0], duration=300, target=target)
    at = command.index("--cgroup-root")
    command[at + 1] = str(kubelet.cgroup_root)  # the pod's /host/cgroup mount
    return command


def _result(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith(ephemeral.RESULT_PREFIX)]
    assert len(lines) == 1, out
    result = ephemeral._take_line(lines[0], [])
    assert result is not None
    return result


@pytest.fixture
def client(kubelet: SimKubelet, namespace: str) -> SimPod:
    kubelet.add_node(name="node-a")
    return kubelet.run_pod(namespace=namespace, name="client", node="node-a")


@pytest.fixture
def dns_server(kubelet: SimKubelet, namespace: str, client: SimPod) -> Iterator[SimPod]:
    server = kubelet.run_pod(namespace=namespace, name="dns", node="node-a")
    proc = server.spawn([*DNSLOAD, "server", "--bind", server.ip], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, cwd=REPO_ROOT)  # fmt: skip
    try:
        assert proc.stdout is not None and b"listening" in proc.stdout.readline()
        yield server
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_dns_trace_pod_traces_the_targets_veth(
    control_plane: ControlPlane, kubelet: SimKubelet, client: SimPod, dns_server: SimPod,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    trace = InPodTrace(_command(control_plane, kubelet, client, ["dns", "-o", "json"]))
    trace.wait_attached()
    assert "orb8_dns" in tc_filters(None, client.host_if)
    assert "orb8_dns" not in tc_filters(None, dns_server.host_if)  # only the target's veth
    out = client.run([*DNSLOAD, "client", "--server", dns_server.ip, "--timeout", "5",
                      "--plan", json.dumps(PLAN)])  # fmt: skip
    log = json.loads(out.strip().splitlines()[-1])["log"]
    assert all(e["rcode"] is not None for e in log)
    out, err = trace.finish()
    assert trace.proc.returncode == 0, err
    assert "orb8_dns" not in tc_filters(None, client.host_if)  # detached on SIGTERM
    result = _result(out)
    assert result["probe"] == "dns" and result["interfaces"] == [client.host_if]
    assert result["summary"].startswith(f"{len(PLAN)} queries on {client.host_if}")
    got = Counter[tuple[str, str, str]]()
    for row in result["rows"]:
        assert (row["src_ip"], row["dst_ip"], row["interface"]) == (
            client.ip, dns_server.ip, client.host_if)  # fmt: skip
        got[(row["query"], row["qtype"], row["rcode"])] += row["count"]
    assert got == Counter((e["name"], e["qtype"], RCODES[e["rcode"]]) for e in log)
    # the workstation prints it as `orb8 trace dns --local -o json` would
    ephemeral._print_result(result=result, probe="dns", output="json")
    assert json.loads(capsys.readouterr().out) == result["rows"]
    ephemeral._print_result(result=result, probe="dns", output="table")
    table, summary = capsys.readouterr()
    with capsys.disabled():
        print(f"\n{table}{summary}")  # the example in docs/cli.md
    assert table.split()[:3] == ["QUERY", "TYPE", "RCODE"] and "typo.nx" in table


def test_the_syscalls_trace_pod_counts_the_targets_calls(
    control_plane: ControlPlane, kubelet: SimKubelet, client: SimPod,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = ["syscalls", "--alert", "mount", "--alert", "ptrace", "-o", "json"]
    trace = InPodTrace(_command(control_plane, kubelet, client, argv))
    trace.wait_attached()
    pid = int(client.run([*VICTIM, "--calls", "mount,ptrace", "--repeat", "7"]).split()[-1])
    out, err = trace.finish()
    assert trace.proc.returncode == 0, err
    result = _result(out)
    assert result["cgroup_id"] == client.cgroup.id
    assert result["seccomp_filtered_pids"] == []
    counts = {c["syscall"]: c["count"] for c in result["counts"]}
    assert (counts["mount"], counts["ptrace"]) == (7, 7)
    assert Counter(a["syscall"] for a in result["alerts"]) == {"mount": 7, "ptrace": 7}
    assert {(a["pid"], a["comm"]) for a in result["alerts"]} == {(pid, "orb8-victim")}
    ephemeral._print_result(result=result, probe="syscalls", output="table")
    table = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{table}")  # the example in docs/cli.md
    assert f"{pid}  {pid}  orb8-victim  ptrace" in table


def test_the_syscalls_trace_pod_names_what_seccomp_hides(
    control_plane: ControlPlane, kubelet: SimKubelet, client: SimPod
) -> None:
    """A container under a profile that refuses ptrace (as a RuntimeDefault profile
    refuses mount): the refused calls are not seen, and the result says why."""
    argv = ["syscalls", "--alert", "mount", "--alert", "ptrace", "-o", "json"]
    trace = InPodTrace(_command(control_plane, kubelet, client, argv))
    trace.wait_attached()
    victim = client.spawn([*VICTIM, "--calls", "mount,ptrace", "--repeat", "5", "--seccomp-deny",
                           "ptrace", "--errnos", "--hold"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert victim.stderr is not None
        errnos = victim.stderr.readline().decode().split()  # its calls are done; it holds
        assert errnos == ["mount=ENOENT", "ptrace=EPERM"]  # seccomp refused ptrace
        out, err = trace.finish()
    finally:
        victim.kill()
        victim.wait(timeout=30)
    assert trace.proc.returncode == 0, err
    result = _result(out)
    assert victim.pid in result["seccomp_filtered_pids"]
    counts = {c["syscall"]: c["count"] for c in result["counts"]}
    assert counts["mount"] == 5 and "ptrace" not in counts
    assert Counter(a["syscall"] for a in result["alerts"]) == {"mount": 5}
