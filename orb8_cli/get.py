"""``orb8 get flows|alerts|nodes|gpus SESSION``: read a session's status and print it.

``flows`` and ``alerts`` (and any row kind in :data:`SESSION_ROWS`) take the
filters of ``orb8_cli.filters``, ``-o table|wide|json|ndjson`` and
``--watch``, which follows the session through the apiserver's watch.

Talks to the cluster in the current kubeconfig context (``--kubeconfig`` or
``$KUBECONFIG``), like kubectl. Installed as ``kubectl-orb8`` too, so
``kubectl orb8 get flows checkout-debug -n shop`` works.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from orb8_cli import dns
from orb8_cli.filters import add_filter_arguments, filter_from_args
from orb8_cli.humanize import human_bytes, table
from orb8_cli.kube import current_namespace, get_session
from orb8_cli.output import OUTPUTS, Row, RowKind, WatchPrinter, render
from orb8_cli.rowkinds import ALERTS, FLOWS
from orb8_cli.sessionwatch import follow_session
from orb8_common.crd import GPU_TELEMETRIES, TRACE_SESSIONS
from orb8_common.models import GpuNodeEntry, NodeEntry, format_time, to_wire

# The row kinds of a TraceSession's status: kind -> (status field, RowKind).
SESSION_ROWS: dict[str, tuple[str, RowKind]] = {
    "flows": ("flows", FLOWS),
    "alerts": ("alerts", ALERTS),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("get", help="show a session's flows, alerts, nodes or GPUs")
    kinds = parser.add_subparsers(dest="what", metavar="WHAT", parser_class=type(parser))
    for what, help_text, func in (
        ("flows", "top flows of a TraceSession, both ends named", run_rows),
        ("alerts", "syscall alerts of a TraceSession", run_rows),
        ("nodes", "per-node state of a TraceSession or GpuTelemetry", run_nodes),
        ("gpus", "per-pod GPU use of a GpuTelemetry", run_gpus),
    ):
        sub = kinds.add_parser(what, help=help_text)
        sub.add_argument("session", metavar="SESSION")
        sub.add_argument("-n", "--namespace", help="the session's namespace (default: context's)")
        sub.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
        if what in SESSION_ROWS:
            add_row_arguments(sub)
        else:
            sub.add_argument("-o", "--output", choices=("table", "json"), default="table")
        if what == "nodes":
            sub.add_argument(
                "--kind", choices=("ts", "gput"), default="ts",
                help="the session's kind: ts (TraceSession) or gput (GpuTelemetry)",
            )  # fmt: skip
        sub.set_defaults(func=func)
    dns.register_get(kinds)


def add_row_arguments(parser: argparse.ArgumentParser) -> None:
    """-o/--output, -w/--watch and the filters, for any row kind of a session."""
    parser.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    parser.add_argument(
        "-w", "--watch", action="store_true",
        help="keep printing rows as they change (Ctrl-C to stop)",
    )  # fmt: skip
    add_filter_arguments(parser)


def run_rows(args: argparse.Namespace) -> int:
    """``orb8 get flows|alerts|…``: the session's rows of that kind, filtered."""
    field, kind = SESSION_ROWS[args.what]
    row_filter = filter_from_args(args, kind=kind.name, applies=kind.filters)
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    empty = f"{kind.empty} for {args.session}"
    if not args.watch:
        body = get_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS,
                           namespace=namespace, name=args.session)  # fmt: skip
        rows = kind.select(_rows(body, field), row_filter)
        text = render(kind=kind, rows=rows, output=args.output, empty=empty)
        if text:
            print(text)
        return 0
    printer = WatchPrinter(kind=kind, output=args.output, stream=sys.stdout, empty=empty)
    for body in follow_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS,
                               namespace=namespace, name=args.session):  # fmt: skip
        printer.update(kind.select(_rows(body, field), row_filter))
    return 0


def _rows(body: Mapping[str, Any], field: str) -> list[Row]:
    rows = (body.get("status") or {}).get(field) or []
    return [r for r in rows if isinstance(r, Mapping)]


