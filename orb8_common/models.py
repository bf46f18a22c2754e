"""Typed models of orb8's specs, per-node agent configuration and status rows.

Field names are snake_case in Python and camelCase on the wire (aliases);
either spelling is accepted on input. Serialise for the apiserver with
:func:`to_wire`. Durations stay strings (as written by the user) and are
validated with :mod:`orb8_common.durations`; the ``*_seconds`` properties
give their value.

:func:`parse_trace_session_spec` and :func:`parse_gpu_telemetry_spec` turn a
raw spec dict into a model or raise :class:`InvalidSpecError` with a one-line
message naming the offending field.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from orb8_common.durations import MAX_SPEC_DURATION, MAX_SPEC_DURATION_SECONDS, parse_duration
from orb8_common.errors import InvalidSpecError
from orb8_common.syscalls import is_known_syscall

__all__ = [
    "DANGEROUS_SYSCALLS",
    "DEFAULT_IDLE_FOR_S",
    "AgentContainer",
    "AgentPod",
    "AgentSession",
    "Alert",
    "AlertProcess",
    "Condition",
    "ConditionStatus",
    "DcgmExporterSource",
    "Direction",
    "DnsName",
    "DnsProbe",
    "DnsSummary",
    "Flow",
    "FlowEndpoint",
    "FlowFilter",
    "GpuAlert",
    "GpuAlertKind",
    "GpuAlertsSpec",
    "GpuDevice",
    "GpuNodeEntry",
    "GpuPodRow",
    "GpuSharing",
    "GpuSource",
    "GpuSummary",
    "GpuTelemetrySpec",
    "Interval",
    "KernelInfo",
    "LabelSelector",
    "LabelSelectorRequirement",
    "NetworkProbe",
    "NodeAgentConfigSpec",
    "NodeAgentConfigStatus",
    "NodeEntry",
    "NodeState",
    "NvmlSource",
    "ProbeCheck",
    "Probes",
    "Protocol",
    "Selector",
    "SelectorOperator",
    "SessionKind",
    "SessionPhase",
    "SessionReport",
    "SessionStatusHead",
    "Severity",
    "SyscallBaseline",
    "SyscallProbe",
    "Timestamp",
    "TraceSessionSpec",
    "TraceSummary",
    "format_epoch",
    "format_time",
    "parse_gpu_telemetry_spec",
    "parse_trace_session_spec",
    "read_status_head",
    "to_wire",
    "validation_message",
]

# Syscalls alerted on when spec.probes.syscalls.alertOn is omitted.
DANGEROUS_SYSCALLS: tuple[str, ...] = (
    "ptrace",
    "mount",
    "umount2",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "setns",
    "unshare",
    "open_by_handle_at",
    "syslog",
    "pivot_root",
    "swapon",
    "reboot",
    "perf_event_open",
    "process_vm_writev",
    "userfaultfd",
    "keyctl",
)

# An Idle GPU alert needs this long at or below idleUtilizationPercent unless idleFor says.
DEFAULT_IDLE_FOR_S = 600.0

Direction = Literal["ingress", "egress"]
Protocol = Literal["TCP", "UDP", "ICMP", "ICMPv6"]
NodeState = Literal["Pending", "Running", "Degraded", "Failed", "Stopped"]
Severity = Literal["Low", "Medium", "High", "Critical"]
ConditionStatus = Literal["True", "False", "Unknown"]
SessionKind = Literal["TraceSession", "GpuTelemetry"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
GpuSharing = Literal["exclusive", "time-sliced", "mig", "unknown"]
GpuAlertKind = Literal["Idle", "MemoryHigh"]
# A TraceSession's or GpuTelemetry's status.phase (the CRD's enum is generated from it).
SessionPhase = Literal["Pending", "Running", "Completed", "Failed"]


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC at second precision, the way metav1.Time is written."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_epoch(seconds: float) -> str:
    """:func:`format_time` of a Unix time."""
    return format_time(datetime.fromtimestamp(seconds, tz=UTC))


def _utc(value: datetime) -> datetime:
    # Naive times are taken as UTC; everything is compared in UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc), PlainSerializer(format_time, return_type=str)]


INT32_MAX = 2**31 - 1
MAX_DNS_NAMES = 200  # the largest spec.probes.dns.topNames
# spec.probes.network.filter: at most this many ports and this many CIDRs
MAX_FILTER_PORTS = 16
MAX_FILTER_CIDRS = 16
# IPv4 (dotted) or IPv6 (hex and colons; no dotted IPv4-mapped form), then /length
CIDR_PATTERN = r"^([0-9.]{7,15}|[0-9a-f:]{2,39})/[0-9]{1,3}$"
MAX_CIDR_CHARS = 43  # 39 for the longest IPv6 address, 4 for "/128"
# A question name as people read it: 128 wire bytes kept, each byte at most
# four characters once escaped (\DDD).
MAX_DNS_QUERY_CHARS = 4 * 128


# parse_duration raises InvalidDurationError, a ValueError, so pydantic names the field.
def _seconds(value: str) -> float:
    seconds = parse_duration(value)
    if seconds > MAX_SPEC_DURATION_SECONDS:
        raise ValueError(f"duration {value!r} must be at most {MAX_SPEC_DURATION}")
    return seconds


def _positive_duration(value: str) -> str:
    if _seconds(value) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


def _non_negative_duration(value: str) -> str:
    if _seconds(value) < 0:
        raise ValueError(f"duration {value!r} must not be negative")
    return value


def _interval(value: str) -> str:
    if _seconds(value) < 1:
        raise ValueError(f"interval {value!r} must be at least 1s")
    return value


def _known_syscall(value: str) -> str:
    if not is_known_syscall(name=value):
        raise ValueError(f"unknown syscall {value!r}")
    return value


Interval = Annotated[str, AfterValidator(_interval)]
PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]
NonNegativeDuration = Annotated[str, AfterValidator(_non_negative_duration)]
SyscallName = Annotated[str, AfterValidator(_known_syscall)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


M = TypeVar("M", bound=BaseModel)


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready camelCase dict the apiserver stores (None fields omitted)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def validation_message(err: ValidationError, *, where: str) -> str:
    """``<where>.<field>: <what is wrong>`` for the first error, on one line."""
    first = err.errors()[0]
    loc = where
    for part in first["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else f".{part}"
    msg = first["msg"].removeprefix("Value error, ")
    # Model-level checks name their field as "<field>: <message>".
    field, sep, rest = msg.partition(": ")
    if sep and field.isidentifier():
        loc, msg = f"{loc}.{field}", rest
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {msg}{extra}"


def _parse(model: type[M], raw: Any, where: str) -> M:
    """Validate ``raw`` into ``model``; one-line InvalidSpecError naming the field."""
    if raw is None:
        raw = {}
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise InvalidSpecError(validation_message(err, where=where)) from None


# --- selectors --------------------------------------------------------------


class LabelSelectorRequirement(_Model):
    key: str = Field(min_length=1)
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Model):
    """metav1.LabelSelector. An empty selector matches every pod."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


