"""A stand-in for the pynvml module: the NVML C library has no counterpart on
machines without a GPU, so tests inject this object instead. It mirrors the
call shapes nvidia-ml-py exposes, including raising NVMLError for unsupported
queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


class NVMLError(Exception):
    pass


@dataclass
class FakeProc:
    pid: int
    used_mib: int | None
    sm_util: float | None = None  # None: no utilization sample for this pid


@dataclass
class FakeMigDevice:
    uuid: str
    gi_id: int
    name: str  # e.g. "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    used: int
    total: int
    procs: list[FakeProc] = field(default_factory=list)


@dataclass
class FakeNvmlDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util: int | None = 50
    used: int = 10 * 2**30
    total: int = 80 * 2**30
    temp: int | None = 60
    power_mw: int | None = 300_000
    procs: list[FakeProc] = field(default_factory=list)
    mig: list[FakeMigDevice] = field(default_factory=list)
    process_utilization_supported: bool = True


class FakeNvml:
    NVMLError = NVMLError

    def __init__(self, devices: list[FakeNvmlDevice], *, init_error: str | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.utilization_queries: list[int] = []

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        return self.devices[i]

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return str(h.uuid)

    def nvmlDeviceGetName(self, h: Any) -> bytes:
        return str(h.name).encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        if isinstance(h, FakeMigDevice) or h.util is None or h.mig:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=h.util, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        return SimpleNamespace(total=h.total, used=h.used, free=h.total - h.used)

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        if h.temp is None:
            raise NVMLError("Not Supported")
        return int(h.temp)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        if h.power_mw is None:
            raise NVMLError("Not Supported")
        return int(h.power_mw)

    def nvmlDeviceGetMigMode(self, h: Any) -> tuple[int, int]:
        return (1, 1) if h.mig else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, i: int) -> Any:
        if i >= len(h.mig):
            raise NVMLError("Not Found")
        return h.mig[i]

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:
        return int(h.gi_id)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        return [
            SimpleNamespace(
                pid=p.pid,
                usedGpuMemory=None if p.used_mib is None else p.used_mib * 2**20,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
            for p in h.procs
        ]

    def nvmlDeviceGetProcessUtilization(self, h: Any, last_seen: int) -> list[Any]:
        self.utilization_queries.append(last_seen)
        if not h.process_utilization_supported:
            raise NVMLError("Not Supported")
        samples = [
            SimpleNamespace(
                pid=p.pid,
                timeStamp=1_000_000 + i,
                smUtil=p.sm_util,
                memUtil=0,
                encUtil=0,
                decUtil=0,
            )
            for i, p in enumerate(h.procs)
            if p.sm_util is not None
        ]
        if not samples:
            raise NVMLError("Not Found")
        return samples
