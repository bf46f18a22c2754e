"""The agent's conntrack reader against the real kernel: a DNAT made by nftables in a
test namespace (what kube-proxy does on a node) is read back as the backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orb8_agent.control.conntrack import ConntrackReader
from orb8_dev import netns
from orb8_dev.traffic_ctl import start_sink

pytestmark = pytest.mark.kernel

VIP = "10.250.0.1"


def test_dnat_backend_is_read_from_conntrack(pair: netns.VethPair) -> None:
    # the namespace's own nat table: VIP:80 → the peer's :5501, as kube-proxy's DNAT
    ruleset = (
        "table ip orb8test {\n chain out {\n  type nat hook output priority -100\n"
        f"  ip daddr {VIP} tcp dport 80 dnat to {pair.ip4_b}:5501\n }}\n}}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", pair.ns_a, "nft", "-f", "-"], input=ruleset, text=True, check=True
    )
    netns.run(["ip", "route", "add", f"{VIP}/32", "dev", pair.if_a], netns=pair.ns_a)
    sink = start_sink(pair.ns_b, "tcp-sink", "--bind", pair.ip4_b, "--port", "5501")
    hold = (
        "import socket,sys\n"
        f"s=socket.create_connection(('{VIP}',80),timeout=30)\n"
        "print(s.getsockname()[1],flush=True)\nsys.stdin.read()\n"
    )
    client = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns_a, sys.executable, "-c", hold],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        port = int(client.stdout.readline())
        with netns.enter(pair.ns_a):
            reader = ConntrackReader()
            try:
                found = reader.lookup(
                    src_ip=pair.ip4_a, src_port=port, dst_ip=VIP, dst_port=80, protocol="TCP"
                )
                missing = reader.lookup(
                    src_ip=pair.ip4_a, src_port=port + 1, dst_ip=VIP, dst_port=80,
                    protocol="TCP",
                )  # fmt: skip
                # a connection that was not translated is no Service flow
                plain = reader.lookup(
                    src_ip=pair.ip4_b, src_port=5501, dst_ip=pair.ip4_a, dst_port=port,
                    protocol="TCP",
                )  # fmt: skip
            finally:
                reader.close()
        assert found is not None and (found.ip, found.port) == (pair.ip4_b, 5501)
        assert missing is None and plain is None
        assert reader.failures == 0
    finally:
        assert client.stdin is not None
        client.stdin.close()
        client.wait(timeout=30)
        sink.kill()
        sink.communicate()