class Selector(_Model):
    # None and {} both match every pod in the selected namespaces.
    pod_selector: LabelSelector | None = None
    # Empty: the session's own namespace.
    namespaces: tuple[str, ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)


# --- TraceSession -------------------------------------------------------------


def _cidr(value: str) -> str:
    """A CIDR written as its network in canonical form: 10.0.0.0/8, fd00::/8.

    Canonical form (no host bits, lowercase, RFC 5952 compression) makes the
    text one-to-one with the network, and it is what the CRD's CEL rule
    (``string(cidr(self).masked()) == self``) accepts, so both agree.
    """
    message = "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or fd00::/8"
    if not re.fullmatch(CIDR_PATTERN, value):
        raise ValueError(f"{message}, got {value!r}")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{message}, got {value!r}") from None
    if str(network) != value:
        raise ValueError(
            "must be written in canonical form: no host bits, lowercase, :: compression"
            f" (here {network}), got {value!r}"
        )
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Cidr = Annotated[str, Field(max_length=MAX_CIDR_CHARS), AfterValidator(_cidr)]


class FlowFilter(_Model):
    """Which packets the flow probe counts for a session (docs/tracesessions.md).

    A packet is counted when (``ports`` is empty, or it is TCP or UDP and its
    source or destination port is listed) and (``cidrs`` is empty, or the
    pod's peer address, the end that is not the pod, lies in a listed CIDR
    of the packet's family). Empty lists do not filter.
    """

    ports: tuple[Port, ...] = Field(default=(), max_length=MAX_FILTER_PORTS)
    cidrs: tuple[Cidr, ...] = Field(default=(), max_length=MAX_FILTER_CIDRS)

    @field_validator("ports", "cidrs")
    @classmethod
    def _unique(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat entries")
        return value

    @property
    def filters(self) -> bool:
        """Whether it lets only some packets through."""
        return bool(self.ports or self.cidrs)

    def matches(self, *, protocol: str, ports: tuple[int, int], peer_ip: str) -> bool:
        """The semantics above, for one flow; ``peer_ip`` is the pod's peer."""
        if self.ports and (protocol not in ("TCP", "UDP") or not set(ports) & set(self.ports)):
            return False
        if self.cidrs:
            try:
                peer = ipaddress.ip_address(peer_ip)
            except ValueError:
                return False
            return any(peer in network for network in self._networks[peer.version])
        return True

    @functools.cached_property
    def _networks(self) -> dict[int, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
        networks = [ipaddress.ip_network(c) for c in self.cidrs]
        return {v: tuple(n for n in networks if n.version == v) for v in (4, 6)}


class NetworkProbe(_Model):
    enabled: bool = False
    directions: tuple[Direction, ...] = ("ingress", "egress")
    protocols: tuple[Protocol, ...] = ("TCP", "UDP", "ICMP", "ICMPv6")
    top_flows: int = Field(default=50, ge=1, le=1000)
    # retransmits, resets and connect latency on TCP flow rows (docs/tcp-health.md)
    tcp_health: bool = True
    # count only these ports / peer CIDRs, in the kernel (docs/tracesessions.md)
    filter: FlowFilter = Field(default_factory=FlowFilter)

    @field_validator("directions", "protocols")
    @classmethod
    def _non_empty_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one entry")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat entries")
        return value


class SyscallBaseline(_Model):
    """Rate-spike thresholds of the learned baseline (docs/syscall-baseline.md)."""

    # A window is a rate spike above max(spikeFactor x learned peak, spikeMinCount) calls.
    spike_factor: int = Field(default=10, ge=2, le=1000)
    spike_min_count: int = Field(default=1000, ge=1, le=INT32_MAX)


class SyscallProbe(_Model):
    enabled: bool = False
    alert_on: tuple[SyscallName, ...] = DANGEROUS_SYSCALLS
    # Above 0s: learn each container's syscalls and rates for this long, then alert on
    # syscalls outside that baseline and on rate spikes.
    learning_period: NonNegativeDuration = "0s"
    max_alerts: int = Field(default=100, ge=1, le=1000)
    baseline: SyscallBaseline = Field(default_factory=SyscallBaseline)

    @field_validator("alert_on")
    @classmethod
    def _syscall_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one syscall")
        return tuple(dict.fromkeys(value))

    @property
    def learning_period_seconds(self) -> float:
        return parse_duration(self.learning_period)


class DnsProbe(_Model):
    """DNS over UDP/53 (and TCP/53, one message per segment) parsed in the kernel."""

    enabled: bool = False
    top_names: int = Field(default=20, ge=1, le=MAX_DNS_NAMES)


class Probes(_Model):
    network: NetworkProbe = Field(default_factory=NetworkProbe)
    syscalls: SyscallProbe = Field(default_factory=SyscallProbe)
    dns: DnsProbe = Field(default_factory=DnsProbe)


class TraceSessionSpec(_Model):
    selector: Selector = Field(default_factory=Selector)
    probes: Probes = Field(default_factory=Probes)
    duration: PositiveDuration | None = None
    report_interval: Interval = "15s"
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=INT32_MAX)

    @model_validator(mode="after")
    def _some_probe(self) -> TraceSessionSpec:
        probes = self.probes
        if not (probes.network.enabled or probes.syscalls.enabled or probes.dns.enabled):
            raise ValueError("probes: enable at least one of network, syscalls, dns")
        return self

    @property
    def duration_seconds(self) -> float | None:
        return None if self.duration is None else parse_duration(self.duration)

    @property
    def report_interval_seconds(self) -> float:
        return parse_duration(self.report_interval)


