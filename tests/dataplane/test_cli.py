"""``orb8 trace`` and ``orb8 diagnose`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from orb8_cli.main import main
from orb8_dev import netns
from orb8_dev.cgroups import cgroup
from orb8_dev.traffic_ctl import finish_sink, start_sink, tc_filters, traffic, warm_neighbours

ORB8 = [sys.executable, "-m", "orb8_cli.main"]
FLOW_KEYS = {
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "protocol",
    "direction",
    "bytes",
    "packets",
    "tcp_flags",
}


def _bracket(flows: list[dict[str, Any]], direction: str) -> tuple[int, int]:
    sel = [f for f in flows if f["direction"] == direction]
    return sum(f["bytes"] for f in sel), sum(f["packets"] for f in sel)


@pytest.mark.kernel
def test_trace_network_json(pair: netns.VethPair) -> None:
    """Ctrl-C ends the trace; the JSON flows match the veth's own counters.

    The veth's counters are read twice on each side of the trace: outside it
    (before the process starts, after it exits) and inside it (once the filter
    is attached, before Ctrl-C). Whatever else crosses the veth meanwhile (IPv6
    router solicitations and MLD reports of the fresh interfaces), every packet
    the trace counts lies in the outer window, and every packet of the inner
    window is counted: the flows' totals lie between the two.
    """
    warm_neighbours(pair)
    outer_before = pair.counters(side="a")
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "-i",
            pair.if_a,
            "--duration",
            "5m",
            "--output",
            "json",
            "--agent-id",
            f"cli-{pair.ns_a}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while "orb8_flows" not in tc_filters(pair.ns_a, pair.if_a):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    before = pair.counters(side="a")
    sink = start_sink(pair.ns_b, "tcp-sink", "--bind", pair.ip4_b, "--port", "6001")
    sent = traffic(
        pair.ns_a, "tcp-send", "--dst", pair.ip4_b, "--port", "6001", "--bytes", str(5 << 20)
    )
    finish_sink(sink)
    after = pair.counters(side="a")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    outer_after = pair.counters(side="a")
    assert proc.returncode == 0, err
    assert "\r" not in err  # no progress line when stderr is not a terminal
    flows = json.loads(out)
    assert flows and all(set(f) >= FLOW_KEYS for f in flows)
    # sorted by bytes, largest first
    assert [f["bytes"] for f in flows] == sorted((f["bytes"] for f in flows), reverse=True)
    top = flows[0]
    assert (top["protocol"], top["direction"], top["dst_port"]) == ("TCP", "egress", 6001)
    # The bulk flow is nearly all of the inner window's transmit, headers included.
    assert top["bytes"] == pytest.approx(after["tx_bytes"] - before["tx_bytes"], rel=0.01)
    assert top["bytes"] >= sent["sent"]
    assert {"SYN", "FIN", "ACK"} <= set(top["tcp_flags"])
    assert [f for f in flows if f["direction"] == "ingress" and f["src_port"] == 6001]
    for direction, side in (("egress", "tx"), ("ingress", "rx")):
        got_bytes, got_packets = _bracket(flows, direction)
        inner = after[f"{side}_bytes"] - before[f"{side}_bytes"]
        outer = outer_after[f"{side}_bytes"] - outer_before[f"{side}_bytes"]
        assert inner <= got_bytes <= outer, (direction, inner, got_bytes, outer)
        inner = after[f"{side}_packets"] - before[f"{side}_packets"]
        outer = outer_after[f"{side}_packets"] - outer_before[f"{side}_packets"]
        assert inner <= got_packets <= outer, (direction, inner, got_packets, outer)


@pytest.mark.kernel
def test_trace_network_table(pair: netns.VethPair) -> None:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "-i",
            pair.if_a,
            "--duration",
            "500ms",
            "--agent-id",
            f"cli-{pair.ns_a}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "SRC",
        "DST",
        "PORTS",
        "PROTO",
        "DIR",
        "BYTES",
        "PACKETS",
        "TCP",
        "RETRANS",
        "RST",
        "S/R",
        "CONNECT",
    ]


@pytest.mark.kernel
def test_trace_syscalls_json(kernel_ready: None) -> None:
    with cgroup() as cg:
        cg_id = cg.id
        victim = cg.spawn(
            [
                sys.executable,
                "-m",
                "orb8_dev.victim",
                "--calls",
                "mount",
                "--repeat",
                "1000000",  # until the trace is over: its start-up time varies with load
                "--interval",
                "0.1",
            ],
            stdout=subprocess.PIPE,
        )
        done = subprocess.run(
            [
                *ORB8,
                "trace",
                "syscalls",
                "--local",
                "--cgroup",
                str(cg.path),
                "--duration",
                "3s",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        victim.kill()
        victim.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["cgroup_id"] == cg_id
    assert doc["seccomp_filtered_pids"] == []  # no filter: nothing to warn about
    counts = {c["syscall"]: c["count"] for c in doc["counts"]}
    assert counts["mount"] >= 1
    assert doc["alerts"] and {a["syscall"] for a in doc["alerts"]} == {"mount"}
    assert {a["comm"] for a in doc["alerts"]} == {"orb8-victim"}
    assert {a["pid"] for a in doc["alerts"]} == {victim.pid}


@pytest.mark.kernel
def test_diagnose_json(kernel_ready: None) -> None:
    done = subprocess.run(
        [*ORB8, "diagnose", "--output", "json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
    doc = json.loads(done.stdout)
    assert doc["kernel"]["btf"] is True and doc["kernel"]["release"]
    assert {p["name"]: p["loadable"] for p in doc["probes"]} == {
        "flows": True, "syscalls": True, "tcp": True, "hostflows": True,
    }  # fmt: skip
    assert "BPF" in doc["capabilities"] or "SYS_ADMIN" in doc["capabilities"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trace", "network", "--local", "-i", "orb8-no-such-if", "-d", "1s"], "unknown interface"),
        (["trace", "network", "--local", "-d", "0s"], "greater than zero"),
        (["trace", "network", "--local", "-d", "soon"], "invalid duration"),
        (["trace", "network", "-d", "1s"], "--local"),
        (["trace", "network", "--local", "--top", "-1"], "--top"),
        (["trace", "syscalls", "--local", "--cgroup", "/orb8/no/such/cgroup"], "not a cgroup"),
        (["trace", "syscalls", "--local"], "required"),
        (["trace", "syscalls", "--local", "--pid", "999999999"], "no process"),
        (
            ["trace", "syscalls", "--local", "--pid", "1", "--alert", "nosuchcall", "-d", "1s"],
            "unknown syscall",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_not_root_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["trace", "network", "--local", "-i", "lo", "-d", "1s"]) == 2
    assert "needs root" in capsys.readouterr().err
    assert main(["trace", "syscalls", "--local", "--pid", str(os.getpid()), "-d", "1s"]) == 2
    assert "needs root" in capsys.readouterr().err


@pytest.mark.kernel
def test_trace_network_defaults_to_up_ethernet_interfaces(pair: netns.VethPair) -> None:
    """Inside the namespace the only up, non-loopback Ethernet device is the veth."""
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "--duration",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"flows on {pair.if_a};" in done.stderr
    netns.run(["ip", "link", "set", pair.if_a, "down"], netns=pair.ns_a)
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "--duration",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no interface to trace" in done.stderr


@pytest.mark.kernel
def test_trace_syscalls_names_processes_under_a_seccomp_filter(kernel_ready: None) -> None:
    """A seccomp-refused call is invisible to the probe (tests/dataplane/test_syscalls.py):
    the trace lists the filtered processes and says so on stderr."""
    with cgroup() as cg:
        victim = cg.spawn(
            [sys.executable, "-m", "orb8_dev.victim", "--calls", "mount,ptrace",
             "--seccomp-deny", "ptrace", "--repeat", "1000000", "--interval", "0.1"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        done = subprocess.run(
            [*ORB8, "trace", "syscalls", "--local", "--cgroup", str(cg.path), "--duration", "3s",
             "--alert", "mount", "--alert", "ptrace", "--output", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        victim.kill()
        victim.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["seccomp_filtered_pids"] == [victim.pid]
    counts = {c["syscall"]: c["count"] for c in doc["counts"]}
    assert counts["mount"] >= 1 and "ptrace" not in counts
    assert {a["syscall"] for a in doc["alerts"]} == {"mount"}
    notes = [line for line in done.stderr.splitlines() if "seccomp filter" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 1 traced processes"), done.stderr
