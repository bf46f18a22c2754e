"""ClusterIP Services as the agent sees them: virtual IP:port → Service, and its backends.

Kept by two watches, on Services and on EndpointSlices (``ServiceWatches``
in ``service_watch.py``), which run only while a served session counts
flows; each event changes the index in place. Pure data: tests build it
from dicts.

What a host-side veth shows (docs/services.md):

* the client pod's veth: egress packets still carry the ClusterIP (kube-proxy
  DNATs them in the host, after the veth), replies come back already
  reverse-NATed (source = the ClusterIP). So a flow whose one end is a
  Service's ``clusterIP:port`` names that Service; the backend comes from the
  node's conntrack entry, or is the Service's only ready endpoint;
* the backend pod's veth: client pod IP → backend pod IP:targetPort, no
  ClusterIP anywhere; such a flow is named by pods only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Translated(Protocol):
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...


class Conntrack(Protocol):
    """What the attributor needs from conntrack (``conntrack.ConntrackReader``)."""

    def lookup(
        self, *, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: str
    ) -> Translated | None: ...


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port: int
    protocol: str
    port_name: str

    @property
    def label(self) -> str:
        """``namespace/name:port``, as flow rows show it."""
        return f"{self.namespace}/{self.name}:{self.port}"


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int
    namespace: str = ""
    pod: str = ""


ObjectKey = tuple[str, str]  # (namespace, name) of a Service or an EndpointSlice
BackendKey = tuple[str, str, str, str]  # (namespace, service, port name, protocol)


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _service_ports(svc: Mapping[str, Any]) -> dict[tuple[str, int, str], ServicePort]:
    """What one Service adds to the index: ``(ClusterIP, port, protocol) → ServicePort``."""
    meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
    out: dict[tuple[str, int, str], ServicePort] = {}
    ips = list(spec.get("clusterIPs") or []) or [spec.get("clusterIP") or ""]
    for ip in ips:
        if not ip or ip == "None":
            continue  # headless: clients reach pods directly
        for port in spec.get("ports") or []:
            protocol = port.get("protocol") or "TCP"
            out[(ip, int(port["port"]), protocol)] = ServicePort(
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                port=int(port["port"]),
                protocol=protocol,
                port_name=str(port.get("name") or ""),
            )
    return out


@dataclass(frozen=True)
class _SliceShare:
    """What one EndpointSlice adds: ready backends per Service port, pods by address."""

    backends: dict[BackendKey, list[Backend]]
    pods: dict[str, tuple[str, str]]


def _slice_share(eps: Mapping[str, Any]) -> _SliceShare:
    meta = eps.get("metadata") or {}
    share = _SliceShare(backends={}, pods={})
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service:
        return share
    namespace = str(meta.get("namespace", ""))
    for endpoint in eps.get("endpoints") or []:
        ref = endpoint.get("targetRef") or {}
        pod = (str(ref.get("namespace") or namespace), str(ref.get("name") or ""))
        if ref.get("kind") != "Pod":
            pod = ("", "")
        ready = (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint.get("addresses") or []:
            if pod[1]:
                share.pods[address] = pod
            if ready is False:
                continue  # None means ready (the field is optional)
            for port in eps.get("ports") or []:
                if port.get("port") is None:
                    continue
                key = (namespace, service, str(port.get("name") or ""),
                       port.get("protocol") or "TCP")  # fmt: skip
                share.backends.setdefault(key, []).append(
                    Backend(ip=address, port=int(port["port"]), namespace=pod[0], pod=pod[1])
                )
    return share


class ServiceIndex:
    """Lookups over the cluster's Services and EndpointSlices, kept current by watch events.

    Built from a listing (or from dicts, in tests), then changed one object at
    a time (:meth:`apply_service`, :meth:`apply_slice`) or replaced by a new
    listing of one kind (:meth:`replace_services`, :meth:`replace_slices`).
    Each object's share is kept apart, so a deleted or changed object takes
    exactly its own entries with it. Not thread-safe: the agent changes and
    reads it on its data-plane worker only.
    """

    def __init__(
        self,
        *,
        services: Iterable[Mapping[str, Any]] = (),
        slices: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._services: dict[ObjectKey, dict[tuple[str, int, str], ServicePort]] = {}
        self._slices: dict[ObjectKey, _SliceShare] = {}
        self._by_vip: dict[tuple[str, int, str], ServicePort] = {}
        self._backends: dict[BackendKey, dict[ObjectKey, list[Backend]]] = {}
        self._pod_at: dict[str, dict[ObjectKey, tuple[str, str]]] = {}
        self.replace_services(objs=services)
        self.replace_slices(objs=slices)

    # changes ---------------------------------------------------------------

    def apply_service(self, *, event_type: str, obj: Mapping[str, Any]) -> None:
        """Fold one Service watch event in (ADDED, MODIFIED or DELETED)."""
        key = object_key(obj)
        self._drop_service(key)
        if event_type != "DELETED":
            self._put_service(key, _service_ports(obj))

    def apply_slice(self, *, event_type: str, obj: Mapping[str, Any]) -> None:
        """Fold one EndpointSlice watch event in (ADDED, MODIFIED or DELETED)."""
        key = object_key(obj)
        self._drop_slice(key)
        if event_type != "DELETED":
            self._put_slice(key, _slice_share(obj))

    def replace_services(self, *, objs: Iterable[Mapping[str, Any]]) -> None:
        """Adopt a full listing of Services (what it lacks is gone)."""
        self._services.clear()
        self._by_vip.clear()
        for obj in objs:
            self._put_service(object_key(obj), _service_ports(obj))

    def replace_slices(self, *, objs: Iterable[Mapping[str, Any]]) -> None:
        """Adopt a full listing of EndpointSlices (what it lacks is gone)."""
        self._slices.clear()
        self._backends.clear()
        self._pod_at.clear()
        for obj in objs:
            self._put_slice(object_key(obj), _slice_share(obj))

    def _put_service(self, key: ObjectKey, ports: dict[tuple[str, int, str], ServicePort]) -> None:
        self._services[key] = ports
        self._by_vip.update(ports)

    def _drop_service(self, key: ObjectKey) -> None:
        for vip, port in self._services.pop(key, {}).items():
            if self._by_vip.get(vip) == port:  # another Service may hold it by now
                del self._by_vip[vip]

    def _put_slice(self, key: ObjectKey, share: _SliceShare) -> None:
        self._slices[key] = share
        for backend_key, backends in share.backends.items():
            self._backends.setdefault(backend_key, {})[key] = backends
        for address, pod in share.pods.items():
            self._pod_at.setdefault(address, {})[key] = pod

    def _drop_slice(self, key: ObjectKey) -> None:
        share = self._slices.pop(key, None)
        if share is None:
            return
        for backend_key in share.backends:
            by_slice = self._backends.get(backend_key, {})
            by_slice.pop(key, None)
            if not by_slice:
                self._backends.pop(backend_key, None)
        for address in share.pods:
            owners = self._pod_at.get(address, {})
            owners.pop(key, None)
            if not owners:
                self._pod_at.pop(address, None)

    # lookups ---------------------------------------------------------------

    def service_at(self, *, ip: str, port: int, protocol: str) -> ServicePort | None:
        """The Service whose ClusterIP:port this is, if any."""
        return self._by_vip.get((ip, port, protocol))

    def backends(self, *, service: ServicePort) -> list[Backend]:
        """The ready endpoints behind one Service port."""
        key = (service.namespace, service.name, service.port_name, service.protocol)
        found = {b for backends in self._backends.get(key, {}).values() for b in backends}
        return sorted(found, key=lambda b: (b.ip, b.port))

    def backend(self, *, ip: str, port: int) -> Backend:
        """A backend address named by its EndpointSlice's targetRef where known."""
        owners = self._pod_at.get(ip)
        namespace, pod = min(owners.values()) if owners else ("", "")
        return Backend(ip=ip, port=port, namespace=namespace, pod=pod)

    def __len__(self) -> int:
        return len(self._by_vip)