# --- GpuTelemetry -------------------------------------------------------------


class DcgmExporterSource(_Model):
    port: int = Field(default=9400, ge=1, le=65535)
    path: str = "/metrics"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with /")
        return value


class NvmlSource(_Model):
    pass


class GpuSource(_Model):
    """Exactly one of dcgmExporter / nvml, or neither for auto-detection."""

    dcgm_exporter: DcgmExporterSource | None = None
    nvml: NvmlSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> GpuSource:
        if self.dcgm_exporter is not None and self.nvml is not None:
            raise ValueError("set at most one of dcgmExporter, nvml")
        return self

    @property
    def kind(self) -> Literal["dcgmExporter", "nvml", "auto"]:
        if self.dcgm_exporter is not None:
            return "dcgmExporter"
        return "nvml" if self.nvml is not None else "auto"


class GpuAlertsSpec(_Model):
    idle_utilization_percent: int | None = Field(default=None, ge=0, le=100)
    idle_for: PositiveDuration | None = None
    memory_used_percent: int | None = Field(default=None, ge=0, le=100)

    @property
    def idle_for_seconds(self) -> float:
        """How long a GPU must stay idle; 10m when ``idleFor`` is absent."""
        return DEFAULT_IDLE_FOR_S if self.idle_for is None else parse_duration(self.idle_for)


