"""Network namespaces and veth pairs for tests, always cleaned up.

Names are unique per call (a short random suffix) so parallel tests and a
crashed earlier run never collide. ``enter()`` switches only the calling
thread, which is what setns(2) does, and always switches back.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def unique(prefix: str) -> str:
    """A name that fits IFNAMSIZ (15 chars) when prefix is at most 8."""
    return f"{prefix}{secrets.token_hex(3)}"


def run(args: Sequence[str], *, netns: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", netns, *args]) if netns else list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the block (this thread only) inside network namespace ``name``."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(orig)
    finally:
        os.close(target)
        os.close(orig)


@contextlib.contextmanager
def namespace(prefix: str = "o8t") -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted afterwards."""
    name = unique(prefix)
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "link", "set", "lo", "up"], netns=name)
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


@dataclass(frozen=True)
class VethPair:
    """Two namespaces joined by a veth pair, each end addressed v4 and v6."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    ip4_a: str
    ip4_b: str
    ip6_a: str
    ip6_b: str

    def counters(self, *, side: str) -> dict[str, int]:
        """rx/tx bytes and packets of one end, as the kernel counts them."""
        ns, ifname = (self.ns_a, self.if_a) if side == "a" else (self.ns_b, self.if_b)
        return link_counters(netns=ns, interface=ifname)


def link_counters(*, netns: str | None, interface: str) -> dict[str, int]:
    """rx/tx bytes and packets from ``ip -s -j link``."""
    data = json.loads(run(["ip", "-s", "-j", "link", "show", "dev", interface], netns=netns))
    stats = data[0]["stats64"]
    return {
        "rx_bytes": int(stats["rx"]["bytes"]),
        "rx_packets": int(stats["rx"]["packets"]),
        "tx_bytes": int(stats["tx"]["bytes"]),
        "tx_packets": int(stats["tx"]["packets"]),
    }


@contextlib.contextmanager
def veth_pair(
    *, subnet: int | None = None, mtu: int = 1500, index_a: int | None = None
) -> Iterator[VethPair]:
    """Namespaces A and B joined by a veth pair with 10.<n>.<m>.1/.2 and fd00:: addresses.

    Addresses are private and live only inside the two namespaces, so test
    traffic never leaves them. ``index_a``: the ifindex side A gets (its
    namespace is new, so any free number works).
    """
    n = subnet if subnet is not None else secrets.randbelow(250) + 1
    m = secrets.randbelow(250) + 1
    with namespace("o8a") as ns_a, namespace("o8b") as ns_b:
        if_a, if_b = unique("o8va"), unique("o8vb")
        run(
            [
                "ip",
                "link",
                "add",
                if_a,
                "netns",
                ns_a,
                "mtu",
                str(mtu),
                *(["index", str(index_a)] if index_a is not None else []),
                "type",
                "veth",
                "peer",
                "name",
                if_b,
                "netns",
                ns_b,
                "mtu",
                str(mtu),
            ]
        )
        pair = VethPair(
            ns_a=ns_a,
            ns_b=ns_b,
            if_a=if_a,
            if_b=if_b,
            ip4_a=f"10.{n}.{m}.1",
            ip4_b=f"10.{n}.{m}.2",
            ip6_a=f"fd00:{n:x}:{m:x}::1",
            ip6_b=f"fd00:{n:x}:{m:x}::2",
        )
        for ns, ifname, ip4, ip6 in (
            (ns_a, if_a, pair.ip4_a, pair.ip6_a),
            (ns_b, if_b, pair.ip4_b, pair.ip6_b),
        ):
            run(["ip", "addr", "add", f"{ip4}/24", "dev", ifname], netns=ns)
            run(["ip", "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad"], netns=ns)
            run(["ip", "link", "set", ifname, "up"], netns=ns)
        yield pair


@dataclass(frozen=True)
class PodNet:
    """A pod-like namespace: ``eth0`` inside, its peer on the host side."""

    netns: str
    host_if: str
    pod_if: str
    ip: str | None


@contextlib.contextmanager
def pod_network(
    *, host_ns: str | None = None, ip: str | None = None, prefix: int = 24
) -> Iterator[PodNet]:
    """A namespace wired like a CNI pod: veth ``eth0`` in the pod, the peer
    (``o8h…``) up in ``host_ns`` (None: the caller's namespace), optional IP on
    eth0. Deleting the pod namespace removes both veth ends."""
    with namespace("o8pod") as pod:
        host_if = unique("o8h")
        tmp_if = unique("o8p")
        add = ["ip", "link", "add", host_if, "type", "veth", "peer", "name", tmp_if, "netns", pod]
        run(add, netns=host_ns)
        run(["ip", "link", "set", tmp_if, "name", "eth0"], netns=pod)
        if ip:
            run(["ip", "addr", "add", f"{ip}/{prefix}", "dev", "eth0"], netns=pod)
        run(["ip", "link", "set", "eth0", "up"], netns=pod)
        run(["ip", "link", "set", host_if, "up"], netns=host_ns)
        try:
            yield PodNet(netns=pod, host_if=host_if, pod_if="eth0", ip=ip)
        finally:
            run(["ip", "link", "del", host_if], netns=host_ns, check=False)
