"""``orb8 trace`` and ``orb8 diagnose`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

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


@pytest.mark.kernel
def test_trace_network_json(pair: netns.VethPair) -> None:
    """Ctrl-C ends the trace; the JSON flows match the veth's own counters."""
    warm_neighbours(pair)
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
    assert proc.returncode == 0, err
    assert "\r" not in err  # no progress line when stderr is not a terminal
    flows = json.loads(out)
    assert flows and all(set(f) >= FLOW_KEYS for f in flows)
    # sorted by bytes, largest first
    assert [f["bytes"] for f in flows] == sorted((f["bytes"] for f in flows), reverse=True)
    top = flows[0]
    assert (top["protocol"], top["direction"], top["dst_port"]) == ("TCP", "egress", 6001)
    # The oracle counts what the probe counts: every byte the veth carried, headers included.
    assert top["bytes"] == pytest.approx(after["tx_bytes"] - before["tx_bytes"], rel=0.01)
    assert top["packets"] == pytest.approx(after["tx_packets"] - before["tx_packets"], abs=2)
    assert top["bytes"] >= sent["sent"]
    assert {"SYN", "FIN", "ACK"} <= set(top["tcp_flags"])
    back = [f for f in flows if f["direction"] == "ingress" and f["src_port"] == 6001]
    assert len(back) == 1
    # The ACK flow is a few KiB, where 1% is less than one packet; the veth also
    # receives the odd control packet (IPv6 MLD, ND) the flow rightly leaves out.
    rx = after["rx_bytes"] - before["rx_bytes"]
    assert rx - 2 * 128 <= back[0]["bytes"] <= rx


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
                "40",
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
                "2s",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        victim.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["cgroup_id"] == cg_id
    counts = {c["syscall"]: c["count"] for c in doc["counts"]}
    assert counts["mount"] >= 5
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
    assert {p["name"]: p["loadable"] for p in doc["probes"]} == {"flows": True, "syscalls": True}
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
