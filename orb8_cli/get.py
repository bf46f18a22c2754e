"""``orb8 get flows|alerts|nodes|gpus SESSION``: read a session's status and print it.

Talks to the cluster in the current kubeconfig context (``--kubeconfig`` or
``$KUBECONFIG``), like kubectl. Installed as ``kubectl-orb8`` too, so
``kubectl orb8 get flows checkout-debug -n shop`` works.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orb8_cli import dns
from orb8_cli.humanize import human_bytes, human_count, table
from orb8_cli.kube import current_namespace, get_session
from orb8_common.crd import GPU_TELEMETRIES, TRACE_SESSIONS

Row = Mapping[str, Any]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("get", help="show a session's flows, alerts, nodes or GPUs")
    kinds = parser.add_subparsers(dest="what", metavar="WHAT", parser_class=type(parser))
    for what, help_text, func in (
        ("flows", "top flows of a TraceSession, both ends named", run_flows),
        ("alerts", "syscall alerts of a TraceSession", run_alerts),
        ("nodes", "per-node state of a TraceSession or GpuTelemetry", run_nodes),
        ("gpus", "per-pod GPU use of a GpuTelemetry", run_gpus),
    ):
        sub = kinds.add_parser(what, help=help_text)
        sub.add_argument("session", metavar="SESSION")
        sub.add_argument("-n", "--namespace", help="the session's namespace (default: context's)")
        sub.add_argument("-o", "--output", choices=("table", "json"), default="table")
        sub.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
        if what == "nodes":
            sub.add_argument(
                "--kind", choices=("ts", "gput"), default="ts",
                help="the session's kind: ts (TraceSession) or gput (GpuTelemetry)",
            )  # fmt: skip
        sub.set_defaults(func=func)
    dns.register_get(kinds)


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


def _endpoint(end: Row) -> str:
    who = f"{end['namespace']}/{end['pod']}" if end.get("pod") else end.get("ip", "?")
    return f"{who}:{end['port']}" if end.get("port") is not None else who


def _tcp_health(r: Row) -> tuple[str, ...]:
    """RETRANS, RST S/R, CONNECT cells (docs/tcp-health.md); '-' where a row has none."""
    if "retransmits" not in r:
        return ("-", "-", "-")
    latency = r.get("connectLatencyMs")
    return (str(r["retransmits"]), f"{r.get('resetsSent', 0)}/{r.get('resetsReceived', 0)}",
            "-" if latency is None else f"{latency:.1f}ms")  # fmt: skip


def _destination(row: Row) -> str:
    """The destination; a ClusterIP's as its Service, and the backend where known
    (docs/services.md): ``svc:shop/cart:80->shop/cart-1:8080``."""
    if not row.get("service"):
        return _endpoint(row["destination"])
    backend = row.get("backend")
    return f"svc:{row['service']}" + (f"->{_endpoint(backend)}" if backend else "")


def run_flows(args: argparse.Namespace) -> int:
    flows = _status(args, plural=TRACE_SESSIONS).get("flows") or []

    def render(rows: Sequence[Row]) -> str:
        # TCP health columns only when some row carries them (TCP rows, tcpHealth on)
        health = any("retransmits" in r for r in rows)
        return table(
            headers=("SOURCE", "DESTINATION", "PROTO", "BYTES", "PACKETS", "NODE", "LAST SEEN")
            + (("RETRANS", "RST S/R", "CONNECT") if health else ()),
            rows=[
                (_endpoint(r["source"]), _destination(r), r["protocol"],
                 human_bytes(r["bytes"]), human_count(r["packets"]), r.get("node", ""),
                 r.get("lastSeen", "")) + (_tcp_health(r) if health else ())
                for r in rows
            ],
        )  # fmt: skip

    return _emit(args, flows, render, f"no flows reported yet for {args.session}")


def run_alerts(args: argparse.Namespace) -> int:
    alerts = _status(args, plural=TRACE_SESSIONS).get("alerts") or []

    def render(rows: Sequence[Row]) -> str:
        return table(
            headers=("SEVERITY", "POD", "CONTAINER", "SYSCALL", "COUNT", "PROCESS", "NODE",
                     "LAST SEEN", "REASON"),
            rows=[
                (r["severity"], f"{r['namespace']}/{r['pod']}", r.get("container", ""),
                 r["syscall"], str(r["count"]),
                 f"{r['process']['comm']}[{r['process']['pid']}]" if r.get("process") else "",
                 r.get("node", ""), r.get("lastSeen", ""), r.get("reason", ""))
                for r in rows
            ],
        )  # fmt: skip

    return _emit(args, alerts, render, f"no alerts for {args.session}")


def run_nodes(args: argparse.Namespace) -> int:
    plural = TRACE_SESSIONS if args.kind == "ts" else GPU_TELEMETRIES
    nodes = _status(args, plural=plural).get("nodes") or []
    slim = [{k: v for k, v in n.items() if k not in ("flows", "alerts", "pods")} for n in nodes]

    def render(rows: Sequence[Row]) -> str:
        return table(
            headers=("NODE", "STATE", "PROBES", "LAST REPORT", "MESSAGE"),
            rows=[
                (r["node"], r.get("state", ""), ",".join(r.get("probes") or [r.get("source", "")]),
                 r.get("lastReportTime", ""), r.get("message", ""))
                for r in rows
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
