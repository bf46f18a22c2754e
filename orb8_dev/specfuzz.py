"""Schema-driven malformed specs: a valid spec broken one field at a time.

``mutations(schema=..., base=...)`` walks a CRD's ``spec`` schema alongside a
valid spec and yields, for every field it declares, bodies that break that
field in one way each: a wrong JSON type, a number below ``minimum`` / above
``maximum`` / beyond int64 / fractional / a numeric string for an integer, a
value outside an ``enum``, a string over ``maxLength`` or against its
``pattern`` (punctuation, a newline, non-ASCII), bad Go durations, a list over
``maxItems`` or under ``minItems``, an unknown field, bad map keys (empty, too
long, a bad prefix, two slashes, a bad first character), a missing required
field, and the whole spec of a wrong type. Every mutation names the JSON path it
broke (``spec.probes.network.topFlows``), so a test can check that a refusal
names it. The cases are deterministic: the same schema gives the same list.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAD_DURATIONS",
    "BAD_MAP_KEYS",
    "EDGE_DURATIONS",
    "Mutation",
    "is_malformed",
    "mutations",
]

Schema = dict[str, Any]

# Go-duration strings the CRDs must refuse (or, past the pattern, hold to range).
BAD_DURATIONS = (
    "",
    "-1s",
    "1d",
    "10",
    "1h1x",
    "h",
    ".5s",
    "2562047h48m",
    "99999999999999999999h",
    "8761h",
    "1e3s",
    " 10s",
)


# Label keys (map keys under a CEL key rule) the CRDs must refuse: empty, over
# 317 characters, an upper-case prefix, two slashes, a leading dash, spaces.
BAD_MAP_KEYS = (
    "bad key!",
    "",
    "a" * 318,
    "Example.COM/app",
    "a/b/c",
    "-app",
    "app.",
)

# Strings against a field's pattern, kept only where the pattern refuses them.
AGAINST_PATTERN = (
    ("against pattern", "Not Valid!"),
    ("against pattern: newline", "a\nb"),
    ("against pattern: non-ASCII", "caf\u00e9"),
)

# Valid Go durations at the edges of what specs accept; admission may still
# refuse some for a field's own minimum (reportInterval >= 1s).
EDGE_DURATIONS = ("8760h", "525600m", "1ns", "0s", "999ms", "1s", "0.5h", "1h0m0s")


@dataclass(frozen=True)
class Mutation:
    path: str  # JSON path of the broken field, e.g. spec.probes.network.topFlows
    how: str  # what was done to it; "edge: ..." values are valid for the type and may pass
    spec: Any  # the whole spec: an object but for the "spec <type>" breaks of the root


def is_malformed(mutation: Mutation) -> bool:
    """Whether the body is broken for sure (an "edge: ..." value may be valid)."""
    return not mutation.how.startswith("edge:")


def _wrong_types(schema: Schema) -> list[Any]:
    kind = schema.get("type")
    candidates: list[Any] = ["a-string", 7, True, ["x"], {"x": 1}]
    wrong = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "array": (list,),
        "object": (dict,),
    }.get(str(kind), ())
    out = []
    for value in candidates:
        ok = kind == "boolean" if isinstance(value, bool) else isinstance(value, wrong)
        if not ok:
            out.append(value)
    return out


def _is_duration(schema: Schema) -> bool:
    return "duration" in str(schema.get("pattern", "")) or "(ns|us|" in str(
        schema.get("pattern", "")
    )


def _scalar_mutations(schema: Schema) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [(f"type {type(v).__name__}", v) for v in _wrong_types(schema)]
    kind = schema.get("type")
    if kind in ("integer", "number"):
        if "minimum" in schema:
            out.append(("edge: minimum", schema["minimum"]))
            out.append(("below minimum", schema["minimum"] - 1))
        if "maximum" in schema:
            out.append(("edge: maximum", schema["maximum"]))
            out.append(("above maximum", schema["maximum"] + 1))
        out.append(("beyond int64", 2**64))
        out.append(("hugely negative", -(2**63) - 1))
        if kind == "integer":
            out.append(("fractional", 1.5))
            out.append(("numeric string", "80"))
            out.append(("edge: integral float", 80.0))
    if kind == "string":
        if "enum" in schema:
            out.append(("outside enum", "Bogus"))
            out.append(("enum in lower case", str(schema["enum"][0]).lower() + "x"))
        if "maxLength" in schema:
            out.append(("over maxLength", "a" * (schema["maxLength"] + 1)))
        if _is_duration(schema):
            out.extend((f"bad duration {d!r}", d) for d in BAD_DURATIONS)
            out.extend((f"edge: duration {d!r}", d) for d in EDGE_DURATIONS)
        elif "pattern" in schema:
            out.extend(
                (how, value)
                for how, value in AGAINST_PATTERN
                if not re.search(str(schema["pattern"]), value)
            )
        if schema.get("minLength"):
            out.append(("empty", ""))
    return out


def _valid_item(schema: Schema, example: Any) -> Any:
    if example is not None:
        return copy.deepcopy(example)
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    return None


def _set(root: dict[str, Any], keys: list[str | int], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(root)
    node: Any = out
    for key in keys[:-1]:
        if isinstance(key, str) and key not in node:
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return out


def _delete(root: dict[str, Any], keys: list[str | int]) -> dict[str, Any]:
    out = copy.deepcopy(root)
    node: Any = out
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]
    return out


def _dotted(keys: list[str | int]) -> str:
    text = "spec"
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


def _get(root: Any, keys: list[str | int]) -> Any:
    node = root
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def mutations(*, schema: Schema, base: dict[str, Any]) -> Iterator[Mutation]:
    """Every single-field break of ``base`` (a valid spec) that ``schema`` (its
    openAPIV3Schema ``spec`` property) allows one to name."""
    for how, value in (("type str", "a-string"), ("type list", ["x"]), ("type int", 7)):
        yield Mutation("spec", f"spec {how}", value)
    yield from _walk(schema, base, [])


def _walk(schema: Schema, base: dict[str, Any], keys: list[str | int]) -> Iterator[Mutation]:
    path = _dotted(keys)
    kind = schema.get("type")
    current = _get(base, keys)
    if keys:
        for how, value in _scalar_mutations(schema):
            yield Mutation(path, how, _set(base, keys, value))
    if kind == "object" and "properties" in schema:
        holder = current if isinstance(current, dict) else {}
        if keys and not isinstance(current, dict):
            return
        yield Mutation(
            _dotted([*keys, "bogusField"]), "unknown field", _set(base, [*keys, "bogusField"], 1)
        )
        for name in schema.get("required", []):
            if name in holder:
                yield Mutation(
                    _dotted([*keys, name]), "required field missing", _delete(base, [*keys, name])
                )
        for name, sub in schema["properties"].items():
            yield from _walk(sub, base, [*keys, name])
    elif kind == "object" and "additionalProperties" in schema:
        values = schema["additionalProperties"]
        for n, bad in enumerate(BAD_MAP_KEYS):
            yield Mutation(
                path,
                f"bad map key {n}: {bad[:24]!r}",
                _set(base, [*keys, bad], _valid_item(values, "v")),
            )
        if "maxProperties" in schema:
            too_many = {
                f"k{i}": _valid_item(values, "v") for i in range(schema["maxProperties"] + 1)
            }
            yield Mutation(path, "over maxProperties", _set(base, keys, too_many))
        for how, value in _scalar_mutations(values):
            yield Mutation(f"{path}.key", f"map value {how}", _set(base, [*keys, "key"], value))
    elif kind == "array":
        items = schema.get("items", {})
        example = current[0] if isinstance(current, list) and current else None
        item = _valid_item(items, example)
        if "maxItems" in schema and item is not None:
            many = [item] * (schema["maxItems"] + 1)
            if schema.get("x-kubernetes-list-type") == "set" and isinstance(item, str):
                many = [f"{item}{i}" for i in range(schema["maxItems"] + 1)]
            yield Mutation(path, "over maxItems", _set(base, keys, many))
        if schema.get("minItems"):
            yield Mutation(path, "under minItems", _set(base, keys, []))
        if schema.get("x-kubernetes-list-type") == "set" and item is not None:
            yield Mutation(f"{path}[1]", "duplicate set entry", _set(base, keys, [item, item]))
        if isinstance(item, dict) and items.get("type") == "object":
            # the walk breaks the item's type itself, then each of its fields
            yield from _walk(items, _set(base, keys, [item]), [*keys, 0])
        elif item is not None:
            for how, value in _scalar_mutations(items):
                yield Mutation(f"{path}[0]", f"item {how}", _set(base, keys, [value]))
