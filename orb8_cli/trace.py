"""``orb8 trace network|syscalls|dns --local``: run a probe on this machine, no cluster.

Flows are read from the kernel once a second and summed here; the table is
printed when the duration ends or on Ctrl-C / SIGTERM. Probes are always
detached before the command returns.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from orb8_agent.dataplane import cgroupfs, interfaces, syscall_names, tc
from orb8_agent.dataplane.aggregate import FlowTable, SyscallTable
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Alert, Flow, TcpHealth, tcp_flag_names, tcp_state
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_agent.dataplane.tcphealth import TcpHealthCollector
from orb8_cli.durations import parse_cli_duration
from orb8_cli.humanize import human_bytes, human_count, table
from orb8_common.errors import Orb8Error, UsageError

DEFAULT_ALERTS = (
    "ptrace",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "kexec_load",
    "pivot_root",
    "bpf",
)
READ_INTERVAL = 1.0
# Each run takes its own agent id so several traces can run side by side;
# a run sweeps what killed earlier runs (ids with this prefix) left behind.
CLI_AGENT_PREFIX = "cli-"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("trace", help="trace this machine with eBPF (no cluster)")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    net = kinds.add_parser(
        "network",
        help="per-flow bytes and packets on interfaces, TCP retransmits, resets, connect latency",
    )
    _common(net)
    net.add_argument(
        "--interface",
        "-i",
        action="append",
        default=[],
        metavar="IF",
        help="interface to trace (repeatable); default: all up, non-loopback Ethernet interfaces",
    )
    net.add_argument("--top", type=int, default=0, help="print only the N largest flows")
    net.set_defaults(func=run_network)

    sys_ = kinds.add_parser("syscalls", help="syscall counts and alerts of one cgroup")
    _common(sys_)
    target = sys_.add_mutually_exclusive_group(required=True)
    target.add_argument("--cgroup", metavar="PATH", help="cgroup v2 dir (absolute or relative)")
    target.add_argument("--pid", type=int, help="trace the cgroup this process is in")
    sys_.add_argument(
        "--alert",
        action="append",
        default=[],
        metavar="SYSCALL",
        help=f"syscall to alert on (repeatable); default: {','.join(DEFAULT_ALERTS)}",
    )
    sys_.add_argument(
        "--hook", choices=[h.value for h in Hook], default=Hook.RAW_TP.value, help=argparse.SUPPRESS
    )
    sys_.set_defaults(func=run_syscalls)

    from orb8_cli import dns  # its own module: it imports helpers from this one

    dns.register_trace(kinds, common=_common)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local", action="store_true", help="trace this machine (required)")
    parser.add_argument("--duration", "-d", default="10s", help="how long to trace (10s, 1m30s)")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument("--agent-id", default=None, help=argparse.SUPPRESS)


def _check_common(args: argparse.Namespace) -> float:
    if not args.local:
        raise UsageError("only --local is supported here; in a cluster apply a TraceSession")
    return parse_cli_duration(args.duration, allow_zero=False)


def _require_root() -> None:
    """Checked after the arguments, so a typo is reported as such even without root."""
    if os.geteuid() != 0:
        raise UsageError("orb8 trace needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)")


class _Stopper:
    """Turns SIGTERM and SIGINT into a flag the trace loop checks."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def handler(signum: int, frame: object) -> None:
            self.event.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _loop(
    *, duration: float, stopper: _Stopper, tick: Callable[[float], str], step: float = 0.2
) -> None:
    """Call ``tick(remaining)`` about once a second until time is up or a signal."""
    progress = sys.stderr.isatty()
    end = time.monotonic() + duration
    next_read = time.monotonic() + READ_INTERVAL
    while not stopper.event.is_set():
        now = time.monotonic()
        if now >= end:
            break
        stopper.event.wait(min(step, end - now, max(0.0, next_read - now)))
        if time.monotonic() >= next_read or time.monotonic() >= end:
            next_read += READ_INTERVAL
            line = tick(max(0.0, end - time.monotonic()))
            if progress:
                sys.stderr.write(f"\r\033[K{line}")
                sys.stderr.flush()
    if progress:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


# network -------------------------------------------------------------------


