"""The row kinds of a TraceSession's status that ``orb8 get`` and ``orb8 top`` print.

Each is an :class:`~orb8_cli.output.RowKind` over the status rows parsed
through the contract (``orb8_common.models.Flow`` and ``Alert``). Another
kind (DNS names, say) plugs in by defining its own RowKind and registering
it in ``orb8_cli.get.SESSION_ROWS``.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import datetime

from orb8_cli.filters import DIRECTION, POD, POD_NAMESPACE, PORT, PROTOCOL, End, RowView
from orb8_cli.humanize import human_bytes, human_count
from orb8_cli.output import Column, RowKind
from orb8_common.models import Alert, Flow, FlowEndpoint, format_time


def endpoint(end: FlowEndpoint) -> str:
    who = f"{end.namespace}/{end.pod}" if end.pod else end.ip
    return f"{who}:{end.port}" if end.port is not None else who


def destination(row: Flow) -> str:
    """A ClusterIP destination as its Service, and the backend where known
    (docs/services.md): ``svc:shop/cart:80->shop/cart-1:8080``."""
    if not row.service:
        return endpoint(row.destination)
    return f"svc:{row.service}" + (f"->{endpoint(row.backend)}" if row.backend else "")


def when(value: datetime | None) -> str:
    return format_time(value) if value is not None else ""


def _retransmits(r: Flow) -> str:
    return "-" if r.retransmits is None else str(r.retransmits)


def _resets(r: Flow) -> str:
    if r.retransmits is None:
        return "-"
    return f"{r.resets_sent or 0}/{r.resets_received or 0}"


def _connect(r: Flow) -> str:
    return "-" if r.connect_latency_ms is None else f"{r.connect_latency_ms:.1f}ms"


def _end(end: FlowEndpoint) -> End:
    return End(namespace=end.namespace, pod=end.pod, port=end.port)


def _flow_key(r: Flow) -> Hashable:
    return (r.source.ip, r.source.port, r.destination.ip, r.destination.port, r.protocol, r.node)


def _flow_view(r: Flow) -> RowView:
    return RowView(source=_end(r.source), destination=_end(r.destination), protocol=r.protocol)


FLOWS: RowKind[Flow] = RowKind(
    name="flows",
    columns=(
        Column("SOURCE", lambda r: endpoint(r.source)),
        Column("DESTINATION", destination),
        Column("PROTO", lambda r: r.protocol),
        Column("BYTES", lambda r: human_bytes(r.bytes)),
        Column("PACKETS", lambda r: human_count(r.packets)),
        Column("NODE", lambda r: r.node),
        Column("LAST SEEN", lambda r: when(r.last_seen)),
        # TCP health (docs/tcp-health.md): only when some row carries it
        Column("RETRANS", _retransmits, when_field="retransmits"),
        Column("RST S/R", _resets, when_field="retransmits"),
        Column("CONNECT", _connect, when_field="retransmits"),
        Column("FIRST SEEN", lambda r: when(r.first_seen), wide=True),
        Column("SRC IP", lambda r: r.source.ip, wide=True),
        Column("DST IP", lambda r: r.destination.ip, wide=True),
    ),
    key=_flow_key,
    view=_flow_view,
    filters=frozenset({POD, POD_NAMESPACE, PROTOCOL, PORT, DIRECTION}),
    empty="no flows reported yet",
)


def _process(r: Alert) -> str:
    return f"{r.process.comm}[{r.process.pid}]" if r.process else ""


def _alert_key(r: Alert) -> Hashable:
    return (r.namespace, r.pod, r.container, r.syscall, r.node, r.reason)


ALERTS: RowKind[Alert] = RowKind(
    name="alerts",
    columns=(
        Column("SEVERITY", lambda r: r.severity),
        Column("POD", lambda r: f"{r.namespace}/{r.pod}"),
        Column("CONTAINER", lambda r: r.container),
        Column("SYSCALL", lambda r: r.syscall),
        Column("COUNT", lambda r: str(r.count)),
        Column("PROCESS", _process),
        Column("NODE", lambda r: r.node),
        Column("LAST SEEN", lambda r: when(r.last_seen)),
        Column("REASON", lambda r: r.reason),
        Column("FIRST SEEN", lambda r: when(r.first_seen), wide=True),
    ),
    key=_alert_key,
    view=lambda r: RowView(source=End(namespace=r.namespace, pod=r.pod)),
    filters=frozenset({POD, POD_NAMESPACE}),
    empty="no alerts",
)
