"""Network variants for `make bench`: each a context manager that leaves its
probe attached to interface A of the bench's veth pair for the duration.

Every variant works in namespace A only (the bench's own), so no other
traffic on the machine is seen or slowed. A variant whose tool is missing or
fails to start raises :class:`Skip` with the reason.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from orb8_agent.dataplane import libbpf, tc
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS
from orb8_agent.dataplane.objects import object_path
from orb8_dev import netns

Variant = Callable[[], contextlib.AbstractContextManager[None]]


class Skip(Exception):
    """This variant cannot run here; the message says why."""


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        raise Skip(f"{tool} is not installed (hack/install-bench-deps.sh installs it)")
    return path


@contextlib.contextmanager
def tc_program(*, interface: str, path: Path, prog: str, disable: tuple[str, ...]) -> Iterator[int]:
    """One tc program from ``path`` on ingress and egress; yields its fd."""
    obj = libbpf.BpfObject(path=path)
    for other in disable:
        obj.set_autoload(prog=other, enabled=False)
    obj.load()
    ifindex = tc.ifindex_of(interface=interface)
    created = tc.create_clsact(ifindex=ifindex)
    prio = tc.priority_for(agent_id=f"bench-{prog}")
    try:
        for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
            tc.attach_filter(
                ifindex=ifindex, point=point, prog_fd=obj.prog_fd(name=prog), priority=prio
            )
        yield obj.prog_fd(name=prog)
    finally:
        tc.remove_attachment(attachment=tc.Attachment(interface, ifindex, created), priority=prio)
        obj.close()


@contextlib.contextmanager
def empty_tc(interface: str) -> Iterator[None]:
    with tc_program(
        interface=interface,
        path=object_path(name="noop"),
        prog="orb8_noop_tc",
        disable=("orb8_noop_raw", "orb8_noop_tp"),
    ):
        yield


@contextlib.contextmanager
def orb8(interface: str) -> Iterator[None]:
    """The flow probe, with the collector draining the map every second."""
    stop = threading.Event()
    with FlowCollector(agent_id="bench-flows", run_dir=Path(tempfile.mkdtemp())) as c:
        c.attach(interface=interface)

        def collect() -> None:
            while not stop.wait(1.0):
                c.read_flows()

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            yield
        finally:
            stop.set()
            reader.join()
            c.read_flows()


def _nft(ns: str, script: str) -> None:
    nft = need("nft")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, nft, "-f", "-"], input=script, text=True, capture_output=True
    )
    if done.returncode != 0:
        raise Skip(f"nft rejected the ruleset: {done.stderr.strip()}")


TUPLE = "ip saddr . ip daddr . ip protocol . th sport . th dport"


@contextlib.contextmanager
def nft_counters(ns: str, interface: str) -> Iterator[None]:
    """netdev ingress+egress: one counter per IPv4 5-tuple in a dynamic set."""
    _nft(
        ns,
        f"""
table netdev orb8bench {{
  set flows {{
    type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service
    size 262144
    flags dynamic
    counter
  }}
  chain in {{ type filter hook ingress device "{interface}" priority 0; }}
  chain out {{ type filter hook egress device "{interface}" priority 0; }}
}}
add rule netdev orb8bench in meta protocol ip add @flows {{ {TUPLE} }}
add rule netdev orb8bench out meta protocol ip add @flows {{ {TUPLE} }}
""",
    )
    try:
        yield
    finally:
        netns.run(["nft", "delete", "table", "netdev", "orb8bench"], netns=ns, check=False)


@contextlib.contextmanager
def conntrack_acct(ns: str) -> Iterator[None]:
    """Connection tracking with byte/packet accounting, read with conntrack(8) every second."""
    tool = need("conntrack")
    netns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"], netns=ns, check=False)
    _nft(
        ns,
        """
table inet orb8ct {
  chain pre {
    type filter hook prerouting priority 0;
    ct state established,related,new accept
  }
  chain out {
    type filter hook output priority 0;
    ct state established,related,new accept
  }
}
""",
    )
    stop = threading.Event()

    def collect() -> None:
        while not stop.wait(1.0):
            subprocess.run(
                ["ip", "netns", "exec", ns, tool, "-L", "-o", "extended"],
                capture_output=True,
                check=False,
            )

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join()
        netns.run(["nft", "delete", "table", "inet", "orb8ct"], netns=ns, check=False)


def _start(
    cmd: list[str], ready: str, *, stream: str, deadline_s: float = 60.0
) -> subprocess.Popen[str]:
    """Start a tracer and wait for the line that says it is attached."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain(pipe: IO[str]) -> None:
        # keeps draining after start-up, so the tracer never blocks on a full pipe
        for line in pipe:
            lines.put(line)
        lines.put(None)

    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        threading.Thread(target=drain, args=(pipe,), daemon=True).start()
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    eof = 0
    while eof < 2 and time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            eof += 1
            continue
        seen.append(line)
        if ready in line:
            return proc
    proc.kill()
    proc.wait()
    del stream
    raise Skip(f"{cmd[0]} did not start within {deadline_s:.0f} s: {''.join(seen)[-300:].strip()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


BPFTRACE_NET = (
    "tracepoint:net:net_dev_queue, tracepoint:net:netif_receive_skb "
    "{ @bytes = sum(args->len); @packets[probe] = count(); }"
)


@contextlib.contextmanager
def bpftrace_net() -> Iterator[None]:
    """bpftrace on the net tracepoints: packets per hook and total bytes (all interfaces)."""
    proc = _start([need("bpftrace"), "-e", BPFTRACE_NET], "Attaching", stream="stdout")
    try:
        yield
    finally:
        _stop(proc)


@contextlib.contextmanager
def tcpdump(ns: str, interface: str) -> Iterator[None]:
    """tcpdump writing full packets to /dev/null."""
    proc = _start(
        ["ip", "netns", "exec", ns, need("tcpdump"), "-n", "-i", interface, "-w", "/dev/null"],
        "listening on",
        stream="stderr",
    )
    try:
        yield
    finally:
        _stop(proc)


def variants(pair: netns.VethPair) -> dict[str, Variant]:
    a, ifa = pair.ns_a, pair.if_a
    return {
        "none": contextlib.nullcontext,
        "empty_tc": lambda: empty_tc(ifa),
        "orb8": lambda: orb8(ifa),
        "nft": lambda: nft_counters(a, ifa),
        "conntrack": lambda: conntrack_acct(a),
        "bpftrace": bpftrace_net,
        "tcpdump": lambda: tcpdump(a, ifa),
    }