class GpuTelemetrySpec(_Model):
    selector: Selector = Field(default_factory=Selector)
    source: GpuSource = Field(default_factory=GpuSource)
    interval: Interval = "15s"
    duration: PositiveDuration | None = None
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=INT32_MAX)
    alerts: GpuAlertsSpec = Field(default_factory=GpuAlertsSpec)

    @property
    def duration_seconds(self) -> float | None:
        return None if self.duration is None else parse_duration(self.duration)

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


def parse_trace_session_spec(raw: Any) -> TraceSessionSpec:
    return _parse(TraceSessionSpec, raw, "spec")


def parse_gpu_telemetry_spec(raw: Any) -> GpuTelemetrySpec:
    return _parse(GpuTelemetrySpec, raw, "spec")


# --- NodeAgentConfig ----------------------------------------------------------


class AgentContainer(_Model):
    name: str
    id: str = ""  # runtime://<id>; empty until the container has started


class AgentPod(_Model):
    uid: str
    namespace: str
    name: str
    ips: tuple[str, ...] = ()
    host_network: bool = False
    containers: tuple[AgentContainer, ...] = ()


class AgentSession(_Model):
    """A session with target pods on one node: who it is and that node's pods.

    The session's settings are not copied here: the agent reads them from the
    session object itself (once per generation), so they are written once.
    On the wire a session names its pods by uid (``podUids``) and each pod
    is listed once per node (``NodeAgentConfigSpec.pods``), however many
    sessions select it; ``pods`` is filled from there when the spec is read
    (an entry that lists its pods inline, as older operators wrote, is read
    too) and is never written.
    """

    uid: str
    kind: SessionKind
    namespace: str
    name: str
    generation: int = 0
    pod_uids: tuple[str, ...] = ()
    pods: tuple[AgentPod, ...] = Field(default=(), exclude=True)


class NodeAgentConfigSpec(_Model):
    """A node's work: its target pods once, and per session the uids of those it traces."""

    node_name: str
    pods: tuple[AgentPod, ...] = ()
    sessions: tuple[AgentSession, ...] = ()

    @field_validator("sessions")
    @classmethod
    def _one_entry_per_session(cls, sessions: tuple[AgentSession, ...]) -> tuple[AgentSession, ...]:
        # spec.sessions is an atomic list (cheap for the apiserver), so uniqueness
        # by uid is this contract's rule, not the apiserver's.
        seen: set[str] = set()
        for session in sessions:
            if session.uid in seen:
                raise ValueError(f"session uid {session.uid!r} is listed more than once")
            seen.add(session.uid)
        return sessions

    @model_validator(mode="after")
    def _link_pods(self) -> NodeAgentConfigSpec:
        # Both directions, so readers see session.pods and writers always emit podUids
        # with every pod listed once, in (namespace, name, uid) order.
        by_uid = {pod.uid: pod for pod in self.pods}
        for session in self.sessions:
            for pod in session.pods:
                by_uid.setdefault(pod.uid, pod)
        sessions = []
        for session in self.sessions:
            uids = session.pod_uids or tuple(pod.uid for pod in session.pods)
            pods = tuple(by_uid[uid] for uid in uids if uid in by_uid)
            sessions.append(session.model_copy(update={"pod_uids": uids, "pods": pods}))
        ordered = tuple(sorted(by_uid.values(), key=lambda p: (p.namespace, p.name, p.uid)))
        object.__setattr__(self, "pods", ordered)  # frozen: set once, while validating
        object.__setattr__(self, "sessions", tuple(sessions))
        return self


# --- status rows ---------------------------------------------------------------


class FlowEndpoint(_Model):
    # namespace/pod are empty for endpoints outside the cluster's pods.
    namespace: str = ""
    pod: str = ""
    ip: str
    port: int | None = None  # None for ICMP


