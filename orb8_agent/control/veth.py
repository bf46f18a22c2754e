"""Find the host side of a pod's veth pair.

The pod's network namespace is reached through any process of one of its
containers. Inside it, the veth end (usually ``eth0``) names its peer's
ifindex in ``IFLA_LINK``; that index is the host-side interface. This works
the same for bridge-based CNIs and routed ones, and needs no knowledge of
the CNI's naming scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute, NetlinkError

from orb8_common.errors import Orb8Error


class VethNotFoundError(Orb8Error):
    """The pod has no veth whose peer lives in the host namespace."""

    retryable = True


@dataclass(frozen=True)
class HostVeth:
    ifindex: int
    name: str


def host_veth_of(*, pid: int) -> HostVeth:
    """The host-side veth of the network namespace that ``pid`` lives in."""
    netns_path = f"/proc/{pid}/ns/net"
    try:
        with IPRoute(netns=netns_path, flags=0) as pod_netlink:
            peers = [
                link.get_attr("IFLA_LINK")
                for link in pod_netlink.get_links()
                if link.get_attr("IFLA_LINK_NETNSID") is not None
                and link.get_attr("IFLA_LINK") is not None
            ]
    except (OSError, NetlinkError) as err:
        raise VethNotFoundError(f"cannot enter {netns_path}: {err}") from err
    if not peers:
        raise VethNotFoundError(f"no veth with a peer outside the namespace of pid {pid}")
    with IPRoute() as host_netlink:
        for index in peers:
            try:
                links = host_netlink.get_links(index)
            except NetlinkError:
                continue  # the peer is in some other namespace
            if links:
                return HostVeth(ifindex=index, name=str(links[0].get_attr("IFLA_IFNAME")))
    raise VethNotFoundError(f"peer ifindex {peers} of pid {pid} not found in the host namespace")