class ServiceAttributor:
    """Names the Service (and backend) of flows seen on a client pod's veth.

    The backend comes from the node's conntrack entry of the connection (the
    DNAT it made), else from the Service itself when it has exactly one ready
    endpoint; otherwise the flow names the Service only. Results are cached
    per (client, ClusterIP) connection until the index changes; conntrack is
    asked at most ``max_lookups`` times per drain.
    """

    def __init__(self, *, conntrack: Conntrack | None, max_lookups: int = 512) -> None:
        self.index = ServiceIndex()
        self._conntrack = conntrack
        self._max_lookups = max_lookups
        self._lookups = 0
        self._cache: dict[tuple[str, int, str, int, str], tuple[str, Backend | None]] = {}

    def set_index(self, *, index: ServiceIndex) -> None:
        self.index = index
        self._cache.clear()

    def changed(self) -> None:
        """The index changed in place: forget what was named from it."""
        self._cache.clear()

    def begin_drain(self) -> None:
        self._lookups = 0

    def attribute(
        self, *, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: str
    ) -> tuple[str, Backend | None] | None:
        """("ns/name:port", backend or None) when one end is a ClusterIP:port, else None."""
        if not len(self.index):
            return None
        service = self.index.service_at(ip=dst_ip, port=dst_port, protocol=protocol)
        client, vip = (src_ip, src_port), (dst_ip, dst_port)
        if service is None:  # a reply, already reverse-NATed: ClusterIP → client
            service = self.index.service_at(ip=src_ip, port=src_port, protocol=protocol)
            client, vip = (dst_ip, dst_port), (src_ip, src_port)
        if service is None:
            return None
        key = (*client, *vip, protocol)
        cached = self._cache.get(key)
        if cached is not None and cached[1] is not None:
            return cached
        backend = None
        if self._conntrack is not None and self._lookups < self._max_lookups:
            self._lookups += 1
            found = self._conntrack.lookup(
                src_ip=client[0], src_port=client[1], dst_ip=vip[0], dst_port=vip[1],
                protocol=protocol,
            )  # fmt: skip
            if found is not None:
                backend = self.index.backend(ip=found.ip, port=found.port)
        if backend is None:
            only = self.index.backends(service=service)
            backend = only[0] if len(only) == 1 else None
        result = (service.label, backend)
        if len(self._cache) > 65536:
            self._cache.clear()
        self._cache[key] = result
        return result
