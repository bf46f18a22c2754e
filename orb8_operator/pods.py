"""The small, hashable pod record the operator's pod index holds.

Decision (which pods are targets): a pod is a target when it is bound to a
node (``spec.nodeName``), is not being deleted, is in phase Running, or in
phase Pending with at least one pod IP (its sandbox is up, so init containers
and early traffic are already visible), and has an IP or uses the host
network. Succeeded and Failed pods are never targets. Containers are listed
only once the runtime reported their containerID; the pod is re-indexed when
it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PodEntry", "is_target", "node_index_value", "pod_entry_from_body"]


@dataclass(frozen=True, slots=True)
class PodEntry:
    uid: str
    namespace: str
    name: str
    node: str  # "" while unscheduled
    labels: tuple[tuple[str, str], ...]
    ips: tuple[str, ...]
    host_network: bool
    phase: str
    containers: tuple[tuple[str, str], ...]  # (name, containerID)
    terminating: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    ips: list[str] = []
    for entry in status.get("podIPs") or ():
        ip = _map(entry).get("ip")
        if isinstance(ip, str) and ip and ip not in ips:
            ips.append(ip)
    single = status.get("podIP")
    if isinstance(single, str) and single and single not in ips:
        ips.insert(0, single)
    return tuple(ips)


def _containers(status: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or ():
            cs = _map(entry)
            name, cid = cs.get("name"), cs.get("containerID")
            if isinstance(name, str) and isinstance(cid, str) and cid:
                out[name] = cid
    return tuple(sorted(out.items()))


def pod_entry_from_body(*, body: Mapping[str, Any]) -> PodEntry | None:
    """Build the index entry from a Pod object; None when it lacks identity."""
    meta, spec, status = (
        _map(body.get("metadata")),
        _map(body.get("spec")),
        _map(body.get("status")),
    )
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not (isinstance(uid, str) and isinstance(namespace, str) and isinstance(name, str)):
        return None
    labels = _map(meta.get("labels"))
    node = spec.get("nodeName")
    phase = status.get("phase")
    return PodEntry(
        uid=uid,
        namespace=namespace,
        name=name,
        node=node if isinstance(node, str) else "",
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        ips=_ips(status),
        host_network=bool(spec.get("hostNetwork", False)),
        phase=phase if isinstance(phase, str) else "Unknown",
        containers=_containers(status),
        terminating=meta.get("deletionTimestamp") is not None,
    )


def is_target(*, pod: PodEntry) -> bool:
    """Whether agents should trace this pod now (see the module docstring)."""
    if not pod.node or pod.terminating:
        return False
    if pod.phase == "Running":
        return bool(pod.ips) or pod.host_network
    if pod.phase == "Pending":
        return bool(pod.ips)
    return False


def node_index_value(*, body: Mapping[str, Any]) -> dict[str, tuple[tuple[str, str], ...]]:
    """What ``@kopf.index('nodes')`` stores for a node: {name: sorted label pairs}."""
    meta = _map(body.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str):
        return {}
    labels = _map(meta.get("labels"))
    return {name: tuple(sorted((str(k), str(v)) for k, v in labels.items()))}
