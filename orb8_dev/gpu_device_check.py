"""The NVML path on a real GPU, end to end: ``python -m orb8_dev.gpu_device_check --out DIR``.

Two GPU processes (orb8_dev.cuda_load) run in pod-shaped cgroups, as two pods
whose containers the kubelet's pod-resources service (the real gRPC protocol,
from orb8_dev.gpu_servers) says share the first GPU. Then:

1. NvmlSource must list the GPU and both processes, each tied to its pod uid
   and container id through /proc/<pid>/cgroup;
2. the agent's collector, in NVML mode, must give each pod a row on that GPU
   whose memory is the memory NVML lists for that pod's process.

Writes gpu-check.json (what was read, what was asserted) into --out.
Exit 0: every check held; 1: a check failed; 2: no usable GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
NAMESPACE = "gpu-check"


class CheckFailed(AssertionError):
    pass


def _pod_cgroup(pod_uid: str, container_id: str) -> Path | None:
    """A systemd-driver kubepods path; None when cgroup v2 is not writable here."""
    slice_uid = pod_uid.replace("-", "_")
    path = (
        CGROUP_ROOT
        / "kubepods.slice"
        / f"kubepods-pod{slice_uid}.slice"
        / f"cri-containerd-{container_id}.scope"
    )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


@contextlib.contextmanager
def _gpu_process(*, mib: int, seconds: float, cgroup: Path | None) -> Iterator[int]:
    cmd = [sys.executable, "-m", "orb8_dev.cuda_load", "--mib", str(mib)]
    cmd += ["--seconds", str(seconds)]
    if cgroup is not None:
        cmd += ["--cgroup", str(cgroup)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("ready"):
            raise CheckFailed(f"cuda_load did not start (exit {proc.wait(timeout=30)})")
        yield proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value") and not isinstance(value, int | float | str):
        return str(value.value)
    return value


def _wait_for(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for {what}")
        time.sleep(0.5)


def run(*, report: dict[str, Any]) -> None:
    from orb8_agent.gpu.collector import GpuCollector
    from orb8_agent.gpu.config import GpuSettings
    from orb8_agent.gpu.model import TargetContainer, TargetPod
    from orb8_agent.gpu.nvml import NvmlSource
    from orb8_dev.gpu_servers import Allocation, KubeletBehavior, fake_kubelet

    report.update(started=datetime.now(UTC).isoformat(), checks=[])

    def passed(name: str, detail: str) -> None:
        report["checks"].append({"check": name, "ok": True, "detail": detail})
        print(f"ok    {name}: {detail}", flush=True)

    source = NvmlSource()
    first = source.read(now=datetime.now(UTC))
    if not first.devices:
        raise CheckFailed("NVML lists no GPU")
    gpu = first.devices[0]
    report["devices"] = _plain(first.devices)
    passed("nvml devices", f"{len(first.devices)} GPU(s); [0] {gpu.uuid} {gpu.model}")
    if not gpu.memory_total_bytes:
        raise CheckFailed(f"{gpu.uuid} has no memory total")

    pods = {
        name: (str(uuid.uuid4()), uuid.uuid4().hex + uuid.uuid4().hex, mib)
        for name, mib in (("trainer", 768), ("notebook", 256))
    }
    cgroups = {name: _pod_cgroup(uid, cid) for name, (uid, cid, _) in pods.items()}
    report["cgroups_writable"] = all(cgroups.values())
    with contextlib.ExitStack() as stack:
        pids = {
            name: stack.enter_context(_gpu_process(mib=mib, seconds=90, cgroup=cgroups[name]))
            for name, (_, _, mib) in pods.items()
        }
        report["pids"] = pids

        def both_listed() -> Any:
            reading = source.read(now=datetime.now(UTC))
            seen = {p.pid: p for p in reading.processes}
            return reading if all(pid in seen for pid in pids.values()) else None

        reading = _wait_for(both_listed, timeout=60, what="NVML to list both GPU processes")
        # Per-process utilization is sampled: read again after the spin kernels ran.
        time.sleep(3.0)
        reading = source.read(now=datetime.now(UTC))
        report["processes"] = _plain(reading.processes)
        by_pid = {p.pid: p for p in reading.processes}
        for name, pid in pids.items():
            proc = by_pid.get(pid)
            if proc is None:
                raise CheckFailed(f"NVML lost {name}'s process {pid}")
            uid, cid, mib = pods[name]
            if cgroups[name] is not None and (proc.pod_uid, proc.container_id) != (uid, cid):
                raise CheckFailed(
                    f"{name}: pid {pid} attributed to {proc.pod_uid}/{proc.container_id}, "
                    f"expected {uid}/{cid}"
                )
            if not proc.used_memory_bytes or proc.used_memory_bytes < mib << 20:
                raise CheckFailed(f"{name}: NVML memory {proc.used_memory_bytes} < {mib} MiB")
            passed(
                f"nvml process {name}",
                f"pid {pid} pod {proc.pod_uid} container {str(proc.container_id)[:12]} "
                f"mem {proc.used_memory_bytes >> 20} MiB sm {proc.sm_util_percent}",
            )

        with tempfile.TemporaryDirectory() as sock_dir:
            behavior = KubeletBehavior(
                allocations=[
                    Allocation(NAMESPACE, name, "app", "nvidia.com/gpu", [gpu.uuid])
                    for name in pods
                ],
                allocatable=[("nvidia.com/gpu", gpu.uuid)],
            )
            with fake_kubelet(sock_dir, behavior) as kubelet:
                collector = GpuCollector(
                    node="gpu-check",
                    settings=GpuSettings(source="nvml"),
                    podresources_socket=kubelet.socket_path,
                    nvml=source,
                )
                targets = [
                    TargetPod(
                        namespace=NAMESPACE,
                        name=name,
                        uid=uid,
                        containers=(TargetContainer(name="app", id=f"containerd://{cid}"),),
                    )
                    for name, (uid, cid, _) in pods.items()
                ]
                # NVML samples per-process utilization; the collector reads the
                # samples since the previous read, so give it a window of many
                # time slices, as the agent's 15 s interval does.
                time.sleep(3.0)
                snapshot = collector.scrape_blocking(targets=targets)
        device_util = source.read(now=datetime.now(UTC)).devices[0].utilization_percent
        report["snapshot"] = _plain(snapshot)
        report["device_util_after"] = device_util
        rows = {row.pod: row for row in snapshot.rows}
        for name, pid in pids.items():
            row = rows.get(name)
            if row is None:
                raise CheckFailed(f"the collector has no row for {name}: {sorted(rows)}")
            uses = [u for u in row.gpus if u.uuid == gpu.uuid]
            if not uses:
                raise CheckFailed(f"{name}'s row has no use of {gpu.uuid}: {_plain(row)}")
            use = uses[0]
            nvml_mem = by_pid[pid].used_memory_bytes
            if cgroups[name] is not None and use.memory_used_bytes != nvml_mem:
                raise CheckFailed(
                    f"{name}: collector memory {use.memory_used_bytes} != NVML {nvml_mem}"
                )
            if cgroups[name] is not None and not use.utilization_percent:
                raise CheckFailed(f"{name} spins on the GPU but its utilization is {use}")
            passed(
                f"collector row {name}",
                f"{use.sharing} on {use.uuid}: mem {use.memory_used_bytes} "
                f"util {use.utilization_percent}",
            )
        pod_utils = [u.utilization_percent or 0.0 for r in snapshot.rows for u in r.gpus]
        if device_util is not None and abs(sum(pod_utils) - device_util) > 25:
            raise CheckFailed(f"pods' utilization {pod_utils} does not add up to {device_util}")
        passed("utilization split", f"pods {pod_utils} vs device {device_util}")
    source.close()
    for path in cgroups.values():
        if path is not None:
            with contextlib.suppress(OSError):
                path.rmdir()
                path.parent.rmdir()
    report["finished"] = datetime.now(UTC).isoformat()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orb8_dev.gpu_device_check", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from orb8_common.errors import SourceUnavailableError

    report: dict[str, Any] = {}
    rc = 0
    try:
        run(report=report)
    except SourceUnavailableError as exc:
        report["error"], rc = f"NVML unavailable: {exc}", 2
    except CheckFailed as exc:
        report["error"], rc = str(exc), 1
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu_device_check: {'all checks held' if rc == 0 else report.get('error')}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
