"""Shared steps for data-plane tests: traffic inside test namespaces, tc/bpftool views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orb8_dev import netns

TRAFFIC = [sys.executable, "-m", "orb8_dev.traffic"]


def traffic(ns: str, *args: str) -> dict[str, Any]:
    out = netns.run([*TRAFFIC, *args], netns=ns)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def start_sink(ns: str, *args: str) -> subprocess.Popen[str]:
    """Start a sink and wait until it listens."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *TRAFFIC, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if '"listening"' not in line:
        proc.kill()
        raise RuntimeError(f"sink did not start: {line!r} {proc.communicate()[1]}")
    return proc


def finish_sink(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"sink failed: {err}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def warm_neighbours(pair: netns.VethPair) -> None:
    """Resolve ARP/ND both ways so no resolution traffic falls into a measurement."""
    traffic(pair.ns_a, "icmp", "--dst", pair.ip4_b, "--count", "1")
    traffic(pair.ns_a, "icmp", "--dst", pair.ip6_b, "--count", "2")
    for ns, ifname, ip4, ip6, peer in (
        (pair.ns_a, pair.if_a, pair.ip4_b, pair.ip6_b, pair.ns_b),
        (pair.ns_b, pair.if_b, pair.ip4_a, pair.ip6_a, pair.ns_a),
    ):
        del peer
        # pin the entries so re-validation probes cannot appear mid-test
        for ip in (ip4, ip6):
            line = netns.run(["ip", "-j", "neigh", "show", ip, "dev", ifname], netns=ns)
            entries = json.loads(line)
            if entries and entries[0].get("lladdr"):
                netns.run(
                    [
                        "ip",
                        "neigh",
                        "replace",
                        ip,
                        "lladdr",
                        entries[0]["lladdr"],
                        "dev",
                        ifname,
                        "nud",
                        "permanent",
                    ],
                    netns=ns,
                )


def tc_filters(ns: str | None, ifname: str) -> str:
    return (
        netns.run(["tc", "filter", "show", "dev", ifname, "ingress"], netns=ns)
        + netns.run(["tc", "filter", "show", "dev", ifname, "egress"], netns=ns)
    ).strip()


def has_clsact(ns: str, ifname: str) -> bool:
    return "clsact" in netns.run(["tc", "qdisc", "show", "dev", ifname], netns=ns)


def bpf_prog_ids(*, name_prefix: str) -> set[int]:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {p["id"] for p in json.loads(out) if p.get("name", "").startswith(name_prefix)}


def own_bpf_prog_ids(*, name_prefix: str) -> set[int]:
    """Programs this process holds an fd of (other processes may load the same objects)."""
    held: set[int] = set()
    fd_dir = Path("/proc/self/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/self/fdinfo/{fd.name}").read_text()
        except OSError:
            continue  # the fd of the directory listing itself, or one closed meanwhile
        for line in info.splitlines():
            if line.startswith("prog_id:"):
                held.add(int(line.split()[1]))
    return held & bpf_prog_ids(name_prefix=name_prefix)


def bpf_link_prog_ids() -> set[int]:
    out = subprocess.run(
        ["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {link["prog_id"] for link in json.loads(out or "[]")}


def gone(ids: set[int], *, name_prefix: str, timeout: float = 30.0) -> bool:
    """True once none of ``ids`` is loaded; programs are freed after an RCU grace period."""
    deadline = time.monotonic() + timeout
    while ids & bpf_prog_ids(name_prefix=name_prefix):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
