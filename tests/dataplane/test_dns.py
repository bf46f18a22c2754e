"""The DNS probe on a real veth pair against a real (tiny) DNS server.

The oracle is the client's own log: every query it sent and the rcode of
every answer it got back. The probe's rows must add up to exactly that, and
broken datagrams sent to the same server must land in the probe's
malformed counters, never in a row.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orb8_agent.dataplane.dns import DNS_MAPS, DnsCollector, DnsRow
from orb8_dev import dnswire, netns
from orb8_dev.traffic_ctl import tc_filters

pytestmark = pytest.mark.kernel

DNSLOAD = [sys.executable, "-m", "orb8_dev.dnsload"]
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}

PLAN: list[dict[str, Any]] = (
    [{"name": "web.shop", "qtype": "A"}] * 10
    + [{"name": "Web.Shop", "qtype": "AAAA"}] * 2
    + [{"name": "missing.nx", "qtype": "A"}] * 5
    + [{"name": "broken.fail", "qtype": "AAAA"}] * 3
    + [{"name": "quiet.drop", "qtype": "A"}] * 2
    + [{"name": "over-tcp.shop", "qtype": "A", "tcp": True}] * 3
    + [{"name": "over-tcp.nx", "qtype": "TXT", "tcp": True}] * 2
)
BROKEN = {
    "compression-pointer": dnswire.header(ident=1, qr=False) + b"\xc0\x0c\x00\x01\x00\x01",
    "label-64": dnswire.header(ident=2, qr=False) + b"\x40" + b"x" * 64 + b"\x00\x00\x01\x00\x01",
    "short-header": b"\x00\x03\x01\x00",
    "runs-off": dnswire.header(ident=4, qr=False) + b"\x09abc",
    "qdcount-2": dnswire.header(ident=5, qr=False, qdcount=2)
    + dnswire.question(name="a.shop", qtype=1) * 2,
}


@pytest.fixture
def server(pair: netns.VethPair) -> Iterator[netns.VethPair]:
    procs = []
    try:
        for bind in (pair.ip4_b, pair.ip6_b):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", pair.ns_b, *DNSLOAD, "server", "--bind", bind],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert '"listening"' in line, proc.stderr.read() if proc.stderr else line
        yield pair
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def probe(server: netns.VethPair, run_dir: Path, agent_id: str) -> Iterator[DnsCollector]:
    with netns.enter(server.ns_a):
        c = DnsCollector(agent_id=agent_id, run_dir=run_dir)
        c.open()
        try:
            c.attach(interface=server.if_a)
            yield c
        finally:
            c.close()


def ask(pair: netns.VethPair, *, server: str, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # a generous timeout: on a loaded machine a slow answer must not pass for a lost one
    out = netns.run(
        [*DNSLOAD, "client", "--server", server, "--timeout", "5", "--plan", json.dumps(plan)],
        netns=pair.ns_a,
    )
    log: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])["log"]
    return log


def read(probe: DnsCollector, pair: netns.VethPair) -> list[DnsRow]:
    with netns.enter(pair.ns_a):
        return probe.read_rows()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_rows_match_the_clients_log(server: netns.VethPair, probe: DnsCollector, v6: bool) -> None:
    pair = server
    server_ip, client_ip = (pair.ip6_b, pair.ip6_a) if v6 else (pair.ip4_b, pair.ip4_a)
    before = probe.stats()
    log = ask(pair, server=server_ip, plan=PLAN)
    rows = read(probe, pair)
    after = probe.stats()

    assert len(log) == len(PLAN)
    sent = Counter((e["name"].lower(), e["qtype"], e["tcp"]) for e in log)
    answered = Counter(
        (e["name"].lower(), e["qtype"], e["tcp"], RCODES[e["rcode"]])
        for e in log
        if e["rcode"] is not None
    )
    # the server drops *.drop and answers everything else: the client saw that
    assert sum(answered.values()) == len(PLAN) - 2

    queries = Counter[tuple[str, str, bool]]()
    answers = Counter[tuple[str, str, bool, str]]()
    for row in rows:
        k = row.key
        assert (k.client_ip, k.server_ip) == (client_ip, server_ip)
        assert not k.truncated
        if k.rcode is None:
            queries[(k.name, k.qtype, k.tcp)] += row.count
            assert row.matched == 0
        else:
            answers[(k.name, k.qtype, k.tcp, k.rcode)] += row.count
            assert row.matched == row.count  # every answer found its query in flight
            assert row.latency_sum_ns > 0 and row.latency_max_ns > 0
            assert row.latency_max_ns * row.matched >= row.latency_sum_ns
    assert queries == sent
    assert answers == answered
    assert after.queries - before.queries == len(PLAN)
    assert after.answers - before.answers == sum(answered.values())
    assert after.unmatched == before.unmatched
    assert after.malformed == before.malformed


def test_broken_datagrams_are_counted_not_filed(
    server: netns.VethPair, probe: DnsCollector
) -> None:
    pair = server
    before = probe.stats()
    out = netns.run(
        [*DNSLOAD, "raw", "--server", pair.ip4_b, "--hex", *(p.hex() for p in BROKEN.values())],
        netns=pair.ns_a,
    )
    assert json.loads(out)["sent"] == len(BROKEN)
    # the server survived them and still answers; this query also proves
    # that everything sent before it has crossed the interface
    log = ask(pair, server=pair.ip4_b, plan=[{"name": "after.shop", "qtype": "A"}])
    assert log[0]["rcode"] == 0
    rows = read(probe, pair)
    after = probe.stats()

    assert after.malformed - before.malformed == 4  # pointer, label 64, short, runs off
    assert after.compressed - before.compressed == 1
    assert after.qdcount - before.qdcount == 1
    assert after.packets - before.packets == len(BROKEN) + 2  # + the query and its answer
    assert {(r.key.name, r.key.rcode, r.count) for r in rows} == {
        ("after.shop", None, 1),
        ("after.shop", "NOERROR", 1),
    }


def test_close_removes_the_filters(server: netns.VethPair, run_dir: Path) -> None:
    from orb8_dev.traffic_ctl import tc_filters

    pair = server
    with netns.enter(pair.ns_a):
        c = DnsCollector(agent_id="dns-close", run_dir=run_dir)
        c.open()
        c.attach(interface=pair.if_a)
        assert "orb8_dns" in tc_filters(pair.ns_a, pair.if_a)
        c.close()
    assert "orb8_dns" not in tc_filters(pair.ns_a, pair.if_a)
    assert not (run_dir / "dns-close.dns").exists()


def test_trace_dns_local_json(server: netns.VethPair) -> None:
    """``orb8 trace dns --local`` until SIGINT: its JSON rows are the client's log."""
    from orb8_dev.traffic_ctl import tc_filters

    pair = server
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns_a, sys.executable, "-m", "orb8_cli.main", "trace", "dns",
         "--local", "-i", pair.if_a, "--duration", "5m", "--output", "json",
         "--agent-id", f"cli-{pair.ns_a}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "orb8_dns" not in tc_filters(pair.ns_a, pair.if_a):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    plan = PLAN[:12] + PLAN[-4:]  # web.shop A/AAAA, missing.nx, tcp
    log = ask(pair, server=pair.ip4_b, plan=plan)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = json.loads(out)
    assert "orb8_dns" not in tc_filters(pair.ns_a, pair.if_a)

    for row in rows:
        assert {"query", "qtype", "rcode", "count", "latency_ms", "src_ip", "dst_ip"} <= set(row)
        assert (row["src_ip"], row["dst_ip"]) == (pair.ip4_a, pair.ip4_b)
        assert row["latency_ms"] > 0 and row["interface"] == pair.if_a
    got = Counter[tuple[str, str, str]]()
    for row in rows:
        got[(row["query"], row["qtype"], row["rcode"])] += row["count"]
    want = Counter((e["name"].lower(), e["qtype"], RCODES[e["rcode"]]) for e in log)
    assert got == want


