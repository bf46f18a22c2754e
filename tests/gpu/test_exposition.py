"""The exposition tokenizer, held to prometheus_client's parser on generated input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from orb8_agent.gpu.errors import ExporterFormatError
from orb8_agent.gpu.exposition import Sample, iter_samples


def reference(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def ours(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for s in iter_samples(text)]


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Names starting "__" are reserved for Prometheus itself; exporters never emit them.
_names = st.from_regex(r"\A[a-zA-Z][a-zA-Z0-9_]{0,12}\Z")
_label_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters='\\"\n{},= #'),
    max_size=20,
)
_values = st.floats(allow_nan=False, allow_infinity=True, width=64)
_families = st.dictionaries(
    keys=_names,
    values=st.lists(
        st.tuples(st.dictionaries(_names, _label_values, max_size=5), _values, st.booleans()),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=5,
)


def render(families: dict[str, list[tuple[dict[str, str], float, bool]]]) -> str:
    lines = []
    for name, samples in families.items():
        lines.append(f"# HELP {name} Generated {name}.")
        lines.append(f"# TYPE {name} gauge")
        for labels, value, stamp in samples:
            block = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
            text_value = {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, repr(value))
            lines.append(
                f"{name}{{{block}}} {text_value}" + (" 1700000000000" if stamp else "")
                if labels
                else f"{name} {text_value}"
            )
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None)
@given(families=_families)
def test_same_samples_as_prometheus_client(
    families: dict[str, list[tuple[dict[str, str], float, bool]]],
) -> None:
    text = render(families)
    assert ours(text) == reference(text)


def test_wanted_filters_and_skips_decoding() -> None:
    text = (
        '# TYPE a gauge\na{x="1"} 1\n# TYPE b gauge\nb{y="va}l,ue"} 2 1700000000000\na{x="2"} 3\n'
    )
    assert list(iter_samples(text, wanted={"a"})) == [
        Sample("a", {"x": "1"}, 1.0),
        Sample("a", {"x": "2"}, 3.0),
    ]


def test_escapes_and_trailing_comma() -> None:
    (s,) = iter_samples('m{a="q\\"uote",b="back\\\\slash",c="new\\nline",} -1.5e3\n')
    assert s.labels == {"a": 'q"uote', "b": "back\\slash", "c": "new\nline"}
    assert s.value == -1500.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('m{a="1"', "line 1: expected ',' or '}'"),
        ("m{", "line 1: unterminated label set"),
        ('m{a="1} 2', "unterminated value of label 'a'"),
        ("m{a=1} 2", "is not quoted"),
        ('m{a="1" b="2"} 3', "expected ',' or '}'"),
        ('m{1a="1"} 3', "invalid label name"),
        ('m{a="1",a="2"} 3', "duplicate label 'a'"),
        ('m{a="\\q"} 3', "invalid escape"),
        ("m", "sample without a value"),
        ("m 1 2 3", "expected a value and an optional timestamp"),
        ("m one", "not a number"),
        ("m 1_000", "not a number"),
        ("m 1 12.5", "not a number"),
        ("9m 1", "invalid metric name"),
        ("m-x 1", "invalid metric name"),
        ("# TYPE m gauges", "unknown metric type"),
        ("\n\n# HELP 9bad text", "line 3: invalid metric name"),
        ('other{x="1"', "unterminated label set"),  # unread metrics are still checked
    ],
)
def test_malformed_lines(text: str, fragment: str) -> None:
    with pytest.raises(ExporterFormatError) as info:
        list(iter_samples(text, wanted={"m"}))
    assert fragment in str(info.value)


def test_comments_blank_lines_and_special_values() -> None:
    text = "# a free comment\n\n   \nm NaN\n  m +Inf\r\n\tm -Inf 123\n  # HELP m indented\n"
    values = [s.value for s in iter_samples(text)]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]
