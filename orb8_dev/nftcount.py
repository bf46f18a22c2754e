"""Named nftables counters on an interface's ingress hook: an oracle for flow tests.

The counters sit in a ``netdev`` table of the test's own network namespace,
so they count exactly the packets that arrive on that interface, per
class (``udp dport 5300``, ``ip daddr X``, ...). nft's byte count is
``skb->len`` at that hook, where the Ethernet header is already pulled: a
tc program on the same frames counts ``ETH_HLEN`` more bytes per packet.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator, Mapping

from orb8_dev import netns as nsutil

ETH_HLEN = 14
Reader = Callable[[], dict[str, tuple[int, int]]]  # name → (packets, bytes)


@contextlib.contextmanager
def ingress_counters(*, netns: str, interface: str, rules: Mapping[str, str]) -> Iterator[Reader]:
    """Count the packets each rule's match (nft syntax) takes, under the rule's name."""
    table = nsutil.unique("o8cnt")
    lines = [
        f"table netdev {table} {{",
        *(f"  counter {name} {{ }}" for name in rules),
        "  chain in {",
        f'    type filter hook ingress device "{interface}" priority 0; policy accept;',
        *(f"    {match} counter name {name}" for name, match in rules.items()),
        "  }",
        "}",
    ]
    _nft(netns=netns, script="\n".join(lines) + "\n")

    def read() -> dict[str, tuple[int, int]]:
        out = nsutil.run(["nft", "-j", "list", "counters", "table", "netdev", table], netns=netns)
        found: dict[str, tuple[int, int]] = {}
        for item in json.loads(out)["nftables"]:
            counter = item.get("counter")
            if counter:
                found[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
        return found

    try:
        yield read
    finally:
        with contextlib.suppress(Exception):
            nsutil.run(["nft", "delete", "table", "netdev", table], netns=netns)


def _nft(*, netns: str, script: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=script, text=True, capture_output=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"nft -f failed: {proc.stderr.strip()}\n{script}")
