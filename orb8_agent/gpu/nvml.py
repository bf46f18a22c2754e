"""Read GPUs and their processes through NVML (nvidia-ml-py's ``pynvml``).

The library object is injected so the logic runs against a fake in tests;
in production it is the ``pynvml`` module. Every NVML call that a GPU may
not support is read as "no data" rather than an error.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from orb8_agent.gpu.cgroups import CgroupRef, parse_proc_cgroup
from orb8_agent.gpu.errors import NvmlUnavailableError
from orb8_agent.gpu.model import NvmlDevice, NvmlMigInstance, NvmlProcess, NvmlReading

NVML_TEMPERATURE_GPU = 0
NVML_DEVICE_MIG_ENABLE = 1
# NVML reports "value not available" for per-process memory as ULL -1.
_NOT_AVAILABLE = 2**63
# After a failed load or init, wait this long before trying again.
RETRY_AFTER_S = 60.0


def load_pynvml() -> Any:
    """Import nvidia-ml-py's module, or say why not."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailableError(
            "nvidia-ml-py is not installed (pip install 'orb8[nvml]')"
        ) from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(lib: Any, function: str, *args: Any) -> Any:
    """Call one NVML function; None when this GPU does not support it."""
    try:
        return getattr(lib, function)(*args)
    except lib.NVMLError:
        return None


def mig_profile_from_name(name: str) -> str:
    """NVML names MIG devices like 'NVIDIA A100-SXM4-40GB MIG 1g.5gb'."""
    _, sep, profile = name.rpartition(" MIG ")
    return profile.strip() if sep else ""


