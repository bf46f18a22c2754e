"""The GPU check command (bench/gpu_check.sh runs it on real hardware)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orb8_agent.gpu import check
from orb8_agent.gpu.nvml import NvmlSource
from orb8_dev.gpu_servers import ExporterBehavior, closed_port, exposition, fake_exporter, gpu_uuid
from tests.gpu import scenarios
from tests.gpu.fake_nvml import FakeNvml, FakeNvmlDevice, FakeProc

UID = "aaaaaaaa-1111-4111-8111-111111111111"


def test_prints_devices_and_processes_with_their_pods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(f"0::/kubepods/besteffort/pod{UID}/{'e' * 64}\n")
    lib = FakeNvml(
        [FakeNvmlDevice(uuid=gpu_uuid(0), procs=[FakeProc(42, used_mib=512, sm_util=33)])]
    )
    monkeypatch.setattr(
        check, "NvmlSource", lambda: NvmlSource(library=lib, proc_root=str(tmp_path))
    )
    assert check.main(["--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert f"[0] {gpu_uuid(0)} NVIDIA H100 80GB HBM3: util 50.0%, mem 10.0 GiB/80.0 GiB" in out
    assert (
        f"pid 42 on {gpu_uuid(0)}: mem 512.0 MiB, sm 33.0%, pod {UID} container {'e' * 64}" in out
    )


def test_exits_2_without_nvml(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = FakeNvml([], init_error="Driver Not Loaded")
    monkeypatch.setattr(check, "NvmlSource", lambda: NvmlSource(library=lib))
    assert check.main(["--samples", "1"]) == 2
    assert "nvml: unavailable: nvmlInit failed: Driver Not Loaded" in capsys.readouterr().out


def test_scrapes_an_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    text = exposition(scenarios.mig(labels=True).gpus, kubernetes_mode=True)
    with fake_exporter(ExporterBehavior(body=text)) as ex:
        assert check.check_exporter(url=f"http://{ex.host}:{ex.port}/metrics", timeout_s=2) == 0
    out = capsys.readouterr().out
    assert "4 GPU(s)/MIG instance(s)" in out
    assert "MIG 3g.40gb gi=1 NVIDIA A100-SXM4-80GB: util -, gr 0.8" in out
    assert "ml/big/main" in out
    assert check.check_exporter(url=f"http://127.0.0.1:{closed_port()}/metrics", timeout_s=1) == 3
