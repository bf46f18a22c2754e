"""The hostNetwork probe on the real kernel: two cgroups that share one network
namespace, one address and one interface are told apart, and their counts
match the veth's own counters; nothing stays attached afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from orb8_agent.dataplane.hostflows import HostFlowCollector
from orb8_agent.dataplane.models import Flow
from orb8_dev import cgroups, netns
from orb8_dev.nftcount import ingress_counters
from orb8_dev.traffic_ctl import TRAFFIC, gone, start_sink, warm_neighbours

pytestmark = pytest.mark.kernel

ETH = 14


@pytest.fixture
def collector(kernel_ready: None) -> Iterator[HostFlowCollector]:
    c = HostFlowCollector()
    c.open()
    try:
        yield c
    finally:
        c.close()


def _of(flows: list[Flow], *, cgroup_id: int, direction: str) -> tuple[int, int]:
    sel = [f for f in flows if f.cgroup_id == cgroup_id and f.direction == direction]
    return sum(f.bytes for f in sel), sum(f.packets for f in sel)


def _delta(before: dict[str, int], after: dict[str, int], what: str) -> tuple[int, int]:
    """IP bytes and packets from the veth's counters (they include the Ethernet header)."""
    packets = after[f"{what}_packets"] - before[f"{what}_packets"]
    return after[f"{what}_bytes"] - before[f"{what}_bytes"] - ETH * packets, packets


