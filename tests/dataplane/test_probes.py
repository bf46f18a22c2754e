"""Partial failure: one probe failing leaves the other running; none loading is an error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.probes import start_probes
from orb8_agent.preflight import BTF_PATH, run_preflight
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


@pytest.mark.parametrize("btf", ["kernel", "missing"])
def test_a_btf_file_other_than_the_kernels_relocates_or_fails_naming_btf(
    kernel_ready: None, tmp_path: Path, agent_id: str, btf: str
) -> None:
    """--btf-path: the probes relocate against the given BTF file (the kernel's own here,
    given by path); a file that is not there fails every probe with ENOENT naming BTF,
    and preflight reports the BTF check failed with the remedy."""
    path = BTF_PATH if btf == "kernel" else tmp_path / "vmlinux"
    libbpf.set_btf_path(path=path)
    try:
        if btf == "kernel":
            probes = start_probes(agent_id=agent_id, run_dir=tmp_path / "run")
            try:
                assert probes.flows is not None and probes.syscalls is not None
            finally:
                probes.close()
            return
        with pytest.raises(ProbeLoadError) as raised:
            start_probes(agent_id=agent_id, run_dir=tmp_path / "run")
        for probe in ("flows", "syscalls"):
            assert re.search(
                rf"{probe}: load {probe}\.bpf\.o: ENOENT .*check BTF", str(raised.value)
            )
        assert "failed to parse target BTF" in str(raised.value)
        report = run_preflight(mount=False, load_probes=False, btf_path=path)
        check = next(c for c in report.checks if c.name == "BTF")
        assert not check.ok and str(path) in check.message and "--btf-path" in check.remedy
        assert report.to_status()["kernel"]["btf"] is False
    finally:
        libbpf.set_btf_path(path=None)
