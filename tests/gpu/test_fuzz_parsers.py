"""Hypothesis fuzzing of what orb8 reads from outside: dcgm-exporter's text and
the session specs. Whatever comes in, the only exception is the module's own:
ExporterFormatError for the exporter, InvalidSpecError for specs."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orb8_agent.gpu.dcgm import FIELDS, parse_exposition
from orb8_agent.gpu.errors import ExporterFormatError
from orb8_agent.gpu.exporter import decode_body
from orb8_agent.gpu.exposition import iter_samples
from orb8_common.errors import InvalidSpecError
from orb8_common.models import (
    NodeAgentConfigSpec,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
)
from orb8_dev.gpu_servers import FakeGpu, FakeMig, Pod, exposition

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_bytes(body: bytes) -> None:
    try:
        scrape = parse_exposition(decode_body(body, url="http://x/metrics"), fetched_at=NOW)
    except ExporterFormatError as err:
        assert str(err) and "\n" not in str(err)
        return
    for e in scrape.entities:
        assert e.uuid
        for value in (e.gpu_util_percent, e.temperature_celsius, e.power_watts):
            assert value is None or value >= 0


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(body: bytes) -> None:
    _parse_bytes(body)


@FUZZ
@given(st.text(max_size=2048))
def test_arbitrary_text(text: str) -> None:
    _parse_bytes(
        text.encode("utf-8", "surrogatepass") if False else text.encode("utf-8", "replace")
    )
    with contextlib.suppress(ExporterFormatError):
        list(iter_samples(text))


LABEL_VALUE = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
NAMES = st.sampled_from([*FIELDS, "DCGM_FI_DEV_OTHER", "go_gc", "x"])
LABEL_NAMES = st.sampled_from(
    [
        "UUID",
        "gpu",
        "GPU_I_ID",
        "GPU_I_PROFILE",
        "pod",
        "namespace",
        "container",
        "device",
        "1bad",
        "",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        ["NaN", "+Inf", "-Inf", "1e400", "-0", "0x10", "", "1_000", "9223372036854775807"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)


@st.composite
def exposition_lines(draw: st.DrawFn) -> str:
    """Lines that look like the text format, with every part possibly wrong."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        shape = draw(st.integers(0, 5))
        name = draw(NAMES)
        if shape == 0:
            lines.append(
                f"# TYPE {name} {draw(st.sampled_from(['gauge', 'counter', 'bogus', '']))}"
            )
        elif shape == 1:
            lines.append(f"# HELP {name} {draw(LABEL_VALUE)}")
        else:
            labels = draw(st.lists(st.tuples(LABEL_NAMES, LABEL_VALUE), max_size=4))
            body = ",".join(f'{k}="{v}"' for k, v in labels)
            if shape == 3:
                body = body[: draw(st.integers(0, max(len(body), 0)))]  # cut anywhere
            ts = draw(st.sampled_from(["", " 1700000000000", " x"]))
            lines.append(f"{name}{{{body}}} {draw(VALUES)}{ts}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


@FUZZ
@given(exposition_lines())
def test_near_valid_exposition(text: str) -> None:
    _parse_bytes(text.encode())


@FUZZ
@given(st.data())
def test_real_exporter_text_cut_or_corrupted_anywhere(data: st.DataObject) -> None:
    gpus = [
        FakeGpu(index=0, util=50, fb_used_mib=100, fb_free_mib=100, pods=[Pod("a", "b", "c")]),
        FakeGpu(index=1, util=None, fb_used_mib=None, fb_free_mib=None,
                mig=[FakeMig(gi_id=1, profile="1g.10gb", fb_used_mib=1, fb_free_mib=2,
                             gr_active=0.5)]),
    ]  # fmt: skip
    body = exposition(gpus, kubernetes_mode=True).encode()
    cut = data.draw(st.integers(0, len(body)))
    corrupt = data.draw(st.binary(max_size=8))
    at = data.draw(st.integers(0, cut))
    _parse_bytes(body[:at] + corrupt + body[at:cut])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from([
    "selector", "podSelector", "matchLabels", "matchExpressions", "namespaces", "nodeSelector",
    "probes", "network", "syscalls", "enabled", "directions", "protocols", "topFlows", "alertOn",
    "learningPeriod", "maxAlerts", "duration", "reportInterval", "ttlSecondsAfterFinished",
    "source", "dcgmExporter", "nvml", "port", "path", "interval", "alerts", "idleFor",
    "idleUtilizationPercent", "memoryUsedPercent", "key", "operator", "values",
])  # fmt: skip
SPECISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["10s", "8761h", "-1s", "2562047h48m", "ptrace", "In", "TCP", "ingress"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)  # fmt: skip


def _decode(raw: Any) -> None:
    for parse in (parse_trace_session_spec, parse_gpu_telemetry_spec):
        try:
            parse(raw)
        except InvalidSpecError as err:
            text = str(err)
            assert text.startswith("spec") and "\n" not in text, text


@FUZZ
@given(JSON)
def test_arbitrary_json_specs(raw: Any) -> None:
    _decode(raw)


@FUZZ
@given(SPECISH)
def test_spec_shaped_json(raw: Any) -> None:
    _decode(raw)
    # The same through a JSON round trip, as the apiserver hands it over.
    _decode(json.loads(json.dumps(raw)))


@FUZZ
@given(st.dictionaries(st.sampled_from(["nodeName", "sessions"]), SPECISH, max_size=2))
def test_node_agent_config_spec(raw: Any) -> None:
    from pydantic import ValidationError

    with contextlib.suppress(ValidationError):
        NodeAgentConfigSpec.model_validate(raw)
