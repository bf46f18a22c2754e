"""``orb8 trace dns --local|--pod NS/POD`` and ``orb8 get dns SESSION``.

``trace dns`` loads the DNS probe on this machine's interfaces (``--local``)
or, in a short-lived pod on the target's node, on that pod's host veth
(``--pod``, ``orb8_cli.ephemeral``), reads its rows once a second and prints
one row per (client, server, name, qtype, rcode) when the duration ends or on
Ctrl-C / SIGTERM. ``get dns`` prints a TraceSession's ``status.dns``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from orb8_agent.dataplane import interfaces, tc
from orb8_agent.dataplane.dns import DnsCollector
from orb8_agent.dataplane.dns_table import DnsResult, DnsTable
from orb8_cli import ephemeral, podtarget
from orb8_cli.humanize import table
from orb8_cli.kube import current_namespace, get_session
from orb8_cli.status import ProblemPrinter, as_stored, read_trace_status
from orb8_common.crd import TRACE_SESSIONS
from orb8_common.errors import UsageError


def register_trace(kinds: Any, *, common: Any) -> None:
    """Add ``dns`` to ``orb8 trace``; ``common`` adds --local/--duration/--output."""
    parser = kinds.add_parser("dns", help="DNS queries, answers and latency on interfaces")
    common(parser, outputs=("table", "json"))
    parser.add_argument(
        "--interface", "-i", action="append", default=[], metavar="IF",
        help="interface to trace (repeatable); default: all up, non-loopback Ethernet interfaces",
    )  # fmt: skip
    parser.add_argument("--top", type=int, default=0, help="print only the N most frequent rows")
    parser.set_defaults(func=run_trace)


def register_get(kinds: Any) -> None:
    """Add ``dns`` to ``orb8 get``."""
    sub = kinds.add_parser("dns", help="top DNS names and errors of a TraceSession")
    sub.add_argument("session", metavar="SESSION")
    sub.add_argument("-n", "--namespace", help="the session's namespace (default: context's)")
    sub.add_argument("-o", "--output", choices=("table", "json"), default="table")
    sub.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    sub.set_defaults(func=run_get)


# trace ---------------------------------------------------------------------


def run_trace(args: argparse.Namespace) -> int:
    # imported here: trace imports this module to register it
    from orb8_cli.trace import (
        CLI_AGENT_PREFIX,
        _announce,
        _check_common,
        _loop,
        _pod_target,
        _require_root,
        _Stopper,
    )

    duration = _check_common(args)
    if args.top < 0:
        raise UsageError("--top must not be negative")
    if args.pod:
        if args.interface:
            raise UsageError("--interface does not apply with --pod: the pod's veth is traced")
        return ephemeral.run(args=args, probe="dns", duration=duration)
    names: list[str]
    if args.target_container:  # in the trace pod of `trace dns --pod`
        names = [podtarget.host_veth(target=_pod_target(args)).name]
    else:
        names = list(dict.fromkeys(args.interface)) or interfaces.default_interfaces()
    if not names:
        raise UsageError("no interface to trace: none is up; pass --interface")
    index = {name: tc.ifindex_of(interface=name) for name in names}  # UsageError if unknown
    _require_root()
    dns = DnsTable()
    stopper = _Stopper()
    tc.sweep_dead(prefix=CLI_AGENT_PREFIX)
    collector = DnsCollector(agent_id=args.agent_id or f"{CLI_AGENT_PREFIX}{os.getpid()}")
    with stopper.installed():
        collector.open()
        try:
            for name in names:
                collector.attach(interface=name)

            def tick(remaining: float) -> str:
                dns.add(collector.read_rows())
                seen = f"{dns.queries} queries"
                return f"tracing DNS on {','.join(names)}: {seen}, {remaining:.0f}s left"

            _announce(args=args, where=",".join(names), duration=duration)
            _loop(duration=duration, stopper=stopper, tick=tick)
            for name in names:
                collector.detach(interface=name)
            dns.add(collector.read_rows())
            stats = collector.stats()
        finally:
            collector.close()
    by_index = {i: n for n, i in index.items()}
    rows = [result_json(r, by_index) for r in dns.results()[: args.top or None]]
    summary = (
        f"{dns.queries} queries on {','.join(names)}; not counted: {stats.malformed} malformed "
        f"({stats.compressed} with a compression pointer), {stats.qdcount} qdcount != 1, "
        f"{stats.not_query} not a standard query, {stats.tcp_skipped} TCP segments not one "
        f"whole message; names cut: {stats.name_truncated}; answers without a query: "
        f"{stats.unmatched}; map full: {stats.map_full}"
    )
    if args.result_prefix:
        doc = {"probe": "dns", "interfaces": names, "rows": rows, "summary": summary}
        print(f"{args.result_prefix} {json.dumps(doc, separators=(',', ':'))}", flush=True)
        return 0
    print_dns(rows=rows, output=args.output, summary=summary, where=",".join(names))
    return 0


def print_dns(*, rows: list[dict[str, Any]], output: str, summary: str, where: str) -> None:
    """A trace's rows (:func:`result_json`) as a table (summary on stderr) or JSON."""
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    print(result_table(rows) if rows else f"no DNS seen on {where}")
    print(f"\n{summary}", file=sys.stderr)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def result_json(r: DnsResult, interfaces_by_index: dict[int, str]) -> dict[str, Any]:
    t = r.totals
    return {
        "query": r.name,
        "qtype": r.qtype,
        "rcode": r.rcode,
        "count": t.count,
        "latency_ms": _ms(t.latency_avg_ms),
        "latency_max_ms": _ms(t.latency_max_ns / 1e6) if t.matched else None,
        "src_ip": r.client_ip,
        "dst_ip": r.server_ip,
        "protocol": "TCP" if r.tcp else "UDP",
        "interface": interfaces_by_index.get(r.ifindex, str(r.ifindex)),
        "truncated": r.truncated,
    }


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def result_table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [
        [
            r["query"] + ("…" if r["truncated"] else ""), r["qtype"], r["rcode"], str(r["count"]),
            _fmt_ms(r["latency_ms"]), _fmt_ms(r["latency_max_ms"]),
            r["src_ip"], r["dst_ip"], r["protocol"],
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["QUERY", "TYPE", "RCODE", "COUNT", "AVG MS", "MAX MS", "CLIENT", "SERVER", "PROTO"]
    return table(headers=headers, rows=cells)


# get -----------------------------------------------------------------------


def run_get(args: argparse.Namespace) -> int:
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    body = get_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS, namespace=namespace,
                       name=args.session)  # fmt: skip
    status = read_trace_status(body=body)
    ProblemPrinter(session=args.session).show(
        [p for p in status.problems if p.startswith("status.dns")]
    )
    dns = status.dns
    if args.output == "json":
        print(json.dumps(as_stored(dns) if dns else {}, indent=2))
        return 0
    if dns is None or not dns.names:
        print(f"no DNS reported yet for {args.session}")
        return 0
    print(
        table(
            headers=("POD", "QUERY", "TYPE", "RCODE", "COUNT", "AVG MS", "MAX MS", "NODE"),
            rows=[
                (
                    f"{r.namespace}/{r.pod}" if r.pod else "-",
                    r.query,
                    r.qtype,
                    r.rcode,
                    str(r.count),
                    _fmt_ms(r.latency_ms),
                    _fmt_ms(r.latency_max_ms),
                    r.node,
                )
                for r in dns.names
            ],
        )
    )
    print(
        f"\n{dns.queries} queries, {dns.nxdomain} NXDOMAIN, "
        f"{dns.servfail} SERVFAIL, {dns.unanswered} unanswered",
        file=sys.stderr,
    )
    return 0
