"""The operator names flow ends that agents could not, from its pod index."""

from __future__ import annotations

from orb8_operator.status import name_endpoints
from tests.operator.factories import flow, pod


def test_unnamed_ends_get_the_pod_that_owns_the_ip() -> None:
    pods = [
        pod("cart", namespace="shop", ip="10.244.2.7"),
        pod("node-exporter", namespace="monitoring", ip="192.0.2.10", host_network=True),
    ]
    flows = [
        flow("10.244.1.5", "10.244.2.7", src_pod="checkout"),  # agent named only the sender
        flow("10.244.1.5", "192.0.2.10", src_pod="checkout"),  # a hostNetwork pod's node IP
        flow("10.244.1.5", "198.51.100.1", src_pod="checkout"),  # outside the cluster
    ]
    to_cart, to_host, outside = name_endpoints(flows=flows, pods=pods)
    assert (to_cart.destination.namespace, to_cart.destination.pod) == ("shop", "cart")
    assert (to_cart.source.namespace, to_cart.source.pod) == ("shop", "checkout")
    assert to_host.destination.pod == "" and to_host.destination.ip == "192.0.2.10"
    assert outside.destination.pod == ""


def test_names_given_by_agents_are_kept() -> None:
    pods = [pod("impostor", namespace="other", ip="10.244.1.5")]
    (only,) = name_endpoints(flows=[flow("10.244.1.5", "10.244.2.7", src_pod="checkout")],
                             pods=pods)  # fmt: skip
    assert (only.source.namespace, only.source.pod) == ("shop", "checkout")
