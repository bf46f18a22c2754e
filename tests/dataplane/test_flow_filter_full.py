"""A kernel flow filter the maps cannot hold shows in the sessions' status and metrics.

32 sessions (the most distinct filters one interface takes) each count 16
ports of their own on the same pods, so every pod's host veth holds 512
entries in the port hash ``flow_filter_ports``. One pod more than the hash
holds (its max_entries, read from flows.bpf.o, not shrunk) makes the real
kernel refuse the last interface's entries. Then:

- every session's node entry is Degraded, names that pod, and counts it in
  ``unfilteredPods``; the agent's metrics say 1 unapplied pod;
- that veth counts every packet in the kernel (a port no session lists
  reaches the flow map, as many packets and bytes as nft counted), while a
  filtered veth keeps the same traffic out;
- once a pod leaves the sessions there is room: the refused filter is
  written at the next configure and the status and gauge clear.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.kernel import KernelDataPlane
from orb8_agent.control.served import Served
from orb8_agent.control.veth import HostVeth
from orb8_agent.dataplane import libbpf, tc
from orb8_agent.dataplane.abi import FILTER_CLAUSES
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.metrics import build_registry
from orb8_common.models import (
    MAX_FILTER_PORTS,
    NodeAgentConfigSpec,
    SessionReport,
    parse_trace_session_spec,
)
from orb8_dev import cgroups, netns
from orb8_dev.nftcount import ETH_HLEN, ingress_counters
from orb8_dev.traffic_ctl import finish_sink, start_sink, traffic, warm_neighbours

pytestmark = pytest.mark.kernel

PORTS_PER_IF = FILTER_CLAUSES * MAX_FILTER_PORTS  # 512: all in the hash (more than 16 inline)
FIRST_PORT = 20000  # session i lists FIRST_PORT + 16 i .. + 16 i + 15
UNLISTED = 9999  # in no session's filter


def _uid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _port_map_entries() -> int:
    """max_entries of flow_filter_ports as flows.bpf.o declares it (the agent keeps it)."""
    obj = libbpf.BpfObject(path=object_path(name="flows"))
    try:
        return int(libbpf.lib().bpf_map__max_entries(obj.map_ptr(name="flow_filter_ports")))
    finally:
        obj.close()


@contextlib.contextmanager
def _veths(count: int) -> Iterator[tuple[str, str, list[str]]]:
    """``count`` veth pairs: host ends fh<i> in namespace A, pod ends fp<i> in B."""
    with netns.namespace("o8fa") as ns_a, netns.namespace("o8fb") as ns_b:
        batch = "".join(
            f"link add fh{i} type veth peer name fp{i} netns {ns_b}\nlink set fh{i} up\n"
            for i in range(count)
        )
        subprocess.run(["ip", "-n", ns_a, "-batch", "-"], input=batch, text=True, check=True)
        yield ns_a, ns_b, [f"fh{i}" for i in range(count)]


def _served(*, pods: list[dict[str, object]]) -> list[Served]:
    config = NodeAgentConfigSpec.model_validate(
        {
            "nodeName": "node-a",
            "sessions": [
                {"uid": f"s{i}", "kind": "TraceSession", "namespace": "shop", "name": f"s{i}",
                 "pods": pods}
                for i in range(FILTER_CLAUSES)
            ],
        }
    )  # fmt: skip
    served = []
    for i, session in enumerate(config.sessions):
        first = FIRST_PORT + MAX_FILTER_PORTS * i
        network = {
            "enabled": True, "tcpHealth": False,
            "filter": {"ports": list(range(first, first + MAX_FILTER_PORTS))},
        }  # fmt: skip
        served.append(
            Served(session=session, spec=parse_trace_session_spec({"probes": {"network": network}}))
        )
    return served


def _metric(agent: NodeAgent, probes: ProbeSet, name: str) -> float:
    registry, _ = build_registry(agent=agent, probes=probes, watches=[])
    text = generate_latest(registry).decode()
    values = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]
    assert len(values) == 1, (name, values)
    return values[0]


def _entries(reports: list[SessionReport]) -> set[tuple[str, int, str]]:
    """{(state, unfilteredPods, message)} over the sessions' node entries."""
    found: set[tuple[str, int, str]] = set()
    for report in reports:
        assert report.trace is not None
        found.add((report.trace.state, report.trace.unfiltered_pods, report.trace.message))
    return found


def _address(*, ns_a: str, ns_b: str, index: int, host_if: str) -> netns.VethPair:
    pair = netns.VethPair(
        ns_a=ns_a, ns_b=ns_b, if_a=host_if, if_b=f"fp{index}",
        ip4_a=f"10.77.{index}.1", ip4_b=f"10.77.{index}.2",
        ip6_a=f"fd00:77:{index:x}::1", ip6_b=f"fd00:77:{index:x}::2",
    )  # fmt: skip
    for ns, ifname, ip4, ip6 in ((ns_a, pair.if_a, pair.ip4_a, pair.ip6_a),
                                 (ns_b, pair.if_b, pair.ip4_b, pair.ip6_b)):  # fmt: skip
        netns.run(["ip", "addr", "add", f"{ip4}/24", "dev", ifname], netns=ns)
        netns.run(["ip", "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad"], netns=ns)
        netns.run(["ip", "link", "set", ifname, "up"], netns=ns)
    warm_neighbours(pair)
    return pair


