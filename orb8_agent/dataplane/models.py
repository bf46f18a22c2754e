"""Plain records the collectors hand to their callers."""

from __future__ import annotations

from dataclasses import dataclass

from .abi import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

PROTOCOL_NAMES: dict[int, str] = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}

_FLAG_NAMES = (
    (TCP_SYN, "SYN"),
    (TCP_ACK, "ACK"),
    (TCP_PSH, "PSH"),
    (TCP_FIN, "FIN"),
    (TCP_RST, "RST"),
)


def protocol_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, f"IP-{number}")


def tcp_flag_names(flags: int) -> list[str]:
    return [name for bit, name in _FLAG_NAMES if flags & bit]


def tcp_state(flags: int) -> str:
    """A one-word summary of the TCP flags seen on a flow."""
    if not flags:
        return ""
    if flags & TCP_RST:
        return "reset"
    if flags & TCP_FIN:
        return "closed"
    if flags & TCP_SYN:
        return "opened"
    return "established"


@dataclass(frozen=True, slots=True)
class FlowKey:
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    protocol: int
    direction: str
    ifindex: int


@dataclass(slots=True)
class Flow:
    """Traffic of one flow in one direction on one interface.

    From ``read_flows()`` this is the delta since the previous read.
    ``first_seen_ns``/``last_seen_ns`` are CLOCK_MONOTONIC nanoseconds at
    jiffy resolution (the probe reads the kernel's coarse clock).
    """

    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    protocol: int
    direction: str
    ifindex: int
    bytes: int
    packets: int
    tcp_flags: int
    first_seen_ns: int
    last_seen_ns: int
    # hostNetwork probe only: the pod cgroup the socket is under (ifindex is 0,
    # and direction is already relative to the pod: egress = the pod sent it)
    cgroup_id: int = 0

    @property
    def protocol_name(self) -> str:
        return protocol_name(self.protocol)

    @property
    def key(self) -> FlowKey:
        return FlowKey(
            self.src_ip,
            self.dst_ip,
            self.src_port,
            self.dst_port,
            self.protocol,
            self.direction,
            self.ifindex,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert-listed syscall made by a task in a watched cgroup."""

    pid: int
    tgid: int
    comm: str
    cgroup_id: int
    nr: int
    name: str
    monotonic_ns: int
    timestamp: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class SyscallCount:
    cgroup_id: int
    nr: int
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class FlowStats:
    """Cumulative counters of the flow probe since it was loaded."""

    not_ip: int
    malformed: int
    sampled_out: int
    map_full: int
    inserted: int = 0
    evicted_estimate: int = 0  # LRU evictions: inserted minus what reads returned
    filtered: int = 0  # packets an interface's flow filter left out


@dataclass(frozen=True, slots=True)
class SyscallStats:
    """Cumulative counters of the syscall probe since it was loaded."""

    events: int
    rate_limited: int
    ringbuf_full: int
    count_map_full: int
    lost_in_user_space: int = 0


@dataclass(frozen=True, slots=True)
class TcpHealth:
    """TCP health of one socket 4-tuple, from the socket's own side.

    ``local_*`` is the socket's end, ``remote_*`` its peer: the flow row it
    belongs to is the one whose source is ``local``. From
    ``TcpHealthCollector.read()`` these are deltas since the previous read.
    """

    netns: int  # inode of the socket's network namespace
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    retransmits: int  # segments sent again (the socket's share of TcpRetransSegs)
    resets_sent: int
    resets_received: int
    connects: int  # active opens that reached ESTABLISHED
    connect_ns_total: int  # SYN_SENT → ESTABLISHED, summed over ``connects``
    connect_ns_max: int
