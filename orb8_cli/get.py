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
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from orb8_cli import dns
from orb8_cli.filters import add_filter_arguments, filter_from_args
from orb8_cli.humanize import human_bytes, table
from orb8_cli.kube import current_namespace, get_session
from orb8_cli.output import OUTPUTS, RowKind, WatchPrinter, render
from orb8_cli.rowkinds import ALERTS, FLOWS, when
from orb8_cli.sessionwatch import follow_session
from orb8_cli.status import (
    GpuTelemetryStatus,
    ProblemPrinter,
    TraceSessionStatus,
    as_stored,
    read_gpu_status,
    read_trace_status,
)
from orb8_common.crd import GPU_TELEMETRIES, TRACE_SESSIONS
from orb8_common.models import GpuDevice, GpuPodRow

# The row kinds of a TraceSession's status: kind -> (RowKind, its rows in the status).
SESSION_ROWS: dict[str, tuple[RowKind[Any], Callable[[TraceSessionStatus], Sequence[Any]]]] = {
    "flows": (FLOWS, lambda status: status.flows),
    "alerts": (ALERTS, lambda status: status.alerts),
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
    kind, rows_of = SESSION_ROWS[args.what]
    row_filter = filter_from_args(args, kind=kind.name, applies=kind.filters)
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    empty = f"{kind.empty} for {args.session}"
    problems = ProblemPrinter(session=args.session)
    if not args.watch:
        body = get_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS,
                           namespace=namespace, name=args.session)  # fmt: skip
        status = read_trace_status(body=body)
        problems.show(status.problems)
        text = render(kind=kind, rows=kind.select(rows_of(status), row_filter),
                      output=args.output, empty=empty)  # fmt: skip
        if text:
            print(text)
        return 0
    printer = WatchPrinter(kind=kind, output=args.output, stream=sys.stdout, empty=empty)
    for body in follow_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS,
                               namespace=namespace, name=args.session):  # fmt: skip
        status = read_trace_status(body=body)
        problems.show(status.problems)
        printer.update(kind.select(rows_of(status), row_filter))
    return 0


def _read(args: argparse.Namespace, *, plural: str) -> dict[str, Any]:
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    return get_session(kubeconfig=args.kubeconfig, plural=plural, namespace=namespace,
                       name=args.session)  # fmt: skip


def _emit(
    args: argparse.Namespace, rows: Sequence[Any], wire: Callable[[Any], dict[str, Any]],
    render: Callable[[], str], empty: str,
) -> int:  # fmt: skip
    if args.output == "json":
        print(json.dumps([wire(r) for r in rows], indent=2))
    elif rows:
        print(render())
    else:
        print(empty)
    return 0


def _trace_status(args: argparse.Namespace) -> TraceSessionStatus:
    status = read_trace_status(body=_read(args, plural=TRACE_SESSIONS))
    ProblemPrinter(session=args.session).show(status.problems)
    return status


def _gpu_status(args: argparse.Namespace) -> GpuTelemetryStatus:
    status = read_gpu_status(body=_read(args, plural=GPU_TELEMETRIES))
    ProblemPrinter(session=args.session).show(status.problems)
    return status


def _node_state(entry: BaseModel) -> dict[str, Any]:
    # the per-node state, not the rows the session's own lists already carry
    return {k: v for k, v in as_stored(entry).items() if k not in ("flows", "alerts", "pods")}


def run_nodes(args: argparse.Namespace) -> int:
    empty = f"no node has reported for {args.session} yet"
    if args.kind == "ts":
        trace = _trace_status(args).nodes

        def render_trace() -> str:
            return table(
                headers=("NODE", "STATE", "PROBES", "FLOWS", "BYTES", "ALERTS", "UNFILTERED",
                         "LAST REPORT", "MESSAGE"),
                rows=[
                    (e.node, e.state, ",".join(e.probes) or "-", str(e.flow_count),
                     human_bytes(e.bytes), str(e.alert_count), str(e.unfiltered_pods),
                     when(e.last_report_time) or "-", e.message)
                    for e in trace
                ],
            )  # fmt: skip

        return _emit(args, trace, _node_state, render_trace, empty)
    gpu = _gpu_status(args).nodes

    def render_gpu() -> str:
        return table(
            headers=("NODE", "STATE", "SOURCE", "PODS", "LAST REPORT", "MESSAGE"),
            rows=[
                (e.node, e.state, e.source or "-", str(len(e.pods)),
                 when(e.last_report_time) or "-", e.message)
                for e in gpu
            ],
        )  # fmt: skip

    return _emit(args, gpu, _node_state, render_gpu, empty)


def _gpu_row(pair: tuple[GpuPodRow, GpuDevice]) -> dict[str, Any]:
    pod, gpu = pair
    return {"namespace": pod.namespace, "pod": pod.pod, "container": pod.container,
            "node": pod.node, **as_stored(gpu)}  # fmt: skip


def run_gpus(args: argparse.Namespace) -> int:
    rows = [(pod, gpu) for pod in _gpu_status(args).pods for gpu in pod.gpus]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}%"

    def render_gpus() -> str:
        return table(
            headers=("POD", "CONTAINER", "NODE", "GPU", "MODEL", "SHARING", "UTIL", "MEMORY"),
            rows=[
                (f"{p.namespace}/{p.pod}", p.container, p.node,
                 g.uuid if not g.mig_profile else f"{g.uuid} ({g.mig_profile})",
                 g.model, g.sharing, pct(g.utilization_percent),
                 human_bytes(g.memory_used_bytes) if g.memory_used_bytes is not None else "-")
                for p, g in rows
            ],
        )  # fmt: skip

    return _emit(args, rows, _gpu_row, render_gpus, f"no GPU use reported yet for {args.session}")
