"""The TCP health probe against real connections between two test namespaces.

Every figure is held to what the kernel itself counted for the same
namespace (/proc/net/snmp inside it: RetransSegs, OutRsts, EstabResets), or
to what the application saw (ECONNREFUSED, its own connect() time). Packets
are dropped with nft on arrival in the server namespace (this kernel has no
sch_netem module).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orb8_agent.dataplane.models import TcpHealth
from orb8_agent.dataplane.tcphealth import TcpHealthCollector, TcpHook
from orb8_dev import netns

pytestmark = pytest.mark.kernel

DEADLINE_S = 60.0
SYN_RTO_NS = 1_000_000_000  # TCP_TIMEOUT_INIT
JIFFY_NS_MAX = 10_000_000  # one jiffy at HZ=100, the coarsest kernel tick


def _inode(ns: str) -> int:
    return os.stat(netns.NETNS_DIR / ns).st_ino


def _snmp(ns: str) -> dict[str, int]:
    """The namespace's own TCP MIB counters."""
    lines = [
        line.split()
        for line in netns.run(["cat", "/proc/net/snmp"], netns=ns).splitlines()
        if line.startswith("Tcp:")
    ]
    names, values = lines[0][1:], lines[1][1:]
    return {n: int(v) for n, v in zip(names, values, strict=True)}


def _busy_sockets(ns: str) -> list[str]:
    """TCP sockets that may still send something (not listening, not TIME-WAIT)."""
    out = netns.run(["ss", "-tanH"], netns=ns)
    return [line for line in out.splitlines() if line.split()[0] not in ("LISTEN", "TIME-WAIT")]


def _wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _socket_in(ns: str, family: int = socket.AF_INET) -> socket.socket:
    with netns.enter(ns):
        return socket.socket(family, socket.SOCK_STREAM)


def _nft(ns: str, rules: str) -> None:
    """Load an nft ruleset inside the namespace (it goes with the namespace)."""
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=rules, text=True, check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@dataclass
class Totals:
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connects: int = 0
    connect_ns_total: int = 0
    connect_ns_max: int = 0


def _totals(rows: list[TcpHealth], *, inode: int) -> Totals:
    t = Totals()
    for r in rows:
        if r.netns != inode:
            continue
        t.retransmits += r.retransmits
        t.resets_sent += r.resets_sent
        t.resets_received += r.resets_received
        t.connects += r.connects
        t.connect_ns_total += r.connect_ns_total
        t.connect_ns_max = max(t.connect_ns_max, r.connect_ns_max)
    return t


