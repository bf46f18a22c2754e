"""Read GPU allocations from the kubelet's pod-resources v1 API on its unix socket."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import grpc

from orb8_agent.gpu.errors import PodResourcesError
from orb8_agent.gpu.model import AllocatableDevice, DeviceAllocation, PodResourcesView
from orb8_agent.gpu.podresources import api_pb2

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
_LIST = "/v1.PodResourcesLister/List"
_ALLOCATABLE = "/v1.PodResourcesLister/GetAllocatableResources"


def is_gpu_resource(name: str) -> bool:
    """nvidia.com/gpu, its renamed shared form nvidia.com/gpu.shared, and nvidia.com/mig-*."""
    return name.startswith("nvidia.com/gpu") or name.startswith("nvidia.com/mig-")


def _device_ids(devices: Iterable[api_pb2.ContainerDevices]) -> Iterable[tuple[str, str]]:
    # Current kubelets send one entry per id; older ones grouped ids per resource.
    for dev in devices:
        if is_gpu_resource(dev.resource_name):
            for device_id in dev.device_ids:
                yield dev.resource_name, device_id


def allocations_from_response(resp: api_pb2.ListPodResourcesResponse) -> list[DeviceAllocation]:
    out: list[DeviceAllocation] = []
    for pod in resp.pod_resources:
        for ctr in pod.containers:
            for resource, device_id in _device_ids(ctr.devices):
                out.append(
                    DeviceAllocation(
                        namespace=pod.namespace,
                        pod=pod.name,
                        container=ctr.name,
                        resource_name=resource,
                        device_id=device_id,
                    )
                )
    return out


def _check_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PodResourcesError(
            f"pod-resources socket {path} not found; mount the host's "
            "/var/lib/kubelet/pod-resources directory into the agent"
        ) from None
    except PermissionError:
        raise PodResourcesError(f"pod-resources socket {path}: permission denied") from None
    except OSError as exc:
        raise PodResourcesError(f"pod-resources socket {path}: {exc.strerror or exc}") from None
    if not stat.S_ISSOCK(mode):
        raise PodResourcesError(f"{path} is not a unix socket")


def _rpc_error(call: str, path: str, exc: grpc.RpcError) -> PodResourcesError:
    code: Any = exc.code() if hasattr(exc, "code") else None
    name = getattr(code, "name", "UNKNOWN")
    details = exc.details() if hasattr(exc, "details") else ""
    if name == "UNAVAILABLE":
        hint = "the kubelet is not accepting connections on it"
    elif name == "DEADLINE_EXCEEDED":
        hint = "no answer in time"
    else:
        hint = details or name
    return PodResourcesError(f"pod-resources {call} on {path} failed ({name}): {hint}")


def read_pod_resources(*, socket_path: str, timeout_s: float, now: datetime) -> PodResourcesView:
    """List GPU allocations and the allocatable GPU devices. Blocking; run it in a thread.

    GetAllocatableResources is optional: kubelets before 1.23 (or with the
    feature off) answer UNIMPLEMENTED, and the view then has no allocatable list.
    Any other failure of it leaves List's allocations standing, with
    ``problem`` saying what failed; only a failed List raises.
    """
    _check_socket(socket_path)
    with grpc.insecure_channel(f"unix://{os.path.abspath(socket_path)}") as channel:
        list_call = channel.unary_unary(
            _LIST,
            request_serializer=api_pb2.ListPodResourcesRequest.SerializeToString,
            response_deserializer=api_pb2.ListPodResourcesResponse.FromString,
        )
        alloc_call = channel.unary_unary(
            _ALLOCATABLE,
            request_serializer=api_pb2.AllocatableResourcesRequest.SerializeToString,
            response_deserializer=api_pb2.AllocatableResourcesResponse.FromString,
        )
        try:
            listed = list_call(api_pb2.ListPodResourcesRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _rpc_error("List", socket_path, exc) from None
        allocatable: list[AllocatableDevice] = []
        problem = ""
        try:
            resp = alloc_call(api_pb2.AllocatableResourcesRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                # List answered: its allocations still say who holds which GPU.
                problem = str(_rpc_error("GetAllocatableResources", socket_path, exc))
        else:
            allocatable = [
                AllocatableDevice(resource_name=r, device_id=d)
                for r, d in _device_ids(resp.devices)
            ]
    return PodResourcesView(
        fetched_at=now,
        allocations=tuple(allocations_from_response(listed)),
        allocatable=tuple(allocatable),
        problem=problem,
    )
