"""ClusterIP attribution from Services and EndpointSlices (no cluster: the objects as
the API returns them, camelCase dicts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orb8_agent.control.flows import FlowStats
from orb8_agent.control.report import PodName, flow_row
from orb8_agent.control.services import Backend, ServiceAttributor, ServiceIndex
from orb8_common.models import to_wire


def _service(name: str, ip: str, *ports: tuple[int, str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": name},
        "spec": {
            "clusterIP": ip, "clusterIPs": [ip] if ip != "None" else ["None"],
            "ports": [{"port": p, "name": n, "protocol": proto} for p, n, proto in ports],
        },
    }  # fmt: skip


def _slice(service: str, *endpoints: tuple[str, str, bool | None], port: int = 8080,
           name: str = "http") -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"namespace": "shop", "name": f"{service}-x",
                     "labels": {"kubernetes.io/service-name": service}},
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready},
             "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}}
            for ip, pod, ready in endpoints
        ],
    }  # fmt: skip


@dataclass(frozen=True)
class _Found:
    ip: str
    port: int


class FakeConntrack:
    """Plays the node's conntrack table: original tuple → reply source."""

    def __init__(self, table: dict[tuple[str, int, str, int], tuple[str, int]]) -> None:
        self.table = table
        self.calls = 0

    def lookup(
        self, *, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: str
    ) -> _Found | None:
        self.calls += 1
        hit = self.table.get((src_ip, src_port, dst_ip, dst_port))
        return _Found(*hit) if hit else None


INDEX = ServiceIndex(
    services=[
        _service("cart", "10.96.0.10", (80, "http", "TCP")),
        _service("web", "10.96.0.20", (80, "http", "TCP")),
        _service("headless", "None", (80, "http", "TCP")),
    ],
    slices=[
        _slice("cart", ("10.244.0.7", "cart-1", None), ("10.244.0.9", "cart-2", False)),
        _slice("web", ("10.244.0.11", "web-1", True), ("10.244.0.12", "web-2", True)),
    ],
)


def test_index_maps_cluster_ip_ports_and_ready_backends() -> None:
    cart = INDEX.service_at(ip="10.96.0.10", port=80, protocol="TCP")
    assert cart is not None and cart.label == "shop/cart:80"
    assert INDEX.service_at(ip="10.96.0.10", port=80, protocol="UDP") is None
    assert INDEX.service_at(ip="10.96.0.10", port=81, protocol="TCP") is None
    # not ready endpoints are no backends; a missing condition means ready
    assert INDEX.backends(service=cart) == [Backend("10.244.0.7", 8080, "shop", "cart-1")]
    assert len(INDEX) == 2  # the headless Service has no ClusterIP


def test_single_backend_is_known_without_conntrack() -> None:
    attributor = ServiceAttributor(conntrack=FakeConntrack({}))
    attributor.set_index(index=INDEX)
    out = attributor.attribute(
        src_ip="10.244.0.5", src_port=40000, dst_ip="10.96.0.10", dst_port=80, protocol="TCP"
    )
    assert out == ("shop/cart:80", Backend("10.244.0.7", 8080, "shop", "cart-1"))
    # the reply, reverse-NATed on the client's veth: ClusterIP → client
    back = attributor.attribute(
        src_ip="10.96.0.10", src_port=80, dst_ip="10.244.0.5", dst_port=40000, protocol="TCP"
    )
    assert back == out


def test_conntrack_names_one_of_several_backends_and_is_asked_once() -> None:
    conntrack = FakeConntrack({("10.244.0.5", 40001, "10.96.0.20", 80): ("10.244.0.12", 8080)})
    attributor = ServiceAttributor(conntrack=conntrack)
    attributor.set_index(index=INDEX)
    for _ in range(3):
        out = attributor.attribute(
            src_ip="10.244.0.5", src_port=40001, dst_ip="10.96.0.20", dst_port=80, protocol="TCP"
        )
        assert out == ("shop/web:80", Backend("10.244.0.12", 8080, "shop", "web-2"))
    assert conntrack.calls == 1
    # no entry (expired): two backends, so only the Service is named
    gone = attributor.attribute(
        src_ip="10.244.0.5", src_port=40002, dst_ip="10.96.0.20", dst_port=80, protocol="TCP"
    )
    assert gone == ("shop/web:80", None)


def test_lookups_per_drain_are_bounded_and_other_flows_untouched() -> None:
    conntrack = FakeConntrack({})
    attributor = ServiceAttributor(conntrack=conntrack, max_lookups=2)
    attributor.set_index(index=INDEX)
    assert attributor.attribute(
        src_ip="10.244.0.5", src_port=1, dst_ip="10.244.0.11", dst_port=8080, protocol="TCP"
    ) is None  # fmt: skip
    for port in range(5):
        attributor.attribute(
            src_ip="10.244.0.5", src_port=port, dst_ip="10.96.0.20", dst_port=80, protocol="TCP"
        )
    assert conntrack.calls == 2
    attributor.begin_drain()
    attributor.attribute(
        src_ip="10.244.0.5", src_port=9, dst_ip="10.96.0.20", dst_port=80, protocol="TCP"
    )
    assert conntrack.calls == 3


