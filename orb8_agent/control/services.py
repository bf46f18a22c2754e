"""ClusterIP Services as the agent sees them: virtual IP:port → Service, and its backends.

Built from one list of Services and one of EndpointSlices (``refresh_services``
in the runner, at most every ``SERVICE_REFRESH_S`` while trace sessions are
served). Pure data: tests build it from dicts.

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
SERVICE_REFRESH_S = 30.0


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


class ServiceIndex:
    """Lookups over one snapshot of the cluster's Services and EndpointSlices."""

    def __init__(
        self, *, services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
    ) -> None:
        self._by_vip: dict[tuple[str, int, str], ServicePort] = {}
        self._backends: dict[tuple[str, str, str, str], list[Backend]] = {}
        self._pod_at: dict[str, tuple[str, str]] = {}
        for svc in services:
            meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
            ips = list(spec.get("clusterIPs") or []) or [spec.get("clusterIP") or ""]
            for ip in ips:
                if not ip or ip == "None":
                    continue  # headless: clients reach pods directly
                for port in spec.get("ports") or []:
                    protocol = port.get("protocol") or "TCP"
                    self._by_vip[(ip, int(port["port"]), protocol)] = ServicePort(
                        namespace=str(meta.get("namespace", "")),
                        name=str(meta.get("name", "")),
                        port=int(port["port"]),
                        protocol=protocol,
                        port_name=str(port.get("name") or ""),
                    )
        for eps in slices:
            meta = eps.get("metadata") or {}
            service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if not service:
                continue
            namespace = str(meta.get("namespace", ""))
            for endpoint in eps.get("endpoints") or []:
                ref = endpoint.get("targetRef") or {}
                pod = (str(ref.get("namespace") or namespace), str(ref.get("name") or ""))
                if ref.get("kind") != "Pod":
                    pod = ("", "")
                ready = (endpoint.get("conditions") or {}).get("ready")
                for address in endpoint.get("addresses") or []:
                    if pod[1]:
                        self._pod_at[address] = pod
                    if ready is False:
                        continue  # None means ready (the field is optional)
                    for port in eps.get("ports") or []:
                        if port.get("port") is None:
                            continue
                        key = (namespace, service, str(port.get("name") or ""),
                               port.get("protocol") or "TCP")  # fmt: skip
                        self._backends.setdefault(key, []).append(
                            Backend(
                                ip=address, port=int(port["port"]), namespace=pod[0], pod=pod[1]
                            )
                        )

    def service_at(self, *, ip: str, port: int, protocol: str) -> ServicePort | None:
        """The Service whose ClusterIP:port this is, if any."""
        return self._by_vip.get((ip, port, protocol))

    def backends(self, *, service: ServicePort) -> list[Backend]:
        """The ready endpoints behind one Service port."""
        key = (service.namespace, service.name, service.port_name, service.protocol)
        return sorted(self._backends.get(key, ()), key=lambda b: (b.ip, b.port))

    def backend(self, *, ip: str, port: int) -> Backend:
        """A backend address named by its EndpointSlice's targetRef where known."""
        namespace, pod = self._pod_at.get(ip, ("", ""))
        return Backend(ip=ip, port=port, namespace=namespace, pod=pod)

    def __len__(self) -> int:
        return len(self._by_vip)


EMPTY = ServiceIndex(services=(), slices=())


class ServiceAttributor:
    """Names the Service (and backend) of flows seen on a client pod's veth.

    The backend comes from the node's conntrack entry of the connection (the
    DNAT it made), else from the Service itself when it has exactly one ready
    endpoint; otherwise the flow names the Service only. Results are cached
    per (client, ClusterIP) connection until the index changes; conntrack is
    asked at most ``max_lookups`` times per drain.
    """

    def __init__(self, *, conntrack: Conntrack | None, max_lookups: int = 512) -> None:
        self.index = EMPTY
        self._conntrack = conntrack
        self._max_lookups = max_lookups
        self._lookups = 0
        self._cache: dict[tuple[str, int, str, int, str], tuple[str, Backend | None]] = {}

    def set_index(self, *, index: ServiceIndex) -> None:
        self.index = index
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
