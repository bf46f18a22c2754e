"""Flow filters in the kernel: each interface's sessions' filters as map entries.

A TraceSession's ``spec.probes.network.filter`` (orb8_common.models.FlowFilter)
says which packets it wants. The flow probe sits once on a pod's host veth,
whichever sessions trace that pod, so the kernel holds the union: each
distinct session filter on the interface becomes one clause (bit i of a
32-bit mask), and a packet is counted when some clause takes both its ports
and its peer address (bpf/orb8_common.bpf.h). User space then gives each
session only the flows its own filter takes (control/flows.py), so the
union costs nothing in precision.

An interface counts everything (no entry) when one of its sessions does not
filter, or when it has more distinct filters than there are clause bits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orb8_common.models import FlowFilter

from .abi import (
    FILTER_CIDR4,
    FILTER_CIDR4_KEY,
    FILTER_CIDR6_KEY,
    FILTER_CLAUSES,
    FILTER_IF,
    FILTER_IN_MAP,
    FILTER_MASK,
    FILTER_PORT_KEY,
    FILTER_PORTS,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class InterfaceFilter:
    """One interface's filter as the kernel holds it."""

    any_port: int  # clauses without a port list
    any_peer: int  # clauses without a CIDR list
    ports: Mapping[int, int] = field(default_factory=dict)  # port → clauses listing it
    # network → clauses with a CIDR that contains it (so the longest match suffices)
    cidrs: Mapping[Network, int] = field(default_factory=dict)


def compile_filter(*, filters: Iterable[FlowFilter]) -> InterfaceFilter | None:
    """The kernel filter for an interface whose sessions ask for ``filters``.

    None means "count everything": no filters, one that lets everything
    through, or more distinct ones than the kernel has clause bits.
    """
    # one clause per distinct filter, in a fixed order: the same sessions give the
    # same entries whatever order they come in, so nothing is rewritten for it
    clauses = sorted(set(filters), key=lambda c: (c.ports, c.cidrs))
    if not clauses or len(clauses) > FILTER_CLAUSES or any(not c.filters for c in clauses):
        return None
    any_port = any_peer = 0
    ports: dict[int, int] = {}
    listed: list[tuple[Network, int]] = []
    for i, clause in enumerate(clauses):
        bit = 1 << i
        if not clause.ports:
            any_port |= bit
        if not clause.cidrs:
            any_peer |= bit
        for port in clause.ports:
            ports[port] = ports.get(port, 0) | bit
        listed += [(ipaddress.ip_network(c), bit) for c in clause.cidrs]
    cidrs: dict[Network, int] = {}
    for network, _ in listed:
        cidrs[network] = 0
        for outer, bit in listed:
            if outer.version == network.version and network.subnet_of(outer):  # type: ignore[arg-type]
                cidrs[network] |= bit
    return InterfaceFilter(any_port=any_port, any_peer=any_peer, ports=ports, cidrs=cidrs)


@dataclass(frozen=True)
class FilterEntries:
    """The packed map entries of one interface's filter (key bytes → value bytes)."""

    interface: bytes
    ports: dict[bytes, bytes]
    cidrs4: dict[bytes, bytes]
    cidrs6: dict[bytes, bytes]


def entries(*, ifindex: int, compiled: InterfaceFilter) -> FilterEntries:
    """What the flow probe's filter maps hold for ``compiled`` on ``ifindex``.

    Up to FILTER_PORTS ports and FILTER_CIDR4 IPv4 CIDRs go into the
    interface's own entry (scanned there, no further lookup per packet); longer
    lists go into the port hash and the IPv4 trie. IPv6 CIDRs always go into
    their trie.
    """
    ports: dict[bytes, bytes] = {}
    inline_ports = sorted(compiled.ports.items())
    if len(inline_ports) > FILTER_PORTS:
        ports = {
            FILTER_PORT_KEY.pack(ifindex, port): FILTER_MASK.pack(mask)
            for port, mask in inline_ports
        }
        nports, inline_ports = FILTER_IN_MAP, []
    else:
        nports = len(inline_ports)
    v4 = [(n, m) for n, m in compiled.cidrs.items() if isinstance(n, ipaddress.IPv4Network)]
    cidrs4: dict[bytes, bytes] = {}
    if len(v4) > FILTER_CIDR4:
        ncidr4 = FILTER_IN_MAP
        for network, mask in v4:
            # 32 bits of ifindex come first in the trie key, then the address
            key = FILTER_CIDR4_KEY.pack(
                32 + network.prefixlen, ifindex, network.network_address.packed
            )
            cidrs4[key] = FILTER_MASK.pack(mask)
        v4 = []
    else:
        ncidr4 = len(v4)
    cidrs6 = {
        FILTER_CIDR6_KEY.pack(32 + network.prefixlen, ifindex, network.network_address.packed):
        FILTER_MASK.pack(mask)
        for network, mask in compiled.cidrs.items()
        if isinstance(network, ipaddress.IPv6Network)
    }  # fmt: skip
    port_slots = inline_ports + [(0, 0)] * (FILTER_PORTS - len(inline_ports))
    cidr_slots: list[object] = []
    for network, mask in v4:
        cidr_slots += [network.network_address.packed, network.netmask.packed, mask]
    cidr_slots += [bytes(4), bytes(4), 0] * (FILTER_CIDR4 - len(v4))
    interface = FILTER_IF.pack(
        compiled.any_port, compiled.any_peer, nports, ncidr4,
        *(port for port, _ in port_slots), *(mask for _, mask in port_slots), *cidr_slots,
    )  # fmt: skip
    return FilterEntries(interface=interface, ports=ports, cidrs4=cidrs4, cidrs6=cidrs6)