def test_flow_row_carries_service_and_backend_named_by_local_pods() -> None:
    stats = FlowStats(100, 2, 1.0, 2.0, 0, service="shop/web:80",
                      backend=Backend("10.244.0.12", 8080))  # fmt: skip
    row = flow_row(
        key=("10.244.0.5", 40001, "10.96.0.20", 80, "TCP"), stats=stats, node="n1",
        pods_by_ip={"10.244.0.12": PodName("shop", "web-2"),
                    "10.244.0.5": PodName("shop", "client")},
    )  # fmt: skip
    assert row.service == "shop/web:80"
    assert row.destination.ip == "10.96.0.20" and row.destination.pod == ""
    assert row.backend is not None
    assert (row.backend.namespace, row.backend.pod, row.backend.port) == ("shop", "web-2", 8080)
    wire = to_wire(row)
    assert wire["service"] == "shop/web:80" and wire["backend"]["ip"] == "10.244.0.12"


def test_watch_events_change_the_index_in_place_object_by_object() -> None:
    """What the Service and EndpointSlice watches do to the index: each object's share comes
    and goes with it, and a listing of one kind replaces only that kind."""
    index = ServiceIndex()
    index.apply_service(event_type="ADDED", obj=_service("cart", "10.96.0.10", (80, "http", "TCP")))
    cart = index.service_at(ip="10.96.0.10", port=80, protocol="TCP")
    assert cart is not None and index.backends(service=cart) == []
    one = _slice("cart", ("10.244.0.7", "cart-1", True))
    two = {**_slice("cart", ("10.244.0.8", "cart-2", True)),
           "metadata": {**one["metadata"], "name": "cart-y"}}  # fmt: skip
    index.apply_slice(event_type="ADDED", obj=one)
    index.apply_slice(event_type="ADDED", obj=two)
    assert [b.pod for b in index.backends(service=cart)] == ["cart-1", "cart-2"]
    # a slice changes: its old endpoints go, the other slice's stay
    index.apply_slice(event_type="MODIFIED", obj=_slice("cart", ("10.244.0.9", "cart-3", True)))
    assert [b.pod for b in index.backends(service=cart)] == ["cart-2", "cart-3"]
    assert index.backend(ip="10.244.0.7", port=8080).pod == ""
    index.apply_slice(event_type="DELETED", obj=two)
    assert [b.pod for b in index.backends(service=cart)] == ["cart-3"]
    # the Service moves to another port, then goes
    index.apply_service(
        event_type="MODIFIED", obj=_service("cart", "10.96.0.10", (81, "http", "TCP"))
    )
    assert index.service_at(ip="10.96.0.10", port=80, protocol="TCP") is None
    assert index.service_at(ip="10.96.0.10", port=81, protocol="TCP") is not None
    index.apply_service(event_type="DELETED", obj=_service("cart", "10.96.0.10"))
    assert len(index) == 0
    # a relist of Services keeps the slices, and vice versa
    index.replace_services(objs=[_service("cart", "10.96.0.10", (80, "http", "TCP"))])
    assert [b.pod for b in index.backends(service=cart)] == ["cart-3"]
    index.replace_slices(objs=[])
    assert index.backends(service=cart) == [] and len(index) == 1


def test_a_changed_index_names_flows_afresh() -> None:
    """A Service added after the first flows names the next ones; a backend that moved is
    not served from the per-connection cache."""
    attributor = ServiceAttributor(conntrack=None)
    attributor.index.apply_service(
        event_type="ADDED", obj=_service("other", "10.96.0.40", (80, "http", "TCP"))
    )

    def flow() -> tuple[str, Backend | None] | None:
        return attributor.attribute(
            src_ip="10.244.0.5", src_port=4000, dst_ip="10.96.0.30", dst_port=80, protocol="TCP"
        )

    assert flow() is None
    attributor.index.apply_service(
        event_type="ADDED", obj=_service("late", "10.96.0.30", (80, "http", "TCP"))
    )
    attributor.index.apply_slice(
        event_type="ADDED", obj=_slice("late", ("10.244.0.20", "late-1", True))
    )
    attributor.changed()
    assert flow() == ("shop/late:80", Backend("10.244.0.20", 8080, "shop", "late-1"))
    attributor.index.apply_slice(
        event_type="MODIFIED", obj=_slice("late", ("10.244.0.21", "late-2", True))
    )
    attributor.changed()
    assert flow() == ("shop/late:80", Backend("10.244.0.21", 8080, "shop", "late-2"))
