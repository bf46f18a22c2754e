"""``orb8 trace network --kernel-port/--kernel-cidr``: a TraceSession flow filter for one run.

The flags build the same :class:`~orb8_common.models.FlowFilter` as
``spec.probes.network.filter`` and go through the same compile path
(``orb8_agent.dataplane.flowfilter`` into the flow probe's filter maps), so
a packet the kernel leaves out here is one a session with that filter would
not count either. The peer a CIDR is judged on is the pod's peer as seen at
its host veth (the destination of what enters the veth's tc ingress, the
source of what leaves by egress); on an uplink that would be this machine's
own address, so ``--kernel-cidr`` is refused on interfaces that are not veths
(docs/cli.md, "Kernel filters").
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from orb8_agent.dataplane.flowfilter import InterfaceFilter, compile_filter
from orb8_cli.filters import parse_port
from orb8_common.errors import UsageError
from orb8_common.models import FlowFilter

_FLAGS = {"ports": "--kernel-port", "cidrs": "--kernel-cidr"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "kernel filter (what the probe counts at all, as spec.probes.network.filter)"
    )
    group.add_argument(
        "--kernel-port", action="append", default=[], metavar="PORT",
        help="count only TCP/UDP packets with this source or destination port "
        "(repeatable, up to 16)",
    )  # fmt: skip
    group.add_argument(
        "--kernel-cidr", action="append", default=[], metavar="CIDR",
        help="count only packets whose peer, the end beyond the traced veth's pod, lies in "
        "this canonical CIDR (repeatable, up to 16; veth interfaces only)",
    )  # fmt: skip


def flow_filter(*, ports: Sequence[str], cidrs: Sequence[str]) -> FlowFilter:
    """The filter the flags ask for; one-line usage errors, naming the flag."""
    try:
        return FlowFilter.model_validate(
            {"ports": [parse_port(p) for p in ports], "cidrs": list(cidrs)}
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "ports"
        given = first.get("input")
        value = f" {given!r}" if isinstance(given, str) else ""
        message = first["msg"].removeprefix("Value error, ")
        raise UsageError(f"{_FLAGS.get(field, '--kernel-port')}{value}: {message}") from None


def is_veth(*, interface: str) -> bool:
    """Whether the interface is one end of a veth pair (iproute2's link kind)."""
    done = subprocess.run(
        ["ip", "-d", "-j", "link", "show", "dev", interface],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return False
    links = json.loads(done.stdout or "[]")
    return bool(links) and links[0].get("linkinfo", {}).get("info_kind") == "veth"


def compiled(
    *, wanted: FlowFilter, interfaces: Sequence[str], pod_relative: bool,
    veth: Callable[[str], bool] | None = None,
) -> InterfaceFilter | None:  # fmt: skip
    """The kernel filter for every traced interface; None when the flags ask for none.

    ``pod_relative``: the one interface is a pod's host veth (``trace --pod``).
    """
    if wanted.cidrs and not pod_relative:
        check = veth or (lambda name: is_veth(interface=name))
        others = [name for name in interfaces if not check(name)]
        if others:
            raise UsageError(
                f"--kernel-cidr judges the peer of a pod behind a veth; {', '.join(others)} "
                "is not a veth (use --kernel-port there)"
            )
    return compile_filter(filters=[wanted])
