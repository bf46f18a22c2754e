"""A session's status as the CLI reads it: every part through the contract.

The operator writes a TraceSession's or GpuTelemetry's status from the models
in ``orb8_common.models`` (the head: phase, matchedPods, times, conditions;
rows, summary, DNS, node entries); here each part is parsed back through the
same models. A part that does not parse (written by an operator or agent of
another version) is left out and named in ``problems``, one line each, so the
rest of the session still shows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orb8_common.models import (
    Alert,
    DnsSummary,
    Flow,
    GpuNodeEntry,
    GpuPodRow,
    NodeEntry,
    SessionStatusHead,
    TraceSummary,
    read_status_head,
    validation_message,
)

M = TypeVar("M", bound=BaseModel)


def as_stored(model: BaseModel) -> dict[str, Any]:
    """A parsed part as JSON with the fields its writer set (no defaults added), for
    ``-o json``: what the status holds, checked by the contract."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def parse_one(raw: Any, *, model: type[M], where: str, problems: list[str]) -> M | None:
    """``raw`` as ``model``; None (and a line in ``problems``) when it does not parse."""
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems.append(f"{validation_message(err, where='status.' + where)} (left out)")
        return None


def parse_rows(raw: Any, *, model: type[M], where: str, problems: list[str]) -> tuple[M, ...]:
    """Each item of the list ``raw`` as ``model``, leaving out (and naming) those that do not
    parse; anything but a list is one problem and no rows."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"status.{where}: not a list (left out)")
        return ()
    rows = []
    for i, item in enumerate(raw):
        row = parse_one(item, model=model, where=f"{where}[{i}]", problems=problems)
        if row is not None:
            rows.append(row)
    return tuple(rows)


class ProblemPrinter:
    """Says on stderr, once each, which parts of a session's status were left out."""

    def __init__(self, *, session: str) -> None:
        self._session = session
        self._said: set[str] = set()

    def show(self, problems: Sequence[str]) -> None:
        for line in problems:
            if line not in self._said:
                self._said.add(line)
                print(f"orb8: {self._session}: {line}", file=sys.stderr)


@dataclass(frozen=True)
class TraceSessionStatus:
    phase: str
    matched_pods: int
    summary: TraceSummary
    flows: tuple[Flow, ...]
    alerts: tuple[Alert, ...]
    dns: DnsSummary | None
    nodes: tuple[NodeEntry, ...]
    problems: tuple[str, ...]


@dataclass(frozen=True)
class GpuTelemetryStatus:
    phase: str
    pods: tuple[GpuPodRow, ...]
    nodes: tuple[GpuNodeEntry, ...]
    problems: tuple[str, ...]


def _status_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def _head(status: Mapping[str, Any]) -> tuple[SessionStatusHead, list[str]]:
    """phase, matchedPods, times and conditions; a line per field left out."""
    head, problems = read_status_head(raw=status)
    return head, [f"{line} (left out)" for line in problems]


def read_trace_status(*, body: Mapping[str, Any]) -> TraceSessionStatus:
    """A TraceSession's status (an empty one before the operator wrote any)."""
    status = _status_of(body)
    head, problems = _head(status)
    summary = parse_one(status.get("summary"), model=TraceSummary, where="summary",
                        problems=problems)  # fmt: skip
    return TraceSessionStatus(
        phase=head.phase or "",
        matched_pods=head.matched_pods or 0,
        summary=summary or TraceSummary(),
        flows=parse_rows(status.get("flows"), model=Flow, where="flows", problems=problems),
        alerts=parse_rows(status.get("alerts"), model=Alert, where="alerts", problems=problems),
        dns=parse_one(status.get("dns"), model=DnsSummary, where="dns", problems=problems),
        nodes=parse_rows(status.get("nodes"), model=NodeEntry, where="nodes", problems=problems),
        problems=tuple(problems),
    )


def read_gpu_status(*, body: Mapping[str, Any]) -> GpuTelemetryStatus:
    """A GpuTelemetry's status (an empty one before the operator wrote any)."""
    status = _status_of(body)
    head, problems = _head(status)
    return GpuTelemetryStatus(
        phase=head.phase or "",
        pods=parse_rows(status.get("pods"), model=GpuPodRow, where="pods", problems=problems),
        nodes=parse_rows(status.get("nodes"), model=GpuNodeEntry, where="nodes", problems=problems),
        problems=tuple(problems),
    )
