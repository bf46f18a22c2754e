"""Row filters shared by ``orb8 get``, ``orb8 top`` and ``orb8 trace``.

Every row kind (a session's flows, alerts, DNS names; a local trace's flows)
describes each row as a :class:`RowView`: the ends it involves, its protocol,
and its direction when the row itself knows it. One :class:`RowFilter`
matches any view, so the same flags mean the same thing everywhere:

* ``--pod [NS/]NAME`` and ``--pod-namespace NS`` keep rows with an end in a
  matching pod (shell-style wildcards: ``--pod 'shop/checkout-*'``);
* ``--protocol``: TCP, UDP, ICMP or ICMPv6 (any case);
* ``--port N``: either end's port;
* ``--direction ingress|egress``, relative to the pod: a row's own direction
  when it has one (a local trace), otherwise egress keeps rows whose source
  is a matching pod (any named pod when no pod filter is given) and ingress
  those whose destination is.

Bad values are usage errors with one line of explanation.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from orb8_common.errors import UsageError

_T = TypeVar("_T")
PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "ICMPv6"}
DIRECTIONS = ("ingress", "egress")
# The names of the filters, as RowKind.filters lists those that apply.
POD, POD_NAMESPACE, PROTOCOL, PORT, DIRECTION = (
    "pod", "pod_namespace", "protocol", "port", "direction",
)  # fmt: skip
ALL_FILTERS = frozenset({POD, POD_NAMESPACE, PROTOCOL, PORT, DIRECTION})
_FLAGS = {
    POD: "--pod", POD_NAMESPACE: "--pod-namespace", PROTOCOL: "--protocol", PORT: "--port",
    DIRECTION: "--direction",
}  # fmt: skip


@dataclass(frozen=True)
class End:
    """One end of a row: a pod (namespace and name, empty when unknown) and a port."""

    namespace: str = ""
    pod: str = ""
    port: int | None = None


@dataclass(frozen=True)
class RowView:
    """What a filter needs to know about one row."""

    source: End | None = None
    destination: End | None = None
    protocol: str | None = None
    direction: str | None = None  # pod-relative, when the row itself says


@dataclass(frozen=True)
class RowFilter:
    pod_namespace: str | None = None
    pod: str | None = None  # a glob on the name, or NS/NAME with globs on either part
    protocol: str | None = None
    port: int | None = None
    direction: str | None = None

    @property
    def empty(self) -> bool:
        return self == RowFilter()

    def _pod_matches(self, end: End | None) -> bool:
        if end is None or not end.pod:
            return False
        if self.pod_namespace is not None and end.namespace != self.pod_namespace:
            return False
        if self.pod is None:
            return True
        namespace, _, name = self.pod.rpartition("/")
        if namespace and not fnmatch.fnmatchcase(end.namespace, namespace):
            return False
        return fnmatch.fnmatchcase(end.pod, name)

    def matches(self, view: RowView) -> bool:
        ends = [e for e in (view.source, view.destination) if e is not None]
        if self.protocol is not None and (view.protocol or "").upper() != self.protocol.upper():
            return False
        if self.port is not None and all(e.port != self.port for e in ends):
            return False
        by_pod = self.pod is not None or self.pod_namespace is not None
        if by_pod and not any(self._pod_matches(e) for e in ends):
            return False
        if self.direction is None:
            return True
        if view.direction is not None:
            return view.direction == self.direction
        end = view.source if self.direction == "egress" else view.destination
        return self._pod_matches(end)

    def apply(self, rows: Iterable[RowView]) -> list[int]:
        """Indexes of the rows that match."""
        return [i for i, view in enumerate(rows) if self.matches(view)]


def add_filter_arguments(
    parser: argparse.ArgumentParser, *, pod: bool = True, pod_namespace: bool = True
) -> None:
    """The filter flags; ``orb8 trace`` uses ``--pod`` for its target, so it can leave it out."""
    group = parser.add_argument_group("filters")
    if pod_namespace:
        group.add_argument(
            "--pod-namespace", metavar="NS", dest="filter_pod_namespace",
            help="only rows with an end in a pod of this namespace "
            "(-n/--namespace names the session's namespace, as in kubectl)",
        )  # fmt: skip
    if pod:
        group.add_argument(
            "--pod",
            metavar="[NS/]NAME",
            dest="filter_pod",
            help="only rows with an end in this pod (wildcards ok)",
        )
    group.add_argument(
        "--protocol", metavar="PROTO", dest="filter_protocol", help="TCP, UDP, ICMP or ICMPv6"
    )
    group.add_argument(
        "--port", metavar="PORT", dest="filter_port", help="either end's port (1-65535)"
    )
    group.add_argument(
        "--direction", metavar="DIR", dest="filter_direction",
        help="ingress or egress, relative to the pod",
    )  # fmt: skip


def parse_protocol(text: str) -> str:
    canonical = PROTOCOLS.get(text.strip().lower())
    if canonical is None:
        raise UsageError(f"unknown protocol {text!r}; use one of {', '.join(PROTOCOLS.values())}")
    return canonical


def parse_port(text: str) -> int:
    stripped = text.strip()
    if not stripped.isdigit() or not 1 <= int(stripped) <= 65535:
        raise UsageError(f"invalid port {text!r}; use a number from 1 to 65535")
    return int(stripped)


def parse_direction(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in DIRECTIONS:
        raise UsageError(f"invalid direction {text!r}; use ingress or egress")
    return lowered


def parse_pod(text: str) -> str:
    stripped = text.strip()
    namespace, _, name = stripped.rpartition("/")
    if not name or stripped.count("/") > 1 or (stripped.count("/") == 1 and not namespace):
        raise UsageError(f"invalid pod {text!r}; use NAME or NAMESPACE/NAME")
    return stripped


def parse_namespace(text: str) -> str:
    stripped = text.strip()
    if not stripped or "/" in stripped:
        raise UsageError(f"invalid namespace {text!r}")
    return stripped


def filter_from_args(args: argparse.Namespace, *, kind: str, applies: frozenset[str]) -> RowFilter:
    """The filter the flags ask for; a flag that means nothing for ``kind`` is a usage error."""
    given = {name: getattr(args, f"filter_{name}", None) for name in ALL_FILTERS}
    for name, value in given.items():
        if value is not None and name not in applies:
            raise UsageError(f"{_FLAGS[name]} does not apply to {kind}")

    def parsed(name: str, parse: Callable[[str], _T]) -> _T | None:
        value = given[name]
        return None if value is None else parse(str(value))

    return RowFilter(
        pod_namespace=parsed(POD_NAMESPACE, parse_namespace),
        pod=parsed(POD, parse_pod),
        protocol=parsed(PROTOCOL, parse_protocol),
        port=parsed(PORT, parse_port),
        direction=parsed(DIRECTION, parse_direction),
    )
