"""``orb8 trace network|syscalls|dns --local``: run a probe on this machine, no cluster.

With ``--pod NS/POD`` the same trace runs in a short-lived pod on that pod's
node instead (``orb8_cli.ephemeral``), for clusters without orb8 installed.

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
from pathlib import Path
from typing import Any

from orb8_agent.control.containers import pids_in
from orb8_agent.control.flows import pod_direction
from orb8_agent.dataplane import cgroupfs, interfaces, syscall_names, tc
from orb8_agent.dataplane.aggregate import FlowTable, SyscallTable
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Alert, Flow, TcpHealth, tcp_flag_names, tcp_state
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_agent.dataplane.tcphealth import TcpHealthCollector
from orb8_cli import ephemeral, kernelfilter, podtarget
from orb8_cli.durations import parse_cli_duration
from orb8_cli.filters import (
    DIRECTION,
    PORT,
    PROTOCOL,
    End,
    RowView,
    add_filter_arguments,
    filter_from_args,
)
from orb8_cli.humanize import human_bytes, human_count, table
from orb8_common.errors import Orb8Error, ProbeLoadError, UsageError

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
    parser = subparsers.add_parser(
        "trace", help="trace this machine (--local) or one pod of a cluster (--pod) with eBPF"
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    net = kinds.add_parser(
        "network",
        help="per-flow bytes and packets on interfaces, TCP retransmits, resets, connect latency",
    )
    _common(net, outputs=("table", "json", "ndjson"))
    net.add_argument(
        "--interface",
        "-i",
        action="append",
        default=[],
        metavar="IF",
        help="interface to trace (repeatable); default: all up, non-loopback Ethernet interfaces",
    )
    net.add_argument("--top", type=int, default=0, help="print only the N largest flows")
    add_filter_arguments(net, pod=False, pod_namespace=False)
    kernelfilter.add_arguments(net)
    net.set_defaults(func=run_network)

    sys_ = kinds.add_parser("syscalls", help="syscall counts and alerts of one cgroup or pod")
    _common(sys_, outputs=("table", "json"))
    target = sys_.add_mutually_exclusive_group()
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


def _common(parser: argparse.ArgumentParser, *, outputs: tuple[str, ...]) -> None:
    parser.add_argument("--local", action="store_true", help="trace this machine")
    parser.add_argument(
        "--pod", metavar="NS/POD",
        help="trace this pod of the cluster through a short-lived pod on its node "
        "(no orb8 install needed; see docs/cli.md)",
    )  # fmt: skip
    parser.add_argument("--duration", "-d", default="10s", help="how long to trace (10s, 1m30s)")
    parser.add_argument("--output", "-o", choices=outputs, default="table")
    parser.add_argument("--agent-id", default=None, help=argparse.SUPPRESS)
    ephemeral.add_arguments(parser)
    # Set by `orb8 trace --pod` for the command it runs in the trace pod.
    parser.add_argument("--target-container", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--cgroup-root", default="/host/cgroup", help=argparse.SUPPRESS)
    parser.add_argument("--result-prefix", default="", help=argparse.SUPPRESS)


def _check_common(args: argparse.Namespace) -> float:
    if args.local == bool(args.pod):
        raise UsageError(
            "say where to trace: --local (this machine) or --pod NS/POD (a pod of the cluster)"
        )
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


def _announce(*, args: argparse.Namespace, where: str, duration: float) -> None:
    """In a trace pod: say once that the probe is live, which the workstation shows
    as ``[trace pod] orb8: probe attached …`` (start reproducing now)."""
    if args.result_prefix:
        print(f"orb8: {ephemeral.PROBE_ATTACHED} to {where} for {duration:g}s", file=sys.stderr,
              flush=True)  # fmt: skip


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
    row_filter = filter_from_args(args, kind="trace network", applies=LOCAL_FLOW_FILTERS)
    wanted = kernelfilter.flow_filter(ports=args.kernel_port, cidrs=args.kernel_cidr)
    if args.pod:
        if args.interface:
            raise UsageError("--interface does not apply with --pod: the pod's veth is traced")
        return ephemeral.run(args=args, probe="network", duration=duration)
    pod_relative = bool(args.target_container)
    if pod_relative:
        veth = podtarget.host_veth(target=_pod_target(args))
        names = [veth.name]
    else:
        names = list(dict.fromkeys(args.interface)) or interfaces.default_interfaces()
    if not names:
        raise UsageError("no interface to trace: none is up; pass --interface")
    ifindexes = [tc.ifindex_of(interface=name) for name in names]  # UsageError if unknown
    kernel = kernelfilter.compiled(wanted=wanted, interfaces=names, pod_relative=pod_relative)
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
            if kernel is not None:
                # before attaching: not one packet is counted past the filter
                refused = collector.set_filters(filters=dict.fromkeys(ifindexes, kernel))
                if refused:
                    raise ProbeLoadError(
                        "kernel filter not set: "
                        + "; ".join(
                            f"{names[ifindexes.index(i)]}: {why}" for i, why in refused.items()
                        )
                    )
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

            _announce(args=args, where=",".join(names), duration=duration)
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
    top = flows.top(limit=None)
    joined = health.join(top)
    rows = [flow_json(f, joined.get(id(f)), pod_relative=pod_relative) for f in top]
    rows = [r for r in rows if row_filter.matches(flow_view(r))]
    if args.top:
        rows = rows[: args.top]
    summary = (
        f"{len(flows)} flows on {','.join(names)}; skipped: "
        f"{stats.not_ip} non-IP, {stats.malformed} malformed; map full: {stats.map_full}, "
        f"LRU evictions (est.): {stats.evicted_estimate}"
    )
    if kernel is not None:
        summary += f"; kernel filter left out {stats.filtered} packets"
    if args.result_prefix:
        doc = {"probe": "network", "interfaces": names, "flows": rows, "summary": summary}
        print(f"{args.result_prefix} {json.dumps(doc, separators=(',', ':'))}", flush=True)
        return 0
    print_flows(rows=rows, output=args.output, summary=summary)
    return 0


LOCAL_FLOW_FILTERS = frozenset({PROTOCOL, PORT, DIRECTION})


def _pod_target(args: argparse.Namespace) -> podtarget.PodTarget:
    return podtarget.find_target(
        cgroup_root=Path(args.cgroup_root), container_ids=args.target_container
    )


def print_flows(*, rows: list[dict[str, Any]], output: str, summary: str) -> None:
    if output == "json":
        print(json.dumps(rows, indent=2))
    elif output == "ndjson":
        for row in rows:
            print(json.dumps(row, separators=(",", ":")))
    else:
        print(flow_table(rows))
        print(f"\n{summary}", file=sys.stderr)


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


def flow_json(
    f: Flow, health: list[int] | None = None, *, pod_relative: bool = False
) -> dict[str, Any]:
    """One flow of a local trace. ``direction`` is the tc hook's on the interface, or,
    on a pod's host veth, the pod's own (a packet the pod sends is tc ingress there)."""
    direction = pod_direction(hook_direction=f.direction) if pod_relative else f.direction
    return {
        "src_ip": f.src_ip,
        "dst_ip": f.dst_ip,
        "src_port": f.src_port,
        "dst_port": f.dst_port,
        "protocol": f.protocol_name,
        "direction": direction,
        "ifindex": f.ifindex,
        "bytes": f.bytes,
        "packets": f.packets,
        "tcp_flags": tcp_flag_names(f.tcp_flags),
        **_health_json(health),
    }


def flow_view(row: dict[str, Any]) -> RowView:
    """A local flow row as the filters see it (ICMP keeps type/code where ports go)."""
    icmp = row["protocol"] in ("ICMP", "ICMPv6")
    return RowView(
        source=End(port=None if icmp else row["src_port"]),
        destination=End(port=None if icmp else row["dst_port"]),
        protocol=row["protocol"],
        direction=row["direction"],
    )


def _ports(row: dict[str, Any]) -> str:
    if row["protocol"] in ("ICMP", "ICMPv6"):  # ICMP keeps type << 8 | code in dst_port
        return f"type {row['dst_port'] >> 8}/{row['dst_port'] & 0xFF}"
    if row["src_port"] or row["dst_port"]:
        return f"{row['src_port']}→{row['dst_port']}"
    return "-"


_FLAG_BITS = {name: bit for bit in (1 << i for i in range(8)) for name in tcp_flag_names(bit)}


def _tcp_state(names: list[str]) -> str:
    return tcp_state(sum(_FLAG_BITS.get(n, 0) for n in set(names))) or "-"


def flow_table(rows: list[dict[str, Any]]) -> str:
    cells = [
        [
            r["src_ip"],
            r["dst_ip"],
            _ports(r),
            r["protocol"],
            r["direction"],
            human_bytes(r["bytes"]),
            human_count(r["packets"]),
            _tcp_state(r["tcp_flags"]),
            *_tcp_cells(r),
        ]
        for r in rows
    ]
    headers = ["SRC", "DST", "PORTS", "PROTO", "DIR", "BYTES", "PACKETS", "TCP"]
    headers += ["RETRANS", "RST S/R", "CONNECT"]
    return table(headers=headers, rows=cells)


def _tcp_cells(row: dict[str, Any]) -> list[str]:
    """RETRANS, RST S/R, CONNECT (docs/tcp-health.md); '-' where the row has no health."""
    if "retransmits" not in row:
        return ["-", "-", "-"]
    latency = row["connect_latency_ms"]
    return [
        str(row["retransmits"]),
        f"{row['resets_sent']}/{row['resets_received']}",
        "-" if latency is None else f"{latency:.1f}ms",
    ]


# syscalls ------------------------------------------------------------------


def run_syscalls(args: argparse.Namespace) -> int:
    duration = _check_common(args)
    alert_list = args.alert or list(DEFAULT_ALERTS)
    for name in alert_list:
        syscall_names.nr_of(name=name)  # raises UsageError for unknown names
    if args.pod:
        if args.cgroup or args.pid is not None:
            raise UsageError("--cgroup and --pid do not apply with --pod: the pod's are traced")
        return ephemeral.run(args=args, probe="syscalls", duration=duration)
    if args.target_container:
        cgroups = [(c.path, c.cgroup_id) for c in _pod_target(args).cgroups]
    elif args.cgroup or args.pid is not None:
        path = (
            cgroupfs.resolve(path=args.cgroup)
            if args.cgroup
            else cgroupfs.cgroup_of_pid(pid=args.pid)
        )
        cgroups = [(path, cgroupfs.cgroup_id(path=path))]
    else:
        raise UsageError("--cgroup or --pid is required with --local")
    _require_root()
    counts = SyscallTable()
    alerts: list[Alert] = []
    stopper = _Stopper()
    collector = SyscallCollector(hook=Hook(args.hook))
    where = str(cgroups[0][0]) if len(cgroups) == 1 else f"{len(cgroups)} cgroups"
    filtered: set[int] = set()
    with stopper.installed():
        collector.open()
        try:
            collector.set_alert_syscalls(syscalls=alert_list)
            for _, cgroup_id in cgroups:
                collector.watch_cgroup(cgroup_id=cgroup_id)

            def tick(remaining: float) -> str:
                filtered.update(seccomp_filtered(paths=[p for p, _ in cgroups]))
                alerts.extend(collector.poll_alerts(timeout_ms=0))
                counts.add(collector.read_counts())
                return (
                    f"tracing {where}: {human_count(counts.total)} syscalls, "
                    f"{len(alerts)} alerts, {remaining:.0f}s left"
                )

            _announce(args=args, where=where, duration=duration)
            _loop(duration=duration, stopper=stopper, tick=tick)
            for _, cgroup_id in cgroups:
                collector.unwatch_cgroup(cgroup_id=cgroup_id)
            alerts.extend(collector.poll_alerts(timeout_ms=0))
            counts.add(collector.read_counts())
            stats = collector.stats()
        finally:
            collector.close()
    filtered.update(seccomp_filtered(paths=[p for p, _ in cgroups]))
    doc: dict[str, Any] = {
        "cgroup": str(cgroups[0][0]),
        "cgroup_id": cgroups[0][1],
        "counts": [{"syscall": c.name, "nr": c.nr, "count": c.count} for c in counts.top()],
        "alerts": [alert_json(a) for a in alerts],
        "alert_list": alert_list,
        "dropped": {
            "rate_limited": stats.rate_limited,
            "ringbuf_full": stats.ringbuf_full,
            "count_map_full": stats.count_map_full,
        },
        # Processes under a seccomp filter: calls it refuses never reach the probe.
        "seccomp_filtered_pids": sorted(filtered),
    }
    if len(cgroups) > 1:
        doc["cgroups"] = [{"path": str(p), "cgroup_id": i} for p, i in cgroups]
    if args.result_prefix:
        result = {"probe": "syscalls", **doc}
        print(f"{args.result_prefix} {json.dumps(result, separators=(',', ':'))}", flush=True)
        return 0
    print_syscalls(doc=doc, output=args.output)
    return 0


def print_syscalls(*, doc: dict[str, Any], output: str) -> None:
    if doc.get("seccomp_filtered_pids"):
        print(SECCOMP_NOTE.format(n=len(doc["seccomp_filtered_pids"])), file=sys.stderr)
    if output == "json":
        print(json.dumps(doc, indent=2))
        return
    print(
        table(
            headers=["SYSCALL", "NR", "COUNT"],
            rows=[[c["syscall"], str(c["nr"]), str(c["count"])] for c in doc["counts"]],
        )
    )
    print()
    if doc["alerts"]:
        rows = [[a["time"], str(a["pid"]), str(a["tid"]), a["comm"], a["syscall"]]
                for a in doc["alerts"]]  # fmt: skip
        print(table(headers=["TIME", "PID", "TID", "COMM", "SYSCALL"], rows=rows))
    else:
        print(f"no alerts ({','.join(doc.get('alert_list') or DEFAULT_ALERTS)})")
    if any(doc["dropped"].values()):
        print(f"dropped alerts: {doc['dropped']}", file=sys.stderr)


SECCOMP_NOTE = (
    "note: {n} traced processes ran under a seccomp filter (a runtime's default profile?): "
    "calls it refused are neither counted nor alerted on (docs/dataplane.md)"
)


def seccomp_filtered(*, paths: list[Path]) -> set[int]:
    """Pids in these cgroups whose ``/proc/PID/status`` says ``Seccomp: 2`` (filter mode).

    The kernel runs seccomp before the raw_syscalls:sys_enter tracepoint, so the
    probe never sees a call such a filter refuses; the note says so."""
    found: set[int] = set()
    for path in paths:
        for pid in pids_in(path=path):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # exited meanwhile
            for line in status.splitlines():
                if line.startswith("Seccomp:") and line.split()[1:] == ["2"]:
                    found.add(pid)
    return found


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