def run_network(args: argparse.Namespace) -> int:
    duration = _check_common(args)
    if args.top < 0:
        raise UsageError("--top must not be negative")
    names: list[str] = list(dict.fromkeys(args.interface)) or interfaces.default_interfaces()
    if not names:
        raise UsageError("no interface to trace: none is up; pass --interface")
    for name in names:
        tc.ifindex_of(interface=name)  # raises UsageError for unknown names
    _require_root()
    flows = FlowTable()
    health = HealthTable()
    stopper = _Stopper()
    tc.sweep_dead(prefix=CLI_AGENT_PREFIX)
    collector = FlowCollector(agent_id=args.agent_id or f"{CLI_AGENT_PREFIX}{os.getpid()}")
    tcp = _open_tcp_health()
    with stopper.installed():
        collector.open()
        try:
            for name in names:
                collector.attach(interface=name)

            def tick(remaining: float) -> str:
                flows.add(collector.read_flows())
                if tcp is not None:
                    health.add(tcp.read())
                return (
                    f"tracing {','.join(names)}: {len(flows)} flows, "
                    f"{human_bytes(flows.total_bytes)}, {remaining:.0f}s left"
                )

            _loop(duration=duration, stopper=stopper, tick=tick)
            for name in names:
                collector.detach(interface=name)
            flows.add(collector.read_flows())
            if tcp is not None:
                health.add(tcp.read())
            stats = collector.stats()
        finally:
            collector.close()
            if tcp is not None:
                tcp.close()
    top = flows.top(limit=args.top or None)
    joined = health.join(top)
    if args.output == "json":
        print(json.dumps([flow_json(f, joined.get(id(f))) for f in top], indent=2))
    else:
        print(flow_table(top, health=joined))
        print(
            f"\n{len(flows)} flows on {','.join(names)}; skipped: "
            f"{stats.not_ip} non-IP, {stats.malformed} malformed; map full: {stats.map_full}, "
            f"LRU evictions (est.): {stats.evicted_estimate}",
            file=sys.stderr,
        )
    return 0


def _open_tcp_health() -> TcpHealthCollector | None:
    """TCP health of every socket on this machine (all namespaces), joined to flows by 4-tuple."""
    tcp = TcpHealthCollector(all_netns=True)
    try:
        tcp.open()
    except Orb8Error as err:
        print(f"orb8: no TCP health columns: {err}", file=sys.stderr)
        return None
    return tcp


