"""Partial failure: one probe failing leaves the other running; none loading is an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.probes import start_probes
from orb8_agent.preflight import run_preflight
from orb8_cli.main import main
from orb8_common.errors import ProbeLoadError

pytestmark = pytest.mark.kernel


def _bpf_dir_with(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "bpf"
    d.mkdir()
    for name in names:
        shutil.copy(object_path(name=name), d / f"{name}.bpf.o")
    return d


def test_one_probe_missing_the_other_runs(
    kernel_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_id: str
) -> None:
    monkeypatch.setenv("ORB8_BPF_DIR", str(_bpf_dir_with(tmp_path, "syscalls")))
    probes = start_probes(agent_id=agent_id, run_dir=tmp_path / "run")
    try:
        assert probes.flows is None and probes.syscalls is not None
        status = {s["name"]: s for s in probes.statuses()}
        assert status["syscalls"]["loadable"] is True
        assert status["flows"]["loadable"] is False
        assert "make bpf" in str(status["flows"]["message"])
    finally:
        probes.close()


def test_no_probe_loads_is_an_error_with_remedies(
    kernel_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_id: str
) -> None:
    monkeypatch.setenv("ORB8_BPF_DIR", str(_bpf_dir_with(tmp_path)))
    with pytest.raises(
        ProbeLoadError,
        match=r"no probe could be loaded: flows: .*make bpf.*"
        r"syscalls: .*make bpf",
    ):
        start_probes(agent_id=agent_id, run_dir=tmp_path / "run")


def test_preflight_and_diagnose_report_a_missing_probe(
    kernel_ready: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ORB8_BPF_DIR", str(_bpf_dir_with(tmp_path, "syscalls")))
    report = run_preflight(mount=False)
    assert not report.ok and report.any_probe_loadable
    status = report.to_status()
    assert set(status) == {"kernel", "capabilities", "probes"}
    assert [(p["name"], p["loadable"]) for p in status["probes"]] == [
        ("flows", False),
        ("syscalls", True),
        ("tcp", False),
        ("hostflows", False),
    ]
    assert main(["diagnose"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  probe flows" in out and "make bpf" in out
