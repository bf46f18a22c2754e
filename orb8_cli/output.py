"""Printing rows as ``table``, ``wide``, ``json`` or ``ndjson``, once or as a watch.

A :class:`RowKind` says how one kind of row (a status row model of
``orb8_common.models``) looks: its columns (``wide`` ones only in
``-o wide``), its identity (to tell a changed row from a new one while
watching), its :class:`~orb8_cli.filters.RowView` for the filters, and which
filters apply. ``json``/``ndjson`` print each row as the status holds it,
after the contract parsed it (``orb8_cli.status.as_stored``).

While watching, each update prints only the rows that are new or changed
since the last one, as ``kubectl get --watch`` does: ``table``/``wide`` rows
under the first header, ``ndjson`` one row a line, and ``json`` one compact
array of all matching rows a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TextIO, TypeVar

from pydantic import BaseModel

from orb8_cli.filters import RowFilter, RowView
from orb8_cli.status import as_stored

Row = TypeVar("Row", bound=BaseModel)
OUTPUTS = ("table", "wide", "json", "ndjson")


@dataclass(frozen=True)
class Column(Generic[Row]):
    header: str
    cell: Callable[[Row], str]
    wide: bool = False
    # shown only when some row has this field set (e.g. TCP health on TCP rows)
    when_field: str = ""


@dataclass(frozen=True)
class RowKind(Generic[Row]):
    name: str  # as the user types it: "flows"
    columns: tuple[Column[Row], ...]
    key: Callable[[Row], Hashable]
    view: Callable[[Row], RowView]
    filters: frozenset[str]
    empty: str = "nothing reported yet"  # printed for a table without rows

    def select(self, rows: Sequence[Row], row_filter: RowFilter) -> list[Row]:
        if row_filter.empty:
            return list(rows)
        return [row for row in rows if row_filter.matches(self.view(row))]


def _wire(rows: Sequence[BaseModel]) -> list[dict[str, Any]]:
    return [as_stored(r) for r in rows]


def _visible(kind: RowKind[Row], rows: Sequence[Row], *, wide: bool) -> list[Column[Row]]:
    return [
        c for c in kind.columns
        if (wide or not c.wide)
        and (not c.when_field or any(getattr(r, c.when_field, None) is not None for r in rows))
    ]  # fmt: skip


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def render(
    *, kind: RowKind[Row], rows: Sequence[Row], output: str, empty: str | None = None
) -> str:
    """The whole text for a one-shot ``orb8 get`` (without the trailing newline)."""
    if output == "json":
        return json.dumps(_wire(rows), indent=2)
    if output == "ndjson":
        return "\n".join(json.dumps(r, separators=(",", ":")) for r in _wire(rows))
    if not rows:
        return kind.empty if empty is None else empty
    columns = _visible(kind, rows, wide=output == "wide")
    headers = [c.header for c in columns]
    table = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([len(h), *(len(cells[i]) for cells in table)]) for i, h in enumerate(headers)]
    return "\n".join(_line(cells, widths) for cells in [headers, *table])


@dataclass
class WatchPrinter(Generic[Row]):
    """Prints what changed between successive row lists of one watch."""

    kind: RowKind[Row]
    output: str
    stream: TextIO
    empty: str | None = None
    _seen: dict[Hashable, str] = field(default_factory=dict)
    _widths: list[int] | None = None
    _columns: list[Column[Row]] | None = None
    _announced_empty: bool = False

    def update(self, rows: Sequence[Row]) -> int:
        """Print the rows that are new or changed; returns how many lines were printed."""
        if self.output == "json":
            snapshot = json.dumps(_wire(rows), separators=(",", ":"))
            if self._seen.get("json") == snapshot:
                return 0
            self._seen["json"] = snapshot
            self._print([snapshot])
            return 1
        changed: list[Row] = []
        for row in rows:
            text = json.dumps(as_stored(row), sort_keys=True, separators=(",", ":"))
            key = self.kind.key(row)
            if self._seen.get(key) != text:
                self._seen[key] = text
                changed.append(row)
        if self.output == "ndjson":
            self._print([json.dumps(r, separators=(",", ":")) for r in _wire(changed)])
            return len(changed)
        return self._table(changed)

    def _table(self, rows: Sequence[Row]) -> int:
        wide = self.output == "wide"
        lines: list[str] = []
        if not rows:
            if self._widths is None and not self._announced_empty:
                self._announced_empty = True
                lines.append(self.kind.empty if self.empty is None else self.empty)
            self._print(lines)
            return len(lines)
        if self._columns is None:  # the first rows decide the columns of the whole watch
            self._columns = _visible(self.kind, rows, wide=wide)
        table = [[c.cell(r) for c in self._columns] for r in rows]
        if self._widths is None:
            headers = [c.header for c in self._columns]
            self._widths = [
                max([len(h), *(len(cells[i]) for cells in table)]) for i, h in enumerate(headers)
            ]
            lines.append(_line(headers, self._widths))
        self._widths = [max([w, *(len(cells[i]) for cells in table)])
                        for i, w in enumerate(self._widths)]  # fmt: skip
        lines.extend(_line(cells, self._widths) for cells in table)
        self._print(lines)
        return len(lines)

    def _print(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.stream.write(line + "\n")
        self.stream.flush()