class HealthTable:
    """TCP health summed per socket 4-tuple (local end first) across reads."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int, str, int], list[int]] = {}

    def add(self, rows: list[TcpHealth]) -> None:
        for r in rows:
            key = (r.local_ip, r.local_port, r.remote_ip, r.remote_port)
            cur = self._rows.setdefault(key, [0, 0, 0, 0, 0])
            for i, v in enumerate(
                (r.retransmits, r.resets_sent, r.resets_received, r.connects, r.connect_ns_total)
            ):
                cur[i] += v

    def join(self, flows: list[Flow]) -> dict[int, list[int]]:
        """id(flow) → health, for the TCP flow whose source is the socket (the largest
        such row when an interface saw it twice, so nothing is counted twice)."""
        out: dict[int, list[int]] = {}
        taken: set[tuple[str, int, str, int]] = set()
        for f in flows:  # largest first
            key = (f.src_ip, f.src_port, f.dst_ip, f.dst_port)
            if f.protocol == 6 and key in self._rows and key not in taken:
                taken.add(key)
                out[id(f)] = self._rows[key]
        return out


def _health_json(h: list[int] | None) -> dict[str, Any]:
    if h is None:
        return {}
    return {
        "retransmits": h[0],
        "resets_sent": h[1],
        "resets_received": h[2],
        "connect_latency_ms": round(h[4] / h[3] / 1e6, 3) if h[3] else None,
    }


def flow_json(f: Flow, health: list[int] | None = None) -> dict[str, Any]:
    return {
        "src_ip": f.src_ip,
        "dst_ip": f.dst_ip,
        "src_port": f.src_port,
        "dst_port": f.dst_port,
        "protocol": f.protocol_name,
        "direction": f.direction,
        "ifindex": f.ifindex,
        "bytes": f.bytes,
        "packets": f.packets,
        "tcp_flags": tcp_flag_names(f.tcp_flags),
        **_health_json(health),
    }


def _ports(f: Flow) -> str:
    if f.protocol in (1, 58):  # ICMP keeps type << 8 | code in dst_port
        return f"type {f.dst_port >> 8}/{f.dst_port & 0xFF}"
    return f"{f.src_port}→{f.dst_port}" if f.src_port or f.dst_port else "-"


def flow_table(flows: list[Flow], *, health: dict[int, list[int]] | None = None) -> str:
    joined = health or {}

    def tcp_cells(f: Flow) -> list[str]:
        h = _health_json(joined.get(id(f)))
        if not h:
            return ["-", "-", "-"]
        latency = h["connect_latency_ms"]
        return [
            str(h["retransmits"]),
            f"{h['resets_sent']}/{h['resets_received']}",
            "-" if latency is None else f"{latency:.1f}ms",
        ]

    rows = [
        [
            f.src_ip,
            f.dst_ip,
            _ports(f),
            f.protocol_name,
            f.direction,
            human_bytes(f.bytes),
            human_count(f.packets),
            tcp_state(f.tcp_flags) or "-",
            *tcp_cells(f),
        ]
        for f in flows
    ]
    headers = ["SRC", "DST", "PORTS", "PROTO", "DIR", "BYTES", "PACKETS", "TCP"]
    headers += ["RETRANS", "RST S/R", "CONNECT"]
    return table(headers=headers, rows=rows)


# syscalls ------------------------------------------------------------------


def run_syscalls(args: argparse.Namespace) -> int:
    duration = _check_common(args)
    path = (
        cgroupfs.resolve(path=args.cgroup) if args.cgroup else cgroupfs.cgroup_of_pid(pid=args.pid)
    )
    cgroup_id = cgroupfs.cgroup_id(path=path)
    alert_list = args.alert or list(DEFAULT_ALERTS)
    for name in alert_list:
        syscall_names.nr_of(name=name)  # raises UsageError for unknown names
    _require_root()
    counts = SyscallTable()
    alerts: list[Alert] = []
    stopper = _Stopper()
    collector = SyscallCollector(hook=Hook(args.hook))
    with stopper.installed():
        collector.open()
        try:
            collector.set_alert_syscalls(syscalls=alert_list)
            collector.watch_cgroup(cgroup_id=cgroup_id)

            def tick(remaining: float) -> str:
                alerts.extend(collector.poll_alerts(timeout_ms=0))
                counts.add(collector.read_counts())
                return (
                    f"tracing {path}: {human_count(counts.total)} syscalls, "
                    f"{len(alerts)} alerts, {remaining:.0f}s left"
                )

            _loop(duration=duration, stopper=stopper, tick=tick)
            collector.unwatch_cgroup(cgroup_id=cgroup_id)
            alerts.extend(collector.poll_alerts(timeout_ms=0))
            counts.add(collector.read_counts())
            stats = collector.stats()
        finally:
            collector.close()
    dropped = {
        "rate_limited": stats.rate_limited,
        "ringbuf_full": stats.ringbuf_full,
        "count_map_full": stats.count_map_full,
    }
    if args.output == "json":
        doc = {
            "cgroup": str(path),
            "cgroup_id": cgroup_id,
            "counts": [{"syscall": c.name, "nr": c.nr, "count": c.count} for c in counts.top()],
            "alerts": [alert_json(a) for a in alerts],
            "dropped": dropped,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(
        table(
            headers=["SYSCALL", "NR", "COUNT"],
            rows=[[c.name, str(c.nr), str(c.count)] for c in counts.top()],
        )
    )
    print()
    if alerts:
        rows = [[_time(a.timestamp), str(a.tgid), str(a.pid), a.comm, a.name] for a in alerts]
        print(table(headers=["TIME", "PID", "TID", "COMM", "SYSCALL"], rows=rows))
    else:
        print(f"no alerts ({','.join(alert_list)})")
    if any(dropped.values()):
        print(f"dropped alerts: {dropped}", file=sys.stderr)
    return 0


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "time": _time(a.timestamp),
        "pid": a.tgid,
        "tid": a.pid,
        "comm": a.comm,
        "cgroup_id": a.cgroup_id,
        "syscall": a.name,
        "nr": a.nr,
    }


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
