"""Addresses and interfaces of a local node, one set per running node.

A node needs an address that is not loopback (the apiserver refuses to proxy
to a node whose address is 127.0.0.1, and a kubelet on 127.0.0.1 is not what
a production node looks like). Each local node gets an index and with it:

* an interface ``orb8-n<i>`` holding the node IP ``100.65.<i>.1`` and
  the ``kubernetes`` Service IP ``100.64.<i>.1`` (the first address of the
  Service range ``100.64.<i>.0/24``); the apiserver listens there on 443,
  so pods reach it at the address their in-cluster config names without a
  kube-proxy;
* a CNI bridge ``orb8-b<i>`` (made by the bridge plugin on the first pod)
  for the pod range ``100.66.<i>.0/24``.

The node interface is a Linux bridge with no ports: this kernel is built
without the dummy driver (``ip link add … type dummy``: "Unknown device
type"), and an empty bridge holds local addresses just as well.

100.64.0.0/10 is the shared address space, which nothing else on a test
machine uses. The index is the lowest one whose dummy interface does not
exist yet, taken under a lock, so concurrent nodes never share addresses.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error

LOCK_DIR = Path("/run/orb8-dev")
MAX_NODES = 64


class NodeNetworkError(Orb8Error):
    """The node's interfaces could not be set up or removed."""


@dataclass(frozen=True)
class NodeNetwork:
    index: int

    @property
    def node_name(self) -> str:
        """Unique per running node: agents keep host state by node name (/run/orb8/agent-<node>)."""
        return f"orb8-node-{self.index}"

    @property
    def dummy(self) -> str:
        return f"orb8-n{self.index}"

    @property
    def bridge(self) -> str:
        return f"orb8-b{self.index}"

    @property
    def cni_network(self) -> str:
        return f"orb8-{self.index}"

    @property
    def node_ip(self) -> str:
        return f"100.65.{self.index}.1"

    @property
    def service_cidr(self) -> str:
        return f"100.64.{self.index}.0/24"

    @property
    def service_ip(self) -> str:
        return f"100.64.{self.index}.1"

    @property
    def pod_subnet(self) -> str:
        return f"100.66.{self.index}.0/24"

    @property
    def cgroup_parent(self) -> str:
        """The kubelet's cgroupRoot: pods live in ``/orb8-<i>/kubepods/…``."""
        return f"/orb8-{self.index}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NodeNetworkError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """One host-wide lock for node set-up and teardown steps that share state."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with (LOCK_DIR / "node.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def allocate() -> NodeNetwork:
    """Take the lowest free index and create its node interface with both addresses."""
    with host_lock():
        for index in range(MAX_NODES):
            net = NodeNetwork(index=index)
            if link_exists(net.dummy) or link_exists(net.bridge):
                continue
            _ip("link", "add", net.dummy, "type", "bridge")
            try:
                _ip("addr", "add", f"{net.node_ip}/32", "dev", net.dummy)
                _ip("addr", "add", f"{net.service_ip}/32", "dev", net.dummy)
                _ip("link", "set", net.dummy, "up")
            except NodeNetworkError:
                _ip("link", "del", net.dummy, check=False)
                raise
            return net
    raise NodeNetworkError(f"all {MAX_NODES} local node networks are in use")


def release(net: NodeNetwork) -> None:
    """Remove the node interface and the CNI bridge (pods' veths are gone by now)."""
    for name in (net.bridge, net.dummy):
        if link_exists(name):
            _ip("link", "del", name)


def bridge_ports(net: NodeNetwork) -> list[str]:
    """Interfaces enslaved to the node's bridge (the pods' host-side veths)."""
    brif = Path(f"/sys/class/net/{net.bridge}/brif")
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []
