"""Printing rows as ``table``, ``wide``, ``json`` or ``ndjson``, once or as a watch.

A :class:`RowKind` says how one kind of row (a status dict) looks: its
columns (``wide`` ones only in ``-o wide``), its identity (to tell a changed
row from a new one while watching), its :class:`~orb8_cli.filters.RowView`
for the filters, and which filters apply. The rows themselves are printed
unchanged in ``json``/``ndjson``: the status schema is the contract.

While watching, each update prints only the rows that are new or changed
since the last one, as ``kubectl get --watch`` does: ``table``/``wide`` rows
under the first header, ``ndjson`` one row a line, and ``json`` one compact
array of all matching rows a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from orb8_cli.filters import RowFilter, RowView

Row = Mapping[str, Any]
OUTPUTS = ("table", "wide", "json", "ndjson")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    wide: bool = False
    # shown only when some row carries this field (e.g. TCP health on TCP rows)
    when_field: str = ""


@dataclass(frozen=True)
class RowKind:
    name: str  # as the user types it: "flows"
    columns: tuple[Column, ...]
    key: Callable[[Row], Hashable]
    view: Callable[[Row], RowView]
    filters: frozenset[str]
    empty: str = "nothing reported yet"  # printed for a table without rows

    def select(self, rows: Sequence[Row], row_filter: RowFilter) -> list[Row]:
        if row_filter.empty:
            return list(rows)
        return [row for row in rows if row_filter.matches(self.view(row))]


def _visible(kind: RowKind, rows: Sequence[Row], *, wide: bool) -> list[Column]:
    return [
        c for c in kind.columns
        if (wide or not c.wide) and (not c.when_field or any(c.when_field in r for r in rows))
    ]  # fmt: skip


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def render(*, kind: RowKind, rows: Sequence[Row], output: str, empty: str | None = None) -> str:
    """The whole text for a one-shot ``orb8 get`` (without the trailing newline)."""
    if output == "json":
        return json.dumps(list(rows), indent=2)
    if output == "ndjson":
        return "\n".join(json.dumps(r, separators=(",", ":")) for r in rows)
    if not rows:
        return kind.empty if empty is None else empty
    columns = _visible(kind, rows, wide=output == "wide")
    headers = [c.header for c in columns]
    table = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([len(h), *(len(cells[i]) for cells in table)]) for i, h in enumerate(headers)]
    return "\n".join(_line(cells, widths) for cells in [headers, *table])


@dataclass
class WatchPrinter:
    """Prints what changed between successive row lists of one watch."""

    kind: RowKind
    output: str
    stream: TextIO
    empty: str | None = None
    _seen: dict[Hashable, str] = field(default_factory=dict)
    _widths: list[int] | None = None
    _columns: list[Column] | None = None
    _announced_empty: bool = False

    def update(self, rows: Sequence[Row]) -> int:
        """Print the rows that are new or changed; returns how many lines were printed."""
        if self.output == "json":
            snapshot = json.dumps(list(rows), separators=(",", ":"))
            if self._seen.get("json") == snapshot:
                return 0
            self._seen["json"] = snapshot
            self._print([snapshot])
            return 1
        changed = []
        for row in rows:
            text = json.dumps(row, sort_keys=True, separators=(",", ":"))
            key = self.kind.key(row)
            if self._seen.get(key) != text:
                self._seen[key] = text
                changed.append(row)
        if self.output == "ndjson":
            self._print([json.dumps(r, separators=(",", ":")) for r in changed])
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
