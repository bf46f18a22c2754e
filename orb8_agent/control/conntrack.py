"""Which backend a connection to a Service's virtual IP was DNATed to, from conntrack.

kube-proxy (iptables or nftables mode) rewrites the destination of a pod's
packet to a ClusterIP in the node's network namespace; netfilter's connection
tracking keeps both tuples: the original (client → ClusterIP:port) and the
reply (backend:targetPort → client). One netlink ``IPCTNL_MSG_CT_GET`` with
the original tuple returns that entry, so the agent (host network, with
CAP_NET_ADMIN) learns the backend of a flow it saw on the client's veth.

An entry lives as long as the connection (plus TIME_WAIT for TCP, about 30 s
after the last packet for UDP); a flow whose entry is gone by the time it is
reported gets no backend from here.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PROTOCOL_NUMBERS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP, "SCTP": 132}


@dataclass(frozen=True)
class Translated:
    """The reply tuple's source: where the connection really went."""

    ip: str
    port: int


def _ends(entry: Any, which: str) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """((src ip, port), (dst ip, port)) of one direction of a conntrack entry."""
    tup = entry.get_attr(which)
    if tup is None:
        return None
    ips, ports = tup.get_attr("CTA_TUPLE_IP"), tup.get_attr("CTA_TUPLE_PROTO")
    if ips is None or ports is None:
        return None
    src = ips.get_attr("CTA_IP_V4_SRC") or ips.get_attr("CTA_IP_V6_SRC")
    dst = ips.get_attr("CTA_IP_V4_DST") or ips.get_attr("CTA_IP_V6_DST")
    sport, dport = ports.get_attr("CTA_PROTO_SRC_PORT"), ports.get_attr("CTA_PROTO_DST_PORT")
    if None in (src, dst, sport, dport):
        return None
    return (str(src), int(sport)), (str(dst), int(dport))


class ConntrackReader:
    """One netlink socket to the kernel's conntrack table; ``lookup`` per flow."""

    def __init__(self) -> None:
        self._sock: Any = None
        self.failures = 0

    def _socket(self) -> Any:
        if self._sock is None:
            from pyroute2 import NFCTSocket  # imported late: only agents that look need it

            self._sock = NFCTSocket()
        return self._sock

    def lookup(
        self, *, src_ip: str, src_port: int, dst_ip: str, dst_port: int, protocol: str
    ) -> Translated | None:
        """The reply source of the entry whose original tuple is the given one, when
        that differs from the original destination (it was DNATed); else None."""
        proto = PROTOCOL_NUMBERS.get(protocol)
        if proto is None:
            return None
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        family = socket.AF_INET6 if ":" in src_ip else socket.AF_INET
        wanted = NFCTAttrTuple(
            family=family, saddr=src_ip, daddr=dst_ip, proto=proto, sport=src_port, dport=dst_port
        )
        try:
            entries = self._socket().entry("get", tuple_orig=wanted)
        except Exception as err:  # ENOENT (no such entry) and netlink errors alike
            if getattr(err, "code", None) != 2:
                self.failures += 1
                log.debug("conntrack lookup %s:%s → %s:%s: %s", src_ip, src_port, dst_ip,
                          dst_port, err)  # fmt: skip
            return None
        for entry in entries or ():
            # the kernel finds a tuple in either direction: only the entry whose
            # original direction is the one asked about counts
            if _ends(entry, "CTA_TUPLE_ORIG") != ((src_ip, src_port), (dst_ip, dst_port)):
                continue
            reply = _ends(entry, "CTA_TUPLE_REPLY")
            if reply is None:
                continue
            source = reply[0]
            if source == (dst_ip, dst_port):
                return None  # not translated
            return Translated(ip=source[0], port=source[1])
        return None

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
