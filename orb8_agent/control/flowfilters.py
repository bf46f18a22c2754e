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
from orb8_common.models import AgentPod, FlowFilter


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


# pods named in one session's message; the rest are counted ("+3 more")
UNAPPLIED_NAMED = 3


def unapplied_problem(
    *, filter_: FlowFilter, pods: Iterable[AgentPod], unapplied: Mapping[str, str]
) -> tuple[int, str]:
    """How many of a session's pods lack its kernel filter, and the status line saying so.

    ``unapplied``: pod uid → why its veth's filter could not be written. A
    session that does not filter has nothing missing; (0, "") then, as when
    every pod's filter is in place.
    """
    if not filter_.filters:
        return 0, ""
    missing = sorted(
        (f"{pod.namespace}/{pod.name}", unapplied[pod.uid]) for pod in pods if pod.uid in unapplied
    )
    if not missing:
        return 0, ""
    names = ", ".join(name for name, _ in missing[:UNAPPLIED_NAMED])
    if len(missing) > UNAPPLIED_NAMED:
        names += f" (+{len(missing) - UNAPPLIED_NAMED} more)"
    reasons = "; ".join(sorted({why for _, why in missing}))
    return len(missing), (
        f"kernel flow filter not applied on {names} ({reasons}): counting all packets there, "
        "rows still filtered"
    )