class Sink:
    """A server in a namespace: reads each connection to EOF, then closes it."""

    def __init__(self, ns: str, addr: str, family: int) -> None:
        self.listener = _socket_in(ns, family)
        self.listener.bind((addr, 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=10)


@pytest.fixture
def sink(pair: netns.VethPair) -> Iterator[Sink]:
    s = Sink(pair.ns_b, pair.ip4_b, socket.AF_INET)
    yield s
    s.close()


def test_retransmits_equal_each_namespaces_retrans_segs(pair: netns.VethPair, sink: Sink) -> None:
    # one data-bearing packet in eight from the client is lost on arrival (a
    # drop on the sender's own output hook would fail the send, not lose it)
    _nft(pair.ns_b, f"""
table inet o8loss {{
  chain in {{ type filter hook input priority 0; policy accept;
    ip daddr {pair.ip4_b} tcp dport {sink.port} meta length > 200 numgen random mod 8 == 0 drop
  }}
}}
""")  # fmt: skip
    before = {ns: _snmp(ns) for ns in (pair.ns_a, pair.ns_b)}
    payload = os.urandom(256 * 1024)
    with TcpHealthCollector() as c:
        c.set_watched_netns(inodes={_inode(pair.ns_a), _inode(pair.ns_b)})
        clients = []
        for _ in range(4):
            cl = _socket_in(pair.ns_a)
            cl.connect((pair.ip4_b, sink.port))
            cl.sendall(payload)
            cl.shutdown(socket.SHUT_WR)
            clients.append(cl)
        for cl in clients:
            cl.settimeout(DEADLINE_S)
            assert cl.recv(1) == b""  # the sink read everything and closed
            cl.close()
        # nothing left that could still retransmit
        _wait_for(
            "quiet sockets", lambda: not any(_busy_sockets(n) for n in (pair.ns_a, pair.ns_b))
        )
        rows = c.read()
        assert c.stats()["map_full"] == 0
    for ns in (pair.ns_a, pair.ns_b):
        oracle = _snmp(ns)["RetransSegs"] - before[ns]["RetransSegs"]
        assert _totals(rows, inode=_inode(ns)).retransmits == oracle, ns
    client_rows = [r for r in rows if r.netns == _inode(pair.ns_a) and r.retransmits]
    assert client_rows, "the lossy client retransmitted nothing"
    for r in client_rows:
        assert (r.local_ip, r.remote_ip, r.remote_port) == (pair.ip4_a, pair.ip4_b, sink.port)


@pytest.mark.parametrize("hook", list(TcpHook), ids=[h.value for h in TcpHook])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_resets_sent_and_received_equal_the_kernels_and_the_apps(
    pair: netns.VethPair, hook: TcpHook, family: str
) -> None:
    af = socket.AF_INET if family == "ipv4" else socket.AF_INET6
    ip_a, ip_b = (pair.ip4_a, pair.ip4_b) if family == "ipv4" else (pair.ip6_a, pair.ip6_b)
    sink = Sink(pair.ns_b, ip_b, af)
    closed = _socket_in(pair.ns_b, af)  # bound, never listening: its port is closed
    closed.bind((ip_b, 0))
    closed_port = closed.getsockname()[1]
    before = {ns: _snmp(ns) for ns in (pair.ns_a, pair.ns_b)}
    refused_ports: set[int] = set()
    try:
        with TcpHealthCollector(hook=hook) as c:
            c.set_watched_netns(inodes={_inode(pair.ns_a), _inode(pair.ns_b)})
            refused = 0
            for _ in range(5):
                cl = _socket_in(pair.ns_a, af)
                cl.bind((ip_a, 0))
                refused_ports.add(cl.getsockname()[1])
                try:
                    cl.connect((ip_b, closed_port))
                except ConnectionRefusedError:
                    refused += 1
                finally:
                    cl.close()
            aborted = 0
            for _ in range(3):
                cl = _socket_in(pair.ns_a, af)
                cl.connect((ip_b, sink.port))
                cl.sendall(b"x" * 100)
                # SO_LINGER 0: close() aborts with an RST
                cl.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                cl.close()
                aborted += 1
            _wait_for(
                "quiet sockets", lambda: not any(_busy_sockets(n) for n in (pair.ns_a, pair.ns_b))
            )
            rows = c.read()
    finally:
        closed.close()
        sink.close()
    after = {ns: _snmp(ns) for ns in (pair.ns_a, pair.ns_b)}

    def delta(ns: str, name: str) -> int:
        return after[ns][name] - before[ns][name]

    client, server = _totals(rows, inode=_inode(pair.ns_a)), _totals(rows, inode=_inode(pair.ns_b))
    assert refused == 5 and aborted == 3
    # RSTs sent: what each namespace's TcpOutRsts counted
    assert client.resets_sent == delta(pair.ns_a, "OutRsts") == aborted
    assert server.resets_sent == delta(pair.ns_b, "OutRsts") == refused
    # RSTs received: the client's refused connects (the app saw each one), and
    # the server's aborted connections (its EstabResets)
    assert client.resets_received == refused
    assert server.resets_received == delta(pair.ns_b, "EstabResets") == aborted
    # connects that got established: the kernel's attempts minus its failed ones
    established = delta(pair.ns_a, "ActiveOpens") - delta(pair.ns_a, "AttemptFails")
    assert client.connects == established == aborted
    assert server.connects == 0  # it only accepted
    # a reset sent without a socket is named from the packet it answers
    server_refusals = [
        r for r in rows if r.netns == _inode(pair.ns_b) and r.local_port == closed_port
    ]
    assert {r.remote_port for r in server_refusals} == refused_ports
    assert all((r.local_ip, r.remote_ip) == (ip_b, ip_a) for r in server_refusals)


def test_connect_latency_covers_the_lost_syn(pair: netns.VethPair, sink: Sink) -> None:
    # every other SYN to the sink is dropped: the first connect waits for the
    # SYN retransmission timer (TCP_TIMEOUT_INIT, 1 s)
    _nft(pair.ns_b, f"""
table inet o8syn {{
  chain in {{ type filter hook input priority 0; policy accept;
    tcp dport {sink.port} tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop
  }}
}}
""")  # fmt: skip
    before = _snmp(pair.ns_a)
    with TcpHealthCollector() as c:
        c.set_watched_netns(inodes={_inode(pair.ns_a)})  # the client's side only
        cl = _socket_in(pair.ns_a)
        started = time.monotonic()
        cl.connect((pair.ip4_b, sink.port))
        app_ns = (time.monotonic() - started) * 1e9
        local_port = cl.getsockname()[1]
        cl.close()
        _wait_for(
            "quiet sockets", lambda: not any(_busy_sockets(n) for n in (pair.ns_a, pair.ns_b))
        )
        rows = c.read()
    assert {r.netns for r in rows} == {_inode(pair.ns_a)}, "an unwatched namespace was counted"
    mine = [r for r in rows if r.local_port == local_port]
    assert len(mine) == 1
    row = mine[0]
    assert (row.remote_ip, row.remote_port) == (pair.ip4_b, sink.port)
    assert row.connects == 1
    # SYN_SENT → ESTABLISHED lies inside the app's connect() call, and after
    # the 1 s retransmission timeout of the lost SYN (armed in jiffies, so it
    # may fire up to one jiffy, at most 10 ms, short of a full second)
    assert SYN_RTO_NS - JIFFY_NS_MAX <= row.connect_ns_total == row.connect_ns_max <= app_ns
    assert row.retransmits == _snmp(pair.ns_a)["RetransSegs"] - before["RetransSegs"] == 1


def test_trace_network_local_shows_resets_on_the_flows(pair: netns.VethPair) -> None:
    """``orb8 trace network --local``: each refused connect's flow carries its RST."""
    closed = _socket_in(pair.ns_b)
    closed.bind((pair.ip4_b, 0))
    closed_port = closed.getsockname()[1]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns_a, sys.executable, "-m", "orb8_cli.main", "trace",
         "network", "--local", "-i", pair.if_a, "--duration", "5m", "--output", "json",
         "--agent-id", f"cli-{pair.ns_a}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # the TCP probe is loaded before the tc filter is attached
        show = ["tc", "filter", "show", "dev", pair.if_a, "ingress"]
        _wait_for(
            "the trace attached",
            lambda: proc.poll() is None and "orb8_flows" in netns.run(show, netns=pair.ns_a),
        )
        refused_ports = []
        for _ in range(3):
            cl = _socket_in(pair.ns_a)
            try:
                cl.connect((pair.ip4_b, closed_port))
            except ConnectionRefusedError:
                refused_ports.append(cl.getsockname()[1])
            finally:
                cl.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        closed.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    flows = json.loads(out)
    assert len(refused_ports) == 3
    syns = {
        f["src_port"]: f for f in flows if f["dst_port"] == closed_port and f["protocol"] == "TCP"
    }
    assert set(syns) == set(refused_ports)
    for f in syns.values():
        assert (f["resets_received"], f["resets_sent"], f["retransmits"]) == (1, 0, 0), f
        assert f["connect_latency_ms"] is None  # refused: never established
    rsts = [f for f in flows if f["src_port"] == closed_port and f["protocol"] == "TCP"]
    assert sorted(f["dst_port"] for f in rsts) == sorted(refused_ports)
    assert all(f["resets_sent"] == 1 for f in rsts)


HOLDER = """
import os, sys, time
from pathlib import Path
from orb8_agent.dataplane.tcphealth import TcpHealthCollector
c = TcpHealthCollector(agent_id=sys.argv[1], pin_dir=Path(sys.argv[2]))
c.open()
c.set_watched_netns(inodes={int(sys.argv[3])})
print("ready", flush=True)
time.sleep(600)
"""


def test_a_killed_owners_undrained_counts_survive_in_the_pinned_map(
    pair: netns.VethPair, agent_id: str
) -> None:
    """The agent pins the health map: what a SIGKILLed agent had not drained yet
    is read by the next one with the same id; a clean close unpins."""
    pins = Path("/sys/fs/bpf") / f"orb8-test-{agent_id}"
    closed = _socket_in(pair.ns_b)
    closed.bind((pair.ip4_b, 0))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, agent_id, str(pins), str(_inode(pair.ns_a))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        refused = 0
        for _ in range(2):
            cl = _socket_in(pair.ns_a)
            try:
                cl.connect((pair.ip4_b, closed.getsockname()[1]))
            except ConnectionRefusedError:
                refused += 1
            finally:
                cl.close()
        holder.kill()
        holder.wait(timeout=DEADLINE_S)
        pin = pins / agent_id / "tcp_health"
        assert pin.exists()
        with TcpHealthCollector(agent_id=agent_id, pin_dir=pins) as c:
            assert c.pin_path == pin
            rows = c.read()
        assert refused == 2
        assert _totals(rows, inode=_inode(pair.ns_a)).resets_received == refused
        assert not pin.exists()
    finally:
        closed.close()
        if holder.poll() is None:
            holder.kill()
        for path in sorted(pins.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        if pins.exists():
            pins.rmdir()


def test_without_a_bpffs_the_tcp_probe_loads_unpinned(
    kernel_ready: None, agent_id: str, tmp_path: Path
) -> None:
    with TcpHealthCollector(agent_id=agent_id, pin_dir=tmp_path / "not-bpffs") as c:
        assert c.pin_path is None
        assert not (tmp_path / "not-bpffs" / agent_id / "tcp_health").exists()