def _send_unlisted(pair: netns.VethPair, count: int) -> None:
    sink = start_sink(
        pair.ns_a, "udp-sink", "--bind", pair.ip4_a, "--port", str(UNLISTED), "--duration", "1"
    )
    sent = traffic(
        pair.ns_b, "udp-send", "--dst", pair.ip4_a, "--port", str(UNLISTED), "--size", "100",
        "--count", str(count),
    )  # fmt: skip
    finish_sink(sink)
    assert sent["sent"] == count


def test_a_filter_the_maps_cannot_hold_shows_in_status_and_metrics(flow_probes: ProbeSet) -> None:
    flows = flow_probes.flows
    assert flows is not None
    capacity = _port_map_entries()
    count = capacity // PORTS_PER_IF + 1  # one interface more than the hash holds
    with contextlib.ExitStack() as stack:
        ns_a, ns_b, names = stack.enter_context(_veths(count))
        base = stack.enter_context(cgroups.cgroup(relative="kubepods/besteffort"))
        root = base.path.parents[1]
        with netns.enter(ns_a):
            ifindex = {name: tc.ifindex_of(interface=name) for name in names}
        pods: list[dict[str, object]] = []
        veth_of_pid: dict[int, HostVeth] = {}
        sleepers: list[subprocess.Popen[bytes]] = []

        def stop_sleepers() -> None:
            for proc in sleepers:
                proc.kill()
                proc.wait()

        stack.callback(stop_sleepers)  # before the cgroups go (callbacks run last in, first out)
        for i, name in enumerate(names):
            uid, cid = _uid(), secrets.token_hex(32)
            container = base.path / f"pod{uid}" / cid
            container.mkdir(parents=True)
            proc = subprocess.Popen(["sleep", "600"])
            sleepers.append(proc)
            cgroups.Cgroup(path=container).add(pid=proc.pid)
            veth_of_pid[proc.pid] = HostVeth(ifindex=ifindex[name], name=name)
            pods.append({
                "uid": uid, "namespace": "shop", "name": f"pod-{i}",
                "containers": [{"name": "app", "id": f"containerd://{cid}"}],
            })  # fmt: skip
        agent = NodeAgent(
            node="node-a", dataplane=KernelDataPlane(probes=flow_probes), cgroup_root=root,
            veth_resolver=lambda pid: veth_of_pid[pid],
        )  # fmt: skip

        def shutdown() -> None:
            with netns.enter(ns_a):
                agent.shutdown()

        stack.callback(shutdown)  # detach before the namespaces go (a second call does nothing)
        with netns.enter(ns_a):
            agent.configure(sessions=_served(pods=pods))
            assert agent.attached_interfaces == frozenset(names)
            refused = sorted(set(ifindex.values()) - set(flows.filters))
            assert len(refused) == 1, refused
            agent.collect()
            reports = agent.reports()
        index = next(i for i, name in enumerate(names) if ifindex[name] == refused[0])
        assert len(reports) == FILTER_CLAUSES
        assert _entries(reports) == {(
            "Degraded", 1,
            f"kernel flow filter not applied on shop/pod-{index} (BPF map flow_filter_ports is "
            "full): counting all packets there, rows still filtered",
        )}  # fmt: skip
        assert _metric(agent, flow_probes, "orb8_flow_filter_unapplied_pods") == 1
        assert _metric(agent, flow_probes, "orb8_flow_filter_write_failures_total") >= 1

        # in the kernel: the refused veth counts a port no session lists, a filtered one does not
        other = 0 if index != 0 else 1
        unfiltered = _address(ns_a=ns_a, ns_b=ns_b, index=index, host_if=names[index])
        filtered = _address(ns_a=ns_a, ns_b=ns_b, index=other, host_if=names[other])
        with netns.enter(ns_a):
            flows.read_flows()  # from empty maps
            filtered_before = flows.stats().filtered
        rules = {"p": f"ip daddr {unfiltered.ip4_a} udp dport {UNLISTED}"}
        with ingress_counters(netns=ns_a, interface=names[index], rules=rules) as counted:
            _send_unlisted(unfiltered, 60)
            _send_unlisted(filtered, 40)
            with netns.enter(ns_a):
                rows = flows.read_flows()
                kept_out = flows.stats().filtered - filtered_before
            oracle = counted()
        packets, nbytes = oracle["p"]
        assert packets == 60
        on_refused = [
            (r.packets, r.bytes) for r in rows
            if r.ifindex == refused[0] and r.dst_port == UNLISTED and r.protocol == 17
        ]  # fmt: skip
        assert on_refused == [(packets, nbytes + ETH_HLEN * packets)]
        assert not [r for r in rows if r.ifindex == ifindex[names[other]] and r.protocol == 17]
        assert kept_out >= 40

        # room again: a pod leaves, the refused filter is written, status and gauge clear
        leaving = next(i for i in range(count) if i not in (index, other))
        with netns.enter(ns_a):
            agent.configure(sessions=_served(pods=[p for i, p in enumerate(pods) if i != leaving]))
            assert refused[0] in flows.filters
            assert len(flows.filters) == count - 1
            agent.collect()
            reports = agent.reports()
        assert _entries(reports) == {("Running", 0, "")}
        assert _metric(agent, flow_probes, "orb8_flow_filter_unapplied_pods") == 0
