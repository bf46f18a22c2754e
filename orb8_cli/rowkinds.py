"""The row kinds of a TraceSession's status that ``orb8 get`` and ``orb8 top`` print.

Each is an :class:`~orb8_cli.output.RowKind` over the status rows exactly as
the agent writes them (``orb8_common.models.Flow`` and ``Alert``). Another
kind (DNS names, say) plugs in by defining its own RowKind and registering
it in ``orb8_cli.get.SESSION_ROWS``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from orb8_cli.filters import DIRECTION, POD, POD_NAMESPACE, PORT, PROTOCOL, End, RowView
from orb8_cli.humanize import human_bytes, human_count
from orb8_cli.output import Column, Row, RowKind


def endpoint(end: Mapping[str, Any]) -> str:
    who = f"{end['namespace']}/{end['pod']}" if end.get("pod") else end.get("ip", "?")
    return f"{who}:{end['port']}" if end.get("port") is not None else str(who)


def destination(row: Mapping[str, Any]) -> str:
    """A ClusterIP destination as its Service, and the backend where known
    (docs/services.md): ``svc:shop/cart:80->shop/cart-1:8080``."""
    if not row.get("service"):
        return endpoint(row["destination"])
    backend = row.get("backend")
    return f"svc:{row['service']}" + (f"->{endpoint(backend)}" if backend else "")


def _resets(r: Row) -> str:
    if "retransmits" not in r:
        return "-"
    return f"{r.get('resetsSent', 0)}/{r.get('resetsReceived', 0)}"


def _connect(r: Row) -> str:
    latency = r.get("connectLatencyMs")
    return "-" if latency is None else f"{latency:.1f}ms"


def _end(end: Mapping[str, Any] | None) -> End | None:
    if not end:
        return None
    return End(namespace=end.get("namespace", ""), pod=end.get("pod", ""), port=end.get("port"))


def _flow_key(r: Row) -> Hashable:
    src, dst = r.get("source") or {}, r.get("destination") or {}
    return (src.get("ip"), src.get("port"), dst.get("ip"), dst.get("port"), r.get("protocol"),
            r.get("node", ""))  # fmt: skip


def _flow_view(r: Row) -> RowView:
    return RowView(
        source=_end(r.get("source")), destination=_end(r.get("destination")),
        protocol=r.get("protocol"),
    )  # fmt: skip


FLOWS = RowKind(
    name="flows",
    columns=(
        Column("SOURCE", lambda r: endpoint(r["source"])),
        Column("DESTINATION", destination),
        Column("PROTO", lambda r: str(r["protocol"])),
        Column("BYTES", lambda r: human_bytes(int(r.get("bytes", 0)))),
        Column("PACKETS", lambda r: human_count(int(r.get("packets", 0)))),
        Column("NODE", lambda r: str(r.get("node", ""))),
        Column("LAST SEEN", lambda r: str(r.get("lastSeen", ""))),
        # TCP health (docs/tcp-health.md): only when some row carries it
        Column("RETRANS", lambda r: str(r.get("retransmits", "-")), when_field="retransmits"),
        Column("RST S/R", _resets, when_field="retransmits"),
        Column("CONNECT", _connect, when_field="retransmits"),
        Column("FIRST SEEN", lambda r: str(r.get("firstSeen", "")), wide=True),
        Column("SRC IP", lambda r: str((r.get("source") or {}).get("ip", "")), wide=True),
        Column("DST IP", lambda r: str((r.get("destination") or {}).get("ip", "")), wide=True),
    ),
    key=_flow_key,
    view=_flow_view,
    filters=frozenset({POD, POD_NAMESPACE, PROTOCOL, PORT, DIRECTION}),
    empty="no flows reported yet",
)


def _process(r: Row) -> str:
    process = r.get("process")
    return f"{process['comm']}[{process['pid']}]" if process else ""


def _alert_key(r: Row) -> Hashable:
    return (r.get("namespace"), r.get("pod"), r.get("container", ""), r.get("syscall"),
            r.get("node", ""), r.get("reason", ""))  # fmt: skip


ALERTS = RowKind(
    name="alerts",
    columns=(
        Column("SEVERITY", lambda r: str(r.get("severity", ""))),
        Column("POD", lambda r: f"{r['namespace']}/{r['pod']}"),
        Column("CONTAINER", lambda r: str(r.get("container", ""))),
        Column("SYSCALL", lambda r: str(r["syscall"])),
        Column("COUNT", lambda r: str(r.get("count", ""))),
        Column("PROCESS", _process),
        Column("NODE", lambda r: str(r.get("node", ""))),
        Column("LAST SEEN", lambda r: str(r.get("lastSeen", ""))),
        Column("REASON", lambda r: str(r.get("reason", ""))),
        Column("FIRST SEEN", lambda r: str(r.get("firstSeen", "")), wide=True),
    ),
    key=_alert_key,
    view=lambda r: RowView(source=End(namespace=r.get("namespace", ""), pod=r.get("pod", ""))),
    filters=frozenset({POD, POD_NAMESPACE}),
    empty="no alerts",
)
