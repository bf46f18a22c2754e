"""Which network interfaces to trace by default."""

from __future__ import annotations

from pathlib import Path

ARPHRD_ETHER = 1
IFF_UP = 0x1


def default_interfaces(*, sysfs: Path = Path("/sys/class/net")) -> list[str]:
    """Every interface that is up, Ethernet-framed (veth, physical NICs,
    bridges) and not loopback. The flow probe parses Ethernet headers, so
    L3-only devices (tun, wireguard) are left out."""
    names: list[str] = []
    for dev in sorted(sysfs.iterdir()):
        try:
            kind = int((dev / "type").read_text())
            flags = int((dev / "flags").read_text(), 16)
        except (OSError, ValueError):
            continue
        if dev.name != "lo" and kind == ARPHRD_ETHER and flags & IFF_UP:
            names.append(dev.name)
    return names
