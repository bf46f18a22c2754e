"""Which flow filter each traced interface gets in the kernel.

A pod's host veth carries one flow probe for every session that traces
the pod; the kernel filter of that interface is the union of those
sessions' ``spec.probes.network.filter`` (orb8_agent.dataplane.flowfilter),
and it counts everything as soon as one of them does not filter. Each
session then keeps only the flows its own filter takes (``FlowRouter``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orb8_agent.control.served import Served
from orb8_agent.dataplane.flowfilter import InterfaceFilter, compile_filter
from orb8_common.models import FlowFilter


def kernel_filters(
    *, sessions: Iterable[Served], pod_by_ifindex: Mapping[int, str]
) -> dict[int, InterfaceFilter]:
    """ifindex → its kernel filter, for the interfaces that filter at all."""
    by_pod: dict[str, list[FlowFilter]] = {}
    for session in sessions:
        network = session.network
        if network is None:
            continue
        for pod in session.pods:
            by_pod.setdefault(pod.uid, []).append(network.filter)
    found: dict[int, InterfaceFilter] = {}
    for ifindex, uid in pod_by_ifindex.items():
        compiled = compile_filter(filters=by_pod.get(uid, ()))
        if compiled is not None:
            found[ifindex] = compiled
    return found
