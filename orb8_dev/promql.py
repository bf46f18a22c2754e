"""Metric names in PromQL expressions and Grafana dashboards, by a small tokenizer.

Not a PromQL parser: it drops strings, label matchers ``{...}``, ranges
``[...]``, Grafana variables, grouping label lists (``by (...)``,
``without (...)``, ``on (...)``, ``ignoring (...)``, ``group_left (...)``)
and numbers, then keeps identifiers that are not followed by ``(`` (a
function or aggregation) and are not keywords. What is left are metric names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "bool", "offset", "inf", "nan", "atan2", "start", "end",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.S)
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads, e.g. ``rate(a_total{x="y"}[5m]) / b`` → {a_total, b}."""
    values = _LABEL_VALUES.match(expr)
    if values:
        expr = values.group("expr")
    for pattern in (_STRING, _VARIABLE, _MATCHERS, _RANGE, _GROUPING):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENT.finditer(expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_expressions(dashboard: Mapping[str, Any]) -> Iterator[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets and templating queries."""

    def panels(items: list[Any]) -> Iterator[Mapping[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield str(target["expr"])
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        if text:
            yield str(text)
