"""Find the host side of a pod's veth pair.

The pod's network namespace is reached through any process of one of its
containers. Inside it, the veth end (usually ``eth0``) names its peer's
ifindex in ``IFLA_LINK``; that index is the host-side interface. This works
the same for bridge-based CNIs and routed ones, and needs no knowledge of
the CNI's naming scheme.

The namespace is entered by a short-lived thread (setns(2) moves only the
calling thread), never by forking: a forked child would share the agent's
asyncio signal wake-up pipe.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

from pyroute2 import IPRoute, NetlinkError

from orb8_common.errors import Orb8Error

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class VethNotFoundError(Orb8Error):
    """The pod has no veth whose peer lives in the host namespace."""

    retryable = True


@dataclass(frozen=True)
class HostVeth:
    ifindex: int
    name: str


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _peer_indexes(*, netns_path: str) -> list[int]:
    """Peer ifindexes of the veths inside ``netns_path`` whose other end is elsewhere."""
    found: list[int] = []
    failure: list[BaseException] = []

    def inside() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(netns_path, os.O_RDONLY)
                try:
                    _setns(target)
                    try:
                        with IPRoute() as netlink:
                            found.extend(
                                link.get_attr("IFLA_LINK")
                                for link in netlink.get_links()
                                if link.get_attr("IFLA_LINK_NETNSID") is not None
                                and link.get_attr("IFLA_LINK") is not None
                            )
                    finally:
                        _setns(own)
                finally:
                    os.close(target)
            finally:
                os.close(own)
        except (OSError, NetlinkError) as err:
            failure.append(err)

    worker = threading.Thread(target=inside, name="orb8-netns", daemon=True)
    worker.start()
    worker.join()
    if failure:
        raise VethNotFoundError(f"cannot read links in {netns_path}: {failure[0]}")
    return found


def host_veth_of(*, pid: int) -> HostVeth:
    """The host-side veth of the network namespace that ``pid`` lives in."""
    peers = _peer_indexes(netns_path=f"/proc/{pid}/ns/net")
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