def test_shares_clsact_with_the_flow_probe(pair: netns.VethPair, run_dir: Path) -> None:
    """Either probe may create the clsact qdisc; neither takes the other's filter with it."""
    from orb8_agent.dataplane.flows import FlowCollector
    from orb8_dev.traffic_ctl import has_clsact, tc_filters

    with netns.enter(pair.ns_a):
        # DNS first: it creates clsact, and must leave it while the flow probe uses it
        dns = DnsCollector(agent_id="share", run_dir=run_dir)
        flows = FlowCollector(agent_id="share", run_dir=run_dir)
        dns.open()
        flows.open()
        try:
            dns.attach(interface=pair.if_a)
            flows.attach(interface=pair.if_a)
            dns.detach(interface=pair.if_a)
            filters = tc_filters(pair.ns_a, pair.if_a)
            assert "orb8_flows" in filters and "orb8_dns" not in filters
            # flows first (after the qdisc went): the flow probe's detach removes the
            # clsact it created, and the DNS probe's repair puts its filter back
            flows.detach(interface=pair.if_a)
            netns.run(["tc", "qdisc", "del", "dev", pair.if_a, "clsact"], netns=pair.ns_a)
            flows.attach(interface=pair.if_a)
            dns.attach(interface=pair.if_a)
            assert dns.repair() == []
            flows.detach(interface=pair.if_a)
            assert not has_clsact(pair.ns_a, pair.if_a)
            assert dns.repair() == [pair.if_a]
            assert "orb8_dns" in tc_filters(pair.ns_a, pair.if_a)
        finally:
            flows.close()
            dns.close()
    assert "orb8" not in tc_filters(pair.ns_a, pair.if_a)