def _status(args: argparse.Namespace, *, plural: str) -> dict[str, Any]:
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    body = get_session(kubeconfig=args.kubeconfig, plural=plural, namespace=namespace,
                       name=args.session)  # fmt: skip
    status: dict[str, Any] = body.get("status") or {}
    return status


def _emit(
    args: argparse.Namespace, rows: Sequence[Row], render: Callable[[Sequence[Row]], str],
    empty: str,
) -> int:  # fmt: skip
    if args.output == "json":
        print(json.dumps(list(rows), indent=2))
    elif rows:
        print(render(rows))
    else:
        print(empty)
    return 0


def _node_entries(
    raw: Any, model: type[NodeEntry] | type[GpuNodeEntry], session: str
) -> list[NodeEntry | GpuNodeEntry]:
    """The status's node entries through the contract; an entry that does not parse
    (an agent of another version) is named on stderr and left out."""
    out: list[NodeEntry | GpuNodeEntry] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            out.append(model.model_validate(item))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            print(f"orb8: {session}: status.nodes[{i}].{where}: {first['msg']} (left out)",
                  file=sys.stderr)  # fmt: skip
    return out


def _when(value: datetime | None) -> str:
    return format_time(value) if value is not None else "-"


def run_nodes(args: argparse.Namespace) -> int:
    trace = args.kind == "ts"
    plural = TRACE_SESSIONS if trace else GPU_TELEMETRIES
    raw = _status(args, plural=plural).get("nodes")
    entries = _node_entries(raw, NodeEntry if trace else GpuNodeEntry, args.session)
    # the per-node state, not the rows the session's own lists already carry
    slim = [
        {k: v for k, v in to_wire(e).items() if k not in ("flows", "alerts", "pods")}
        for e in entries
    ]

    def render(_rows: Sequence[Row]) -> str:
        if trace:
            return table(
                headers=("NODE", "STATE", "PROBES", "FLOWS", "BYTES", "ALERTS", "UNFILTERED",
                         "LAST REPORT", "MESSAGE"),
                rows=[
                    (e.node, e.state, ",".join(e.probes) or "-", str(e.flow_count),
                     human_bytes(e.bytes), str(e.alert_count), str(e.unfiltered_pods),
                     _when(e.last_report_time), e.message)
                    for e in entries if isinstance(e, NodeEntry)
                ],
            )  # fmt: skip
        return table(
            headers=("NODE", "STATE", "SOURCE", "PODS", "LAST REPORT", "MESSAGE"),
            rows=[
                (e.node, e.state, e.source or "-", str(len(e.pods)), _when(e.last_report_time),
                 e.message)
                for e in entries if isinstance(e, GpuNodeEntry)
            ],
        )  # fmt: skip

    return _emit(args, slim, render, f"no node has reported for {args.session} yet")


def run_gpus(args: argparse.Namespace) -> int:
    pods = _status(args, plural=GPU_TELEMETRIES).get("pods") or []
    rows = [
        {"namespace": p["namespace"], "pod": p["pod"], "container": p.get("container", ""),
         "node": p.get("node", ""), **gpu}
        for p in pods for gpu in p.get("gpus") or []
    ]  # fmt: skip

    def render(rows: Sequence[Row]) -> str:
        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}%"

        return table(
            headers=("POD", "CONTAINER", "NODE", "GPU", "MODEL", "SHARING", "UTIL", "MEMORY"),
            rows=[
                (f"{r['namespace']}/{r['pod']}", r["container"], r["node"],
                 r["uuid"] if not r.get("migProfile") else f"{r['uuid']} ({r['migProfile']})",
                 r.get("model", ""), r.get("sharing", ""), pct(r.get("utilizationPercent")),
                 human_bytes(r["memoryUsedBytes"]) if "memoryUsedBytes" in r else "-")
                for r in rows
            ],
        )  # fmt: skip

    return _emit(args, rows, render, f"no GPU use reported yet for {args.session}")