class Flow(_Model):
    source: FlowEndpoint
    destination: FlowEndpoint
    protocol: Protocol
    bytes: int = Field(default=0, ge=0)
    packets: int = Field(default=0, ge=0)
    first_seen: Timestamp | None = None
    last_seen: Timestamp | None = None
    node: str = ""
    # TCP health of the source's socket (TCP rows, TCP health on; docs/tcp-health.md)
    retransmits: int | None = Field(default=None, ge=0)
    resets_sent: int | None = Field(default=None, ge=0)
    resets_received: int | None = Field(default=None, ge=0)
    connect_latency_ms: float | None = Field(default=None, ge=0)
    # One end is a ClusterIP Service's address: "namespace/name:port" (docs/services.md).
    service: str = ""
    # Where that Service sent this flow (the DNAT target), where it is known.
    backend: FlowEndpoint | None = None


class AlertProcess(_Model):
    pid: int
    comm: str = ""


class Alert(_Model):
    namespace: str
    pod: str
    container: str = ""
    node: str = ""
    syscall: str
    count: int = Field(default=1, ge=0)
    severity: Severity = "High"
    reason: str = ""
    first_seen: Timestamp | None = None
    last_seen: Timestamp | None = None
    process: AlertProcess | None = None
    # Rate spikes only: the highest window rate seen, and the learned peak (calls/s).
    rate_per_second: float | None = Field(default=None, ge=0)
    learned_rate_per_second: float | None = Field(default=None, ge=0)


class GpuDevice(_Model):
    uuid: str
    index: int | None = None
    model: str = ""
    sharing: GpuSharing = "exclusive"
    mig_profile: str = ""
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    last_updated: Timestamp | None = None


class GpuPodRow(_Model):
    namespace: str
    pod: str
    container: str = ""
    node: str = ""
    gpus: tuple[GpuDevice, ...] = ()


class GpuAlert(_Model):
    """A GPU alert raised by a node's agent (it keeps the idle history)."""

    namespace: str
    pod: str
    container: str = ""
    node: str = ""
    gpu: str  # the GPU's UUID
    kind: GpuAlertKind
    message: str = ""
    value: float | None = None  # the reading that raised it, a percentage
    first_seen: Timestamp | None = None
    last_seen: Timestamp | None = None


class DnsName(_Model):
    """Answers (or unanswered queries) of one name, one type, one rcode, from one pod."""

    namespace: str = ""
    pod: str = ""
    node: str = ""
    query: str = Field(max_length=MAX_DNS_QUERY_CHARS)
    qtype: str = Field(max_length=16)  # A, AAAA, ... or TYPE<n>
    rcode: str = Field(max_length=16)  # NOERROR, NXDOMAIN, SERVFAIL, ... or UNANSWERED
    count: int = Field(default=0, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)  # mean, over answers matched to a query
    latency_max_ms: float | None = Field(default=None, ge=0)
    truncated: bool = False  # the name was longer than the probe keeps


class DnsSummary(_Model):
    """DNS totals (over every name, not only those listed) and the top names."""

    queries: int = Field(default=0, ge=0)
    answers: int = Field(default=0, ge=0)
    nxdomain: int = Field(default=0, ge=0)
    servfail: int = Field(default=0, ge=0)
    unanswered: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)  # nxdomain + servfail: the DNS-ERRORS column
    names: tuple[DnsName, ...] = ()


class NodeEntry(_Model):
    """One node's share of a TraceSession's status (written by that node's agent)."""

    node: str
    state: NodeState = "Pending"
    probes: tuple[str, ...] = ()
    message: str = ""
    last_report_time: Timestamp | None = None
    flow_count: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    packets: int = Field(default=0, ge=0)
    alert_count: int = Field(default=0, ge=0)
    dropped_events: int = Field(default=0, ge=0)
    # target pods whose veth's kernel flow filter could not be written (a filter map full):
    # the kernel counts all their packets, the session's rows are still filtered exactly
    unfiltered_pods: int = Field(default=0, ge=0)
    # TCP health totals of this node's target pods' sockets (all flows, not only the top)
    retransmits: int = Field(default=0, ge=0)
    resets_sent: int = Field(default=0, ge=0)
    resets_received: int = Field(default=0, ge=0)
    connects: int = Field(default=0, ge=0)
    connect_latency_sum_ms: float = Field(default=0, ge=0)
    flows: tuple[Flow, ...] = ()
    alerts: tuple[Alert, ...] = ()
    dns: DnsSummary | None = None


