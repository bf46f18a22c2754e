"""The dcgm-exporter text parser: units, sentinels, label spellings, bad input."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orb8_agent.gpu.dcgm import DCGM_INT32_BLANK, is_blank, parse_exposition
from orb8_agent.gpu.errors import ExporterFormatError
from orb8_common.errors import Orb8Error
from orb8_dev.gpu_servers import (
    FP64_BLANK,
    INT64_NOT_SUPPORTED,
    FakeGpu,
    Pod,
    exposition,
    gpu_uuid,
)
from tests.gpu import scenarios

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
MIB = 1024 * 1024


def parse(text: str) -> dict[tuple[str, int | None], object]:
    return {e.key: e for e in parse_exposition(text, fetched_at=NOW).entities}


def test_eight_whole_gpus_parse_with_units_converted() -> None:
    text = exposition(scenarios.whole_gpus(n=8).gpus)
    scrape = parse_exposition(text, fetched_at=NOW)
    assert scrape.fetched_at == NOW
    assert len(scrape.entities) == 8
    e = {x.index: x for x in scrape.entities}[3]
    assert e.uuid == gpu_uuid(3)
    assert e.model == "NVIDIA H100 80GB HBM3"
    assert e.device == "nvidia3"
    assert e.hostname == "node-1"
    assert e.gpu_util_percent == 35.0
    assert e.fb_used_bytes == 4 * 1024 * MIB
    assert e.fb_free_bytes == (81559 - 4096) * MIB
    assert e.temperature_celsius == 43.0
    assert e.power_watts == pytest.approx(103.25)
    assert e.sm_clock_mhz == 1980.0
    assert e.gr_engine_active is None
    assert e.pods == ()
    assert not e.is_mig_instance


def test_mig_instances_are_separate_entities_keyed_by_gpu_instance_id() -> None:
    text = exposition(scenarios.mig().gpus)
    entities = parse(text)
    uuid = gpu_uuid(0)
    assert set(entities) == {(uuid, None), (uuid, 1), (uuid, 5), (uuid, 6)}
    big = parse_exposition(text, fetched_at=NOW).entities
    inst = next(e for e in big if e.gpu_instance_id == 1)
    assert inst.mig_profile == "3g.40gb"
    assert inst.gr_engine_active == pytest.approx(0.8125)
    assert inst.fb_used_bytes == 20000 * MIB
    assert inst.gpu_util_percent is None  # GPU_UTIL is not printed for MIG
    parent = next(e for e in big if e.gpu_instance_id is None)
    assert parent.temperature_celsius == 55.0
    assert parent.power_watts == pytest.approx(250.5)


def test_blank_sentinels_mean_no_data() -> None:
    g = FakeGpu(
        index=0, util=INT64_NOT_SUPPORTED, fb_used_mib=DCGM_INT32_BLANK + 2, power=FP64_BLANK
    )
    (e,) = parse_exposition(exposition([g]), fetched_at=NOW).entities
    assert e.gpu_util_percent is None
    assert e.fb_used_bytes is None
    assert e.power_watts is None
    assert e.temperature_celsius == 61.0  # untouched neighbours still read


@pytest.mark.parametrize(
    ("value", "kind", "blank"),
    [
        (9223372036854775792.0, "int", True),
        (9223372036854775794.0, "int", True),
        (2147483632.0, "int", True),
        (2147483631.0, "int", False),
        (0.0, "int", False),
        (140737488355328.0, "float", True),
        (140737488355330.0, "float", True),
        (412.5, "float", False),
        (float("nan"), "float", True),
        (float("inf"), "int", True),
        (-1.0, "int", True),
    ],
)
def test_is_blank(value: float, kind: str, blank: bool) -> None:
    assert is_blank(value, kind="int" if kind == "int" else "float") is blank


def test_lowercase_hostname_and_old_pod_labels_are_accepted() -> None:
    g = FakeGpu(index=0, pods=[Pod("ml", "trainer-0", "main")])
    text = exposition([g], hostname_label="hostname", kubernetes_mode=True, old_pod_labels=True)
    assert 'pod_name="trainer-0"' in text
    (e,) = parse_exposition(text, fetched_at=NOW).entities
    assert e.hostname == "node-1"
    assert [(p.namespace, p.pod, p.container) for p in e.pods] == [("ml", "trainer-0", "main")]


def test_kubernetes_mode_with_empty_pod_labels_gives_no_pods() -> None:
    text = exposition([FakeGpu(index=0)], kubernetes_mode=True)
    assert 'pod=""' in text
    (e,) = parse_exposition(text, fetched_at=NOW).entities
    assert e.pods == ()


def test_lowercase_uuid_label_and_unknown_metrics() -> None:
    text = (
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        'DCGM_FI_DEV_GPU_UTIL{gpu="2",uuid="GPU-x",modelName="T4"} 44\n'
        "# TYPE DCGM_FI_DEV_MEM_CLOCK gauge\n"
        'DCGM_FI_DEV_MEM_CLOCK{gpu="2",uuid="GPU-x"} 877\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="2"} 50\n'  # no UUID: cannot be attributed, skipped
    )
    (e,) = parse_exposition(text, fetched_at=NOW).entities
    assert (e.uuid, e.index, e.gpu_util_percent, e.temperature_celsius) == ("GPU-x", 2, 44.0, None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty body"),
        ("   \n", "empty body"),
        ("<html>502 Bad Gateway</html>", "not valid Prometheus exposition"),
        ('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"', "not valid Prometheus exposition"),
        ('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} eighty', "not valid Prometheus exposition"),
        ('DCGM_FI_DEV_GPU_UTIL{gpu="0,UUID="GPU-a"} 1', "not valid Prometheus exposition"),
        ("# TYPE go_goroutines gauge\ngo_goroutines 12\n", "no DCGM_* metrics"),
    ],
)
def test_malformed_input_raises_the_project_error(text: str, fragment: str) -> None:
    with pytest.raises(ExporterFormatError, match=re.escape(fragment)) as info:
        parse_exposition(text, fetched_at=NOW)
    assert isinstance(info.value, Orb8Error)
    assert info.value.retryable


def test_text_truncated_mid_line_is_rejected() -> None:
    text = exposition(scenarios.whole_gpus(n=2).gpus)
    cut = text[: text.index("DCGM_FI_DEV_GPU_UTIL{") + 40]
    with pytest.raises(ExporterFormatError):
        parse_exposition(cut, fetched_at=NOW)


def test_text_cut_at_a_line_boundary_parses_what_is_there() -> None:
    # A body that ends cleanly is valid exposition; missing fields stay unknown.
    text = exposition(scenarios.whole_gpus(n=2).gpus)
    cut = text[: text.index("# HELP DCGM_FI_DEV_GPU_UTIL")]
    entities = parse_exposition(cut, fetched_at=NOW).entities
    assert {e.index for e in entities} == {0, 1}
    assert all(e.gpu_util_percent is None and e.temperature_celsius is not None for e in entities)


# ---------------------------------------------------------------- properties

_gpus = st.lists(
    st.builds(
        FakeGpu,
        index=st.integers(min_value=0, max_value=15),
        util=st.one_of(st.none(), st.integers(min_value=0, max_value=100)),
        fb_used_mib=st.one_of(st.none(), st.integers(min_value=0, max_value=200_000)),
        fb_free_mib=st.one_of(st.none(), st.integers(min_value=0, max_value=200_000)),
        temp=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
        power=st.one_of(
            st.none(),
            st.floats(min_value=0, max_value=2000, allow_nan=False).map(lambda x: round(x, 6)),
        ),
        gr_active=st.one_of(
            st.none(), st.floats(min_value=0, max_value=1).map(lambda x: round(x, 6))
        ),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda g: g.index,
)


@settings(max_examples=60, deadline=None)
@given(gpus=_gpus, lower=st.booleans())
def test_generated_expositions_parse_back_to_their_values(gpus: list[FakeGpu], lower: bool) -> None:
    text = exposition(gpus, hostname_label="hostname" if lower else "Hostname")
    by_uuid = {e.uuid: e for e in parse_exposition(text, fetched_at=NOW).entities}
    assert set(by_uuid) == {g.uuid for g in gpus}
    for g in gpus:
        e = by_uuid[g.uuid]
        assert e.index == g.index
        assert e.gpu_util_percent == (None if g.util is None else float(g.util))
        assert e.fb_used_bytes == (None if g.fb_used_mib is None else g.fb_used_mib * MIB)
        assert e.fb_free_bytes == (None if g.fb_free_mib is None else g.fb_free_mib * MIB)
        assert e.temperature_celsius == (None if g.temp is None else float(g.temp))
        if g.power is None:
            assert e.power_watts is None
        else:
            assert e.power_watts == pytest.approx(g.power, abs=1e-6)
        if g.gr_active is None:
            assert e.gr_engine_active is None
        else:
            assert e.gr_engine_active == pytest.approx(g.gr_active, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.text(alphabet='DCGM_FI{}=",# \n.0123456789eE+-abcUUIDgpu\\', max_size=300),
    )
)
def test_arbitrary_text_raises_nothing_but_the_project_error(text: str) -> None:
    try:
        scrape = parse_exposition(text, fetched_at=NOW)
    except ExporterFormatError:
        return
    assert all(e.uuid for e in scrape.entities)