class NvmlSource:
    """Initialises NVML lazily; read() returns an NvmlReading or raises NvmlUnavailableError."""

    def __init__(
        self,
        *,
        library: Any | None = None,
        loader: Callable[[], Any] = load_pynvml,
        proc_root: str = "/proc",
    ) -> None:
        self._lib = library
        self._loader = loader
        self._proc_root = proc_root
        self._initialised = False
        self._last_sample_ts: dict[str, int] = {}
        self._failure: tuple[float, str] | None = None

    def _ensure(self) -> Any:
        if self._initialised:
            return self._lib
        if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_AFTER_S:
            raise NvmlUnavailableError(self._failure[1])
        try:
            if self._lib is None:
                self._lib = self._loader()
            try:
                self._lib.nvmlInit()
            except Exception as exc:  # NVMLError subclasses, or OSError from ctypes
                reason = _text(exc) or type(exc).__name__
                raise NvmlUnavailableError(f"nvmlInit failed: {reason}") from None
        except NvmlUnavailableError as exc:
            self._failure = (time.monotonic(), str(exc))
            raise
        self._initialised = True
        self._failure = None
        return self._lib

    def close(self) -> None:
        if self._initialised and self._lib is not None:
            with contextlib.suppress(Exception):  # shutting down; the error changes nothing
                self._lib.nvmlShutdown()
            self._initialised = False

    def probe(self) -> None:
        """Raise NvmlUnavailableError unless NVML is usable."""
        self._ensure()

    def read(self, *, now: datetime) -> NvmlReading:
        lib = self._ensure()
        err = lib.NVMLError
        try:
            count = int(lib.nvmlDeviceGetCount())
        except err as exc:
            raise NvmlUnavailableError(f"nvmlDeviceGetCount failed: {_text(exc)}") from None
        devices: list[NvmlDevice] = []
        processes: list[NvmlProcess] = []
        for index in range(count):
            try:
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(lib.nvmlDeviceGetUUID(handle))
            except err:
                continue  # a GPU that fell off the bus; the others still count
            device, mig_handles = self._device(lib, handle, index, uuid)
            devices.append(device)
            if mig_handles:
                for mig_uuid, mig_handle in mig_handles:
                    processes.extend(self._processes(lib, mig_handle, mig_uuid, utilization=False))
            else:
                processes.extend(self._processes(lib, handle, uuid, utilization=True))
        return NvmlReading(read_at=now, devices=tuple(devices), processes=tuple(processes))

    def _device(
        self, lib: Any, handle: Any, index: int, uuid: str
    ) -> tuple[NvmlDevice, list[tuple[str, Any]]]:
        name = _try(lib, "nvmlDeviceGetName", handle)
        util = _try(lib, "nvmlDeviceGetUtilizationRates", handle)
        mem = _try(lib, "nvmlDeviceGetMemoryInfo", handle)
        temp = _try(lib, "nvmlDeviceGetTemperature", handle, NVML_TEMPERATURE_GPU)
        power_mw = _try(lib, "nvmlDeviceGetPowerUsage", handle)
        mig_mode = _try(lib, "nvmlDeviceGetMigMode", handle)
        instances: list[NvmlMigInstance] = []
        mig_handles: list[tuple[str, Any]] = []
        if mig_mode is not None and mig_mode[0] == NVML_DEVICE_MIG_ENABLE:
            slots = _try(lib, "nvmlDeviceGetMaxMigDeviceCount", handle) or 0
            for slot in range(int(slots)):
                mh = _try(lib, "nvmlDeviceGetMigDeviceHandleByIndex", handle, slot)
                if mh is None:
                    continue  # empty slot
                mig_uuid = _try(lib, "nvmlDeviceGetUUID", mh)
                if not mig_uuid:
                    continue
                mig_mem = _try(lib, "nvmlDeviceGetMemoryInfo", mh)
                gi = _try(lib, "nvmlDeviceGetGpuInstanceId", mh)
                mig_name = _try(lib, "nvmlDeviceGetName", mh)
                instances.append(
                    NvmlMigInstance(
                        uuid=_text(mig_uuid),
                        parent_uuid=uuid,
                        gpu_instance_id=None if gi is None else int(gi),
                        profile=mig_profile_from_name(_text(mig_name or "")),
                        memory_used_bytes=None if mig_mem is None else int(mig_mem.used),
                        memory_total_bytes=None if mig_mem is None else int(mig_mem.total),
                    )
                )
                mig_handles.append((_text(mig_uuid), mh))
        device = NvmlDevice(
            uuid=uuid,
            index=index,
            model=_text(name or ""),
            # NVML has no device utilization while MIG is on.
            utilization_percent=None if util is None or instances else float(util.gpu),
            memory_used_bytes=None if mem is None else int(mem.used),
            memory_total_bytes=None if mem is None else int(mem.total),
            temperature_celsius=None if temp is None else float(temp),
            power_watts=None if power_mw is None else float(power_mw) / 1000.0,
            mig_instances=tuple(instances),
        )
        return device, mig_handles

    def _processes(
        self, lib: Any, handle: Any, gpu_uuid: str, *, utilization: bool
    ) -> list[NvmlProcess]:
        err = lib.NVMLError
        try:
            running = list(lib.nvmlDeviceGetComputeRunningProcesses(handle))
        except err:
            return []
        sm: dict[int, float] = {}
        if utilization and running:
            sm = self._process_utilization(lib, handle, gpu_uuid)
        out: list[NvmlProcess] = []
        for proc in running:
            pid = int(proc.pid)
            used = getattr(proc, "usedGpuMemory", None)
            read, ref = self._cgroup_of(pid)
            out.append(
                NvmlProcess(
                    gpu_uuid=gpu_uuid,
                    pid=pid,
                    used_memory_bytes=None if used is None or used >= _NOT_AVAILABLE else int(used),
                    sm_util_percent=sm.get(pid) if utilization and sm else None,
                    pod_uid=None if ref is None else ref.pod_uid,
                    container_id=None if ref is None else ref.container_id,
                    cgroup_read=read,
                )
            )
        return out

    def _process_utilization(self, lib: Any, handle: Any, gpu_uuid: str) -> dict[int, float]:
        """Mean SM utilization per pid over the samples since the previous read."""
        try:
            samples = list(
                lib.nvmlDeviceGetProcessUtilization(handle, self._last_sample_ts.get(gpu_uuid, 0))
            )
        except lib.NVMLError:
            return {}  # not supported, or no samples since the last read
        sums: dict[int, list[float]] = {}
        newest = self._last_sample_ts.get(gpu_uuid, 0)
        for s in samples:
            sums.setdefault(int(s.pid), []).append(float(s.smUtil))
            newest = max(newest, int(s.timeStamp))
        self._last_sample_ts[gpu_uuid] = newest
        return {pid: sum(v) / len(v) for pid, v in sums.items()}

    def _cgroup_of(self, pid: int) -> tuple[bool, CgroupRef | None]:
        try:
            with open(os.path.join(self._proc_root, str(pid), "cgroup"), encoding="utf-8") as f:
                return True, parse_proc_cgroup(f.read())
        except OSError:
            return False, None  # the process exited, or the agent lacks hostPID