def _run_in(cg: cgroups.Cgroup, ns: str, *args: str) -> dict[str, float]:
    """Run the traffic tool inside ``cg`` and ``ns`` (a hostNetwork pod's process)."""
    proc = cg.spawn(
        [*TRAFFIC, *args],
        enter=["ip", "netns", "exec", ns],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def test_two_cgroups_on_one_address_are_told_apart(
    pair: netns.VethPair, collector: HostFlowCollector
) -> None:
    warm_neighbours(pair)
    with (
        cgroups.cgroup(relative="kubepods/besteffort/poda") as pod_a,
        cgroups.cgroup(relative="kubepods/besteffort/podb") as pod_b,
    ):
        id_a = collector.attach(cgroup=pod_a.path)
        id_b = collector.attach(cgroup=pod_b.path)
        assert {id_a, id_b} == {pod_a.id, pod_b.id} and id_a != id_b
        # the pods' processes live in container cgroups below the attached directories
        container_a = cgroups.Cgroup(path=pod_a.path / "c1")
        container_a.path.mkdir()
        container_b = cgroups.Cgroup(path=pod_b.path / "c1")
        container_b.path.mkdir()
        collector.read_flows()

        # phase 1: only pod A talks (TCP, both directions)
        before = pair.counters(side="a")
        sink = start_sink(pair.ns_b, "tcp-sink", "--bind", pair.ip4_b, "--port", "5301")
        sent = _run_in(
            container_a, pair.ns_a, "tcp-send", "--dst", pair.ip4_b, "--port", "5301",
            "--bytes", str(8 << 20),
        )  # fmt: skip
        sink.communicate(timeout=60)
        after = pair.counters(side="a")
        flows = collector.read_flows()
        tx_bytes, tx_packets = _delta(before, after, "tx")
        rx_bytes, rx_packets = _delta(before, after, "rx")
        eg_bytes, eg_packets = _of(flows, cgroup_id=id_a, direction="egress")
        in_bytes, in_packets = _of(flows, cgroup_id=id_a, direction="ingress")
        assert sent["sent"] == 8 << 20
        # Segments that reach the connection after its socket is gone (the peer's
        # FIN/ACK answered by the time-wait socket, which the kernel owns, not the
        # cgroup) are on the veth but on no pod's socket: a handful per connection.
        assert eg_bytes == pytest.approx(tx_bytes, rel=0.01)
        assert eg_packets == pytest.approx(tx_packets, rel=0.01, abs=3)
        assert 0 <= rx_packets - in_packets <= 8
        assert 0 <= rx_bytes - in_bytes <= 8 * 100
        assert in_packets > 0
        assert eg_bytes >= sent["sent"]
        assert _of(flows, cgroup_id=id_b, direction="egress") == (0, 0)
        assert _of(flows, cgroup_id=id_b, direction="ingress") == (0, 0)
        data = [f for f in flows if f.cgroup_id == id_a and f.direction == "egress"]
        assert {(f.src_ip, f.dst_ip, f.dst_port, f.protocol) for f in data} == {
            (pair.ip4_a, pair.ip4_b, 5301, 6)
        }

        # phase 2: only pod B talks, from the same address over the same veth (UDP: exact)
        sink = subprocess.Popen(
            ["ip", "netns", "exec", pair.ns_b, *TRAFFIC, "udp-sink", "--bind", pair.ip4_b,
             "--port", "5302", "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # the oracle: the datagrams that reached the peer, counted by nft on its ingress
        # (IPv6 router solicitations and MLD reports of the fresh veth cross it too)
        rules = {"datagrams": f"ip saddr {pair.ip4_a} udp dport 5302"}
        try:
            assert sink.stdout is not None and '"listening"' in sink.stdout.readline()
            with ingress_counters(netns=pair.ns_b, interface=pair.if_b, rules=rules) as counted:
                sent = _run_in(
                    container_b, pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5302",
                    "--size", "700", "--count", "300",
                )  # fmt: skip
                oracle = counted()
        finally:
            sink.kill()
            sink.communicate()
        flows = collector.read_flows()
        assert sent["sent"] == 300
        eg_bytes, eg_packets = _of(flows, cgroup_id=id_b, direction="egress")
        # every datagram of the socket, and nothing else
        assert oracle["datagrams"] == (300, 300 * (20 + 8 + 700))
        assert (eg_packets, eg_bytes) == oracle["datagrams"]
        assert _of(flows, cgroup_id=id_a, direction="egress") == (0, 0)
        udp = [f for f in flows if f.cgroup_id == id_b]
        assert {(f.src_ip, f.dst_port, f.protocol) for f in udp} == {(pair.ip4_a, 5302, 17)}


def test_detach_and_close_leave_no_program(
    pair: netns.VethPair, collector: HostFlowCollector
) -> None:
    with cgroups.cgroup(relative="kubepods/pod1") as pod:
        collector.attach(cgroup=pod.path)
        shown = _attached_names(pod)
        assert len(shown) == 2 and all(n.startswith("orb8_hostflows") for n in shown)
        ids = _attached_ids(pod)  # ours: another agent on this host may load the same programs
        collector.detach(cgroup=pod.path)
        assert _attached_names(pod) == []
        assert collector.cgroups == {}
        # re-attach, then close: the links and the programs go
        collector.attach(cgroup=pod.path)
        collector.close()
        assert _attached_names(pod) == []
    assert gone(ids, name_prefix="orb8_hostflows")


def test_sigkill_leaves_no_program(kernel_ready: None) -> None:
    """Links are owned by the process: a killed agent leaves nothing attached."""
    with cgroups.cgroup(relative="kubepods/pod2") as pod:
        script = (
            "import sys,pathlib;"
            "from orb8_agent.dataplane.hostflows import HostFlowCollector;"
            "c=HostFlowCollector();c.open();c.attach(cgroup=pathlib.Path(sys.argv[1]));"
            "print('attached',flush=True);sys.stdin.read()"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(pod.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "attached"
            assert len(_attached_names(pod)) == 2
            ids = _attached_ids(pod)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert gone(ids, name_prefix="orb8_hostflows")
        assert _attached_names(pod) == []


def _attached(cg: cgroups.Cgroup) -> list[dict[str, object]]:
    """Programs attached directly to ``cg``, as bpftool reports them."""
    out = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", str(cg.path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found: list[dict[str, object]] = json.loads(out.strip() or "[]")
    return found


def _attached_names(cg: cgroups.Cgroup) -> list[str]:
    return sorted(str(p.get("name", "")) for p in _attached(cg))


def _attached_ids(cg: cgroups.Cgroup) -> set[int]:
    return {int(str(p["id"])) for p in _attached(cg)}
