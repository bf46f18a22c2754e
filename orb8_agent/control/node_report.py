"""The agent's one write per interval: every session's share on this node,
bounded where it is written.

The reports go into NodeAgentConfig/<node>.status.reports in one merge
patch. Their serialized JSON must stay under ``REPORT_BUDGET_BYTES`` (256
KiB): when the sessions' own topFlows/maxAlerts (GPU rows, alerts) would
exceed it, every list is shortened by one common factor and the report is
rebuilt, so the object never approaches etcd's limit however many sessions a
node has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from orb8_common.models import SessionReport, to_wire

# Measured (docs/performance.md): 50 agents writing 512 KiB every 15 s kept the test
# apiserver on 2 shared cores past its request timeouts; 256 KiB per node still leaves a
# node serving 500 sessions room for totals and a top flow or two per session.
REPORT_BUDGET_BYTES = 256 * 1024
_ATTEMPTS = 6


def reports_wire(*, reports: Sequence[SessionReport]) -> list[dict[str, object]]:
    return [to_wire(r) for r in reports]


def wire_size(*, value: object) -> int:
    """Bytes of the compact JSON encoding (what the apiserver stores, near enough)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def fit_reports(
    *, build: Callable[[float], Sequence[SessionReport]], budget: int = REPORT_BUDGET_BYTES
) -> tuple[list[dict[str, object]], float]:
    """The wire form of ``build(scale)`` for the largest scale (<= 1) that fits ``budget``.

    ``build`` gets a factor in [0, 1] for every list it writes; at 0 only
    totals and states remain, which is what a node must always be able to say.
    """
    scale = 1.0
    for _ in range(_ATTEMPTS):
        wire = reports_wire(reports=build(scale))
        size = wire_size(value=wire)
        if size <= budget:
            return wire, scale
        scale *= 0.9 * budget / size
    return reports_wire(reports=build(0.0)), 0.0