# In the host's namespaces (``ip netns exec`` would remount /sys, without the bpffs),
# entering the pair's network namespace only to load and attach.
HOLDER = """
import json, sys
from pathlib import Path
from orb8_agent.dataplane.dns import DnsCollector
from orb8_dev import netns
agent_id, pins, run_dir, ns, interface = sys.argv[1:6]
with netns.enter(ns):
    c = DnsCollector(agent_id=agent_id, run_dir=Path(run_dir), pin_dir=Path(pins))
    c.open()
    c.attach(interface=interface)
print("ready", flush=True)
for line in sys.stdin:
    rows = [{"name": r.key.name, "qtype": r.key.qtype, "rcode": r.key.rcode, "tcp": r.key.tcp,
             "count": r.count, "matched": r.matched} for r in c.read_rows()]
    print(json.dumps(rows), flush=True)
"""


def _phase(name: str) -> list[dict[str, Any]]:
    """Queries whose names say which phase asked them: answered, NXDOMAIN, over TCP."""
    return (
        [{"name": f"{name}.shop", "qtype": "A"}] * 3
        + [{"name": f"{name}.nx", "qtype": "AAAA"}] * 2
        + [{"name": f"{name}-tcp.shop", "qtype": "A", "tcp": True}]
    )


def test_rows_survive_a_restart_in_the_pinned_maps_once(
    server: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    """A collector with a pin directory is SIGKILLed (a crashed agent) and its successor
    with the same agent id opens the same pins. Rows the first one had reported are not read
    again; rows it had not reported yet, and what its still-attached filter counted while no
    collector was open, are read by the successor: against the client's log, nothing lost
    and nothing doubled, and every answer still found its query (the in-flight map is pinned
    too). A clean close unpins."""
    pair = server
    pins = Path("/sys/fs/bpf") / f"orb8-test-{agent_id}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, agent_id, str(pins), str(run_dir), pair.ns_a, pair.if_a],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        pinned = [pins / agent_id / name for name in DNS_MAPS.values()]
        assert all(p.exists() for p in pinned)
        log = ask(pair, server=pair.ip4_b, plan=_phase("reported"))
        holder.stdin.write("read\n")
        holder.stdin.flush()
        first = json.loads(holder.stdout.readline())
        log += ask(pair, server=pair.ip4_b, plan=_phase("unreported"))
        holder.kill()
        holder.wait(timeout=30)
        # dead, but its filter is still attached and counts into the pinned maps
        assert "orb8_dns" in tc_filters(pair.ns_a, pair.if_a)
        log += ask(pair, server=pair.ip4_b, plan=_phase("while-down"))
        with netns.enter(pair.ns_a):
            c = DnsCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pins)
            c.open()
        try:
            assert c.pin_dir == pins / agent_id
            with netns.enter(pair.ns_a):
                c.attach(interface=pair.if_a)
            log += ask(pair, server=pair.ip4_b, plan=_phase("reopened"))
            rows = read(c, pair)
        finally:
            with netns.enter(pair.ns_a):
                c.close()
        assert not any(p.exists() for p in pinned) and not (pins / agent_id).exists()
    finally:
        if holder.poll() is None:
            holder.kill()
        for path in sorted(pins.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        if pins.exists():
            pins.rmdir()

    assert len(log) == 4 * len(_phase("x"))
    assert all(e["rcode"] is not None for e in log)  # every query was answered
    sent = Counter((e["name"].lower(), e["qtype"], e["tcp"]) for e in log)
    answered = Counter((e["name"].lower(), e["qtype"], e["tcp"], RCODES[e["rcode"]]) for e in log)
    queries = Counter[tuple[str, str, bool]]()
    answers = Counter[tuple[str, str, bool, str]]()
    matched = 0
    for row in [*first, *({"name": r.key.name, "qtype": r.key.qtype, "rcode": r.key.rcode,
                           "tcp": r.key.tcp, "count": r.count, "matched": r.matched}
                          for r in rows)]:  # fmt: skip
        if row["rcode"] is None:
            queries[(row["name"], row["qtype"], row["tcp"])] += row["count"]
        else:
            answers[(row["name"], row["qtype"], row["tcp"], row["rcode"])] += row["count"]
            matched += row["matched"]
    assert queries == sent
    assert answers == answered
    assert matched == len(log)
    # what the first collector reported is exactly the first phase, and not read again
    assert {r["name"].split(".")[0].removesuffix("-tcp") for r in first} == {"reported"}
    assert {r.key.name.split(".")[0].removesuffix("-tcp") for r in rows} == {
        "unreported", "while-down", "reopened"
    }  # fmt: skip