class GpuNodeEntry(_Model):
    """One node's share of a GpuTelemetry's status (written by that node's agent)."""

    node: str
    state: NodeState = "Pending"
    source: str = ""  # dcgmExporter | nvml, as detected
    message: str = ""
    last_report_time: Timestamp | None = None
    pods: tuple[GpuPodRow, ...] = ()
    alerts: tuple[GpuAlert, ...] = ()


class TraceSummary(_Model):
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    alerts: int = 0
    nodes: int = 0
    pods: int = 0
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connects: int = 0
    connect_latency_ms: float | None = None  # mean over ``connects``; None when there were none
    # pods whose kernel flow filter is not applied (their nodes count all their packets)
    unfiltered_pods: int = 0


class GpuSummary(_Model):
    gpus: int = 0
    pods: int = 0
    avg_utilization: float | None = None
    memory_used_bytes: int | None = None  # None (left out) when no GPU reported memory


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


class SessionStatusHead(_Model):
    """The scalar fields of a TraceSession's or GpuTelemetry's status, which the
    operator writes (the rows, summaries and node entries have their own models).

    Read a stored status with :func:`read_status_head`, which keeps every field
    that parses. Integers are strict: ``"5"`` and ``true`` are not counts.
    """

    phase: SessionPhase | None = None
    observed_generation: int | None = Field(default=None, ge=0, strict=True)
    conditions: tuple[Condition, ...] = ()
    start_time: Timestamp | None = None
    completion_time: Timestamp | None = None
    matched_pods: int | None = Field(default=None, ge=0, strict=True)


def read_status_head(
    *, raw: Any, where: str = "status"
) -> tuple[SessionStatusHead, tuple[str, ...]]:
    """The head of the status ``raw``, field by field, and a line for each part left out.

    A field that does not parse is left unset and described in one line
    (``status.matchedPods: Input should be a valid integer``); conditions are
    read one by one, so a bad one is named and skipped and the others kept.
    An absent or null field is simply unset; ``raw`` that is not an object is
    an empty head (and one line, unless it is None).
    """
    if not isinstance(raw, Mapping):
        return SessionStatusHead(), (() if raw is None else (f"{where}: not an object",))
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for name, info in SessionStatusHead.model_fields.items():
        key = info.alias or name
        value = raw.get(key, raw.get(name))
        if value is None:
            continue
        if name == "conditions":
            if isinstance(value, list | tuple):
                kept[name] = tuple(_each_condition(value, f"{where}.{key}", problems))
            else:
                problems.append(f"{where}.{key}: Input should be a valid list")
            continue
        try:
            kept[name] = getattr(SessionStatusHead.model_validate({key: value}), name)
        except ValidationError as err:
            problems.append(validation_message(err, where=where))
    return SessionStatusHead.model_validate(kept), tuple(problems)


def _each_condition(items: Sequence[Any], where: str, problems: list[str]) -> list[Condition]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Condition.model_validate(item))
        except ValidationError as err:
            problems.append(validation_message(err, where=f"{where}[{i}]"))
    return out


# --- the agent's report: NodeAgentConfig.status --------------------------------


class KernelInfo(_Model):
    release: str = ""
    btf: bool = False


class ProbeCheck(_Model):
    name: str
    loadable: bool = False
    message: str = ""


class SessionReport(_Model):
    """One session's share on one node, as the node's agent reports it.

    Exactly one of ``trace`` (TraceSession) and ``gpu`` (GpuTelemetry) is set.
    Totals in it are cumulative since the session reached the node, and
    survive agent restarts (the agent continues from its last report).
    """

    uid: str
    kind: SessionKind
    namespace: str
    name: str
    generation: int = 0
    trace: NodeEntry | None = None
    gpu: GpuNodeEntry | None = None

    @property
    def entry(self) -> NodeEntry | GpuNodeEntry | None:
        return self.trace if self.kind == "TraceSession" else self.gpu


class NodeAgentConfigStatus(_Model):
    """NodeAgentConfig.status: everything the node's agent writes, in one patch per interval."""

    agent_version: str = ""
    heartbeat: Timestamp | None = None
    kernel: KernelInfo | None = None
    capabilities: tuple[str, ...] = ()
    probes: tuple[ProbeCheck, ...] = ()
    conditions: tuple[Condition, ...] = ()
    reports: tuple[SessionReport, ...] = ()
