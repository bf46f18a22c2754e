"""Real-protocol stand-ins for the GPU sources: dcgm-exporter over HTTP, the
kubelet's pod-resources v1 gRPC service on a unix socket, and their faults.

The exporter text is generated from data (``FakeGpu``) in the exact shape
dcgm-exporter prints: ``# HELP``/``# TYPE`` per metric, then one line per GPU
(or MIG instance) with labels in the exporter's order.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from orb8_agent.gpu.podresources import api_pb2, api_pb2_grpc
from orb8_dev.controlplane import free_port

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
DRIVER = "550.54.15"
INT64_NOT_SUPPORTED = 9223372036854775794  # DCGM_INT64_BLANK + 2
FP64_BLANK = 140737488355328.0


def gpu_uuid(i: int) -> str:
    return f"GPU-{i:08x}-5d1c-4c2a-9f0e-{i:012x}"


def mig_uuid(i: int, gi: int) -> str:
    return f"MIG-{i:08x}-{gi:04x}-4b1e-8a7d-{i * 100 + gi:012x}"


@dataclass
class Pod:
    namespace: str
    pod: str
    container: str


@dataclass
class FakeMig:
    gi_id: int
    profile: str
    fb_used_mib: int | None = 1000
    fb_free_mib: int | None = 8000
    gr_active: float | None = 0.5
    pods: list[Pod] = field(default_factory=list)


@dataclass
class FakeGpu:
    index: int
    model: str = H100
    util: float | None = 87
    fb_used_mib: int | None = 40960
    fb_free_mib: int | None = 40600
    temp: float | None = 61
    power: float | None = 412.5
    sm_clock: float | None = 1980
    gr_active: float | None = None
    pods: list[Pod] = field(default_factory=list)
    mig: list[FakeMig] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        return gpu_uuid(self.index)


_HELP = {
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "Total number of PCIe retries.",
}
_DEVICE_FIELDS = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE")
_FLOAT_FIELDS = {"DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"}


def _fmt(name: str, value: float) -> str:
    # The exporter prints floats with six decimals and integers bare.
    return f"{value:.6f}" if name in _FLOAT_FIELDS else str(int(value))


def exposition(
    gpus: Sequence[FakeGpu],
    *,
    hostname: str = "node-1",
    hostname_label: str = "Hostname",
    kubernetes_mode: bool = False,
    old_pod_labels: bool = False,
    extra_fields: int = 0,
) -> str:
    """dcgm-exporter's /metrics body for these GPUs.

    ``extra_fields`` adds that many further per-GPU gauges orb8 does not read,
    to reach the size of a real exporter's default field set.
    """
    pod_keys = (
        ("container_name", "pod_namespace", "pod_name")
        if old_pod_labels
        else (
            "container",
            "namespace",
            "pod",
        )
    )

    def labels(g: FakeGpu, mig: FakeMig | None, pod: Pod | None) -> str:
        parts = [
            f'gpu="{g.index}"',
            f'UUID="{g.uuid}"',
            f'pci_bus_id="00000000:{g.index + 7:02X}:00.0"',
            f'device="nvidia{g.index}"',
            f'modelName="{g.model}"',
        ]
        if mig is not None:
            parts += [f'GPU_I_PROFILE="{mig.profile}"', f'GPU_I_ID="{mig.gi_id}"']
        parts += [f'{hostname_label}="{hostname}"', f'DCGM_FI_DRIVER_VERSION="{DRIVER}"']
        if kubernetes_mode:
            c, n, p = (pod.container, pod.namespace, pod.pod) if pod else ("", "", "")
            parts += [f'{pod_keys[0]}="{c}"', f'{pod_keys[1]}="{n}"', f'{pod_keys[2]}="{p}"']
        return "{" + ",".join(parts) + "}"

    def device_value(g: FakeGpu, name: str) -> float | None:
        return {
            "DCGM_FI_DEV_SM_CLOCK": g.sm_clock,
            "DCGM_FI_DEV_GPU_TEMP": g.temp,
            "DCGM_FI_DEV_POWER_USAGE": g.power,
            "DCGM_FI_DEV_GPU_UTIL": g.util,
            "DCGM_FI_DEV_FB_FREE": g.fb_free_mib,
            "DCGM_FI_DEV_FB_USED": g.fb_used_mib,
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE": g.gr_active,
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        }[name]

    def mig_value(m: FakeMig, name: str) -> float | None:
        return {
            "DCGM_FI_DEV_FB_FREE": m.fb_free_mib,
            "DCGM_FI_DEV_FB_USED": m.fb_used_mib,
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE": m.gr_active,
        }.get(name)

    out: list[str] = []
    for name, text in _HELP.items():
        lines: list[str] = []
        for g in gpus:
            if g.mig:
                if name in _DEVICE_FIELDS:
                    v = device_value(g, name)
                    if v is not None:
                        lines.append(f"{name}{labels(g, None, None)} {_fmt(name, v)}")
                for m in g.mig:
                    mv = mig_value(m, name)
                    if mv is None:
                        continue
                    mig_pods: list[Pod | None] = list(m.pods) or [None]
                    for mig_pod in mig_pods:
                        lines.append(f"{name}{labels(g, m, mig_pod)} {_fmt(name, mv)}")
                continue
            v = device_value(g, name)
            if v is None:
                continue
            # Kubernetes mode: dcgm-exporter labels at most one pod per GPU,
            # even when several pods share it (the known time-slicing bug).
            pod = g.pods[0] if g.pods else None
            lines.append(f"{name}{labels(g, None, pod)} {_fmt(name, v)}")
        if lines:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {'counter' if 'COUNTER' in name else 'gauge'}")
            out.extend(lines)
    for k in range(extra_fields):
        name = f"DCGM_FI_DEV_EXTRA_{k}"
        out.append(f"# HELP {name} A field orb8 does not read.")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{labels(g, None, None)} {1000 + k}" for g in gpus)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- HTTP


@dataclass
class ExporterBehavior:
    """What the fake exporter does on the next request."""

    body: str = ""
    mode: str = "ok"  # ok | slow | trickle | garbage | truncated-body | http-500 | chunked
    delay_s: float = 0.0
    requests: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _ExporterHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        # A client that gave up (the timeout tests) is not an error here.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer()

    def _answer(self) -> None:
        b = self.server.behavior
        b.requests += 1
        if self.path != "/metrics":
            self.send_error(404)
            return
        if b.mode == "slow":
            time.sleep(b.delay_s)
        if b.mode == "http-500":
            self.send_error(500, "DCGM failed")
            return
        data = b.body.encode()
        if b.mode == "garbage":
            data = b"<html><body>\x00\xff not metrics {{{ = }\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        if b.mode in ("chunked", "chunked-truncated"):
            # Go's net/http streams a large /metrics body like this.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            end = len(data) if b.mode == "chunked" else len(data) // 2
            for i in range(0, end, 1000):
                part = data[i : min(i + 1000, end)]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            if b.mode == "chunked":
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
            return
        if b.mode == "trickle":
            # Each write arrives well within a per-read timeout; the whole does not.
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(0, len(data), 200):
                self.wfile.write(data[i : i + 200])
                self.wfile.flush()
                time.sleep(b.delay_s)
            return
        if b.mode == "truncated-body":
            # Promise the whole body, send half, hang up.
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    behavior: ExporterBehavior


@dataclass
class FakeExporter:
    host: str
    port: int
    behavior: ExporterBehavior


@contextlib.contextmanager
def fake_exporter(behavior: ExporterBehavior | None = None) -> Iterator[FakeExporter]:
    """dcgm-exporter on 127.0.0.1 with an ephemeral port."""
    server = _ExporterHTTPServer(("127.0.0.1", 0), _Handler)
    server.behavior = behavior or ExporterBehavior()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield FakeExporter(
            host="127.0.0.1", port=server.server_address[1], behavior=server.behavior
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


# ---------------------------------------------------------------- gRPC


@dataclass
class Allocation:
    namespace: str
    pod: str
    container: str
    resource: str
    device_ids: list[str]


@dataclass
class KubeletBehavior:
    allocations: list[Allocation] = field(default_factory=list)
    allocatable: list[tuple[str, str]] = field(default_factory=list)
    mode: str = "ok"  # ok | unavailable | no-allocatable
    # Per-RPC answers: a grpc.StatusCode name ("INTERNAL", "UNAVAILABLE", ...)
    # makes that call fail with it; "OK" answers normally.
    list_status: str = "OK"
    allocatable_status: str = "OK"
    one_id_per_entry: bool = True  # current kubelets; False groups ids like old ones
    calls: int = 0


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, behavior: KubeletBehavior) -> None:
        self.b = behavior

    def _pods(self) -> list[api_pb2.PodResources]:
        pods: dict[tuple[str, str], dict[str, list[api_pb2.ContainerDevices]]] = {}
        for a in self.b.allocations:
            ctrs = pods.setdefault((a.namespace, a.pod), {})
            devices = ctrs.setdefault(a.container, [])
            if self.b.one_id_per_entry:
                devices.extend(
                    api_pb2.ContainerDevices(resource_name=a.resource, device_ids=[d])
                    for d in a.device_ids
                )
            else:
                devices.append(
                    api_pb2.ContainerDevices(resource_name=a.resource, device_ids=a.device_ids)
                )
        return [
            api_pb2.PodResources(
                name=pod,
                namespace=ns,
                containers=[
                    api_pb2.ContainerResources(name=c, devices=devs, cpu_ids=[2, 3])
                    for c, devs in ctrs.items()
                ],
            )
            for (ns, pod), ctrs in pods.items()
        ]

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.b.calls += 1
        if self.b.mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet is restarting")
        if self.b.list_status != "OK":
            context.abort(grpc.StatusCode[self.b.list_status], "injected List failure")
        return api_pb2.ListPodResourcesResponse(pod_resources=self._pods())

    def GetAllocatableResources(self, request: Any, context: Any) -> Any:
        if self.b.mode == "no-allocatable":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "not enabled")
        if self.b.allocatable_status != "OK":
            context.abort(
                grpc.StatusCode[self.b.allocatable_status],
                "injected GetAllocatableResources failure",
            )
        devices = [
            api_pb2.ContainerDevices(resource_name=r, device_ids=[d]) for r, d in self.b.allocatable
        ]
        return api_pb2.AllocatableResourcesResponse(devices=devices, cpu_ids=[0, 1, 2, 3])

    def Get(self, request: Any, context: Any) -> api_pb2.GetPodResourcesResponse:
        for p in self._pods():
            if p.name == request.pod_name and p.namespace == request.pod_namespace:
                return api_pb2.GetPodResourcesResponse(pod_resources=p)
        context.abort(grpc.StatusCode.NOT_FOUND, "pod not found")
        raise AssertionError("unreachable")


@dataclass
class FakeKubelet:
    socket_path: str
    behavior: KubeletBehavior


@contextlib.contextmanager
def fake_kubelet(directory: str, behavior: KubeletBehavior | None = None) -> Iterator[FakeKubelet]:
    """The pod-resources v1 service on <directory>/kubelet.sock."""
    path = os.path.join(directory, "kubelet.sock")
    b = behavior or KubeletBehavior()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(b), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{path}")
    server.start()
    try:
        yield FakeKubelet(socket_path=path, behavior=b)
    finally:
        server.stop(grace=None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def refusing_socket(directory: str) -> Iterator[str]:
    """A unix socket file that nobody accepts on: connect() is refused."""
    path = os.path.join(directory, "kubelet.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening
    try:
        yield path
    finally:
        s.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
