"""The pod-resources client against a real gRPC server on a unix socket."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from orb8_agent.gpu.errors import PodResourcesError
from orb8_agent.gpu.model import AllocatableDevice, DeviceAllocation
from orb8_agent.gpu.podresources import api_pb2
from orb8_agent.gpu.podresources.client import is_gpu_resource, read_pod_resources
from orb8_dev.gpu_servers import (
    Allocation,
    KubeletBehavior,
    fake_kubelet,
    gpu_uuid,
    refusing_socket,
)
from tests.gpu import scenarios

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


def test_field_numbers_match_the_kubelet_api() -> None:
    def numbers(msg: type) -> dict[str, int]:
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert numbers(api_pb2.ListPodResourcesResponse) == {"pod_resources": 1}
    assert numbers(api_pb2.PodResources) == {"name": 1, "namespace": 2, "containers": 3}
    assert numbers(api_pb2.ContainerResources) == {
        "name": 1,
        "devices": 2,
        "cpu_ids": 3,
        "memory": 4,
        "dynamic_resources": 5,
    }
    assert numbers(api_pb2.ContainerDevices) == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert numbers(api_pb2.AllocatableResourcesResponse) == {
        "devices": 1,
        "cpu_ids": 2,
        "memory": 3,
    }
    assert numbers(api_pb2.TopologyInfo) == {"nodes": 1}
    assert numbers(api_pb2.NUMANode) == {"ID": 1}
    assert numbers(api_pb2.ContainerMemory) == {"memory_type": 1, "size": 2, "topology": 3}
    assert numbers(api_pb2.GetPodResourcesRequest) == {"pod_name": 1, "pod_namespace": 2}
    assert numbers(api_pb2.GetPodResourcesResponse) == {"pod_resources": 1}
    service = api_pb2.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert [m.name for m in service.methods] == ["List", "GetAllocatableResources", "Get"]


def test_lists_gpu_allocations_and_allocatable_devices(sockdir: str) -> None:
    sc = scenarios.time_sliced()
    extra = Allocation("infer", "web-a", "sidecar", "example.com/fpga", ["fpga-0"])
    behavior = KubeletBehavior(allocations=[*sc.allocations, extra], allocatable=sc.allocatable)
    with fake_kubelet(sockdir, behavior) as kubelet:
        view = read_pod_resources(socket_path=kubelet.socket_path, timeout_s=2, now=NOW)
    assert view.fetched_at == NOW
    assert sorted(view.allocations, key=lambda a: (a.namespace, a.pod)) == [
        DeviceAllocation("batch", "solo", "main", "nvidia.com/gpu", gpu_uuid(1)),
        DeviceAllocation("infer", "web-a", "server", "nvidia.com/gpu", f"{gpu_uuid(0)}::0"),
        DeviceAllocation("infer", "web-b", "server", "nvidia.com/gpu", f"{gpu_uuid(0)}::1"),
        DeviceAllocation("infer", "web-c", "server", "nvidia.com/gpu", f"{gpu_uuid(0)}::2"),
    ]
    assert len(view.allocatable) == 5
    assert AllocatableDevice("nvidia.com/gpu", f"{gpu_uuid(0)}::3") in view.allocatable


@pytest.mark.parametrize("one_id_per_entry", [True, False])
def test_grouped_and_per_id_device_entries_read_the_same(
    sockdir: str, one_id_per_entry: bool
) -> None:
    alloc = Allocation("ml", "trainer", "main", "nvidia.com/gpu", [gpu_uuid(0), gpu_uuid(1)])
    behavior = KubeletBehavior(allocations=[alloc], one_id_per_entry=one_id_per_entry)
    with fake_kubelet(sockdir, behavior) as kubelet:
        view = read_pod_resources(socket_path=kubelet.socket_path, timeout_s=2, now=NOW)
    assert [a.device_id for a in view.allocations] == [gpu_uuid(0), gpu_uuid(1)]


def test_mig_resources_are_read(sockdir: str) -> None:
    sc = scenarios.mig()
    behavior = KubeletBehavior(allocations=sc.allocations, allocatable=sc.allocatable)
    with fake_kubelet(sockdir, behavior) as kubelet:
        view = read_pod_resources(socket_path=kubelet.socket_path, timeout_s=2, now=NOW)
    assert {a.resource_name for a in view.allocations} == {
        "nvidia.com/mig-3g.40gb",
        "nvidia.com/mig-2g.20gb",
    }
    assert all(a.device_id.startswith("MIG-") for a in view.allocations)


def test_missing_get_allocatable_is_tolerated(sockdir: str) -> None:
    sc = scenarios.whole_gpus(n=2)
    behavior = KubeletBehavior(
        allocations=sc.allocations, allocatable=sc.allocatable, mode="no-allocatable"
    )
    with fake_kubelet(sockdir, behavior) as kubelet:
        view = read_pod_resources(socket_path=kubelet.socket_path, timeout_s=2, now=NOW)
    assert len(view.allocations) == 2
    assert view.allocatable == ()


def test_missing_socket_says_what_to_mount(sockdir: str) -> None:
    path = os.path.join(sockdir, "kubelet.sock")
    with pytest.raises(PodResourcesError, match="not found; mount the host's"):
        read_pod_resources(socket_path=path, timeout_s=1, now=NOW)


def test_a_plain_file_is_not_a_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "kubelet.sock")
    with open(path, "w") as f:
        f.write("x")
    with pytest.raises(PodResourcesError, match="is not a unix socket"):
        read_pod_resources(socket_path=path, timeout_s=1, now=NOW)


def test_refusing_socket_is_reported_unavailable(sockdir: str) -> None:
    with refusing_socket(sockdir) as path, pytest.raises(PodResourcesError) as info:
        read_pod_resources(socket_path=path, timeout_s=1, now=NOW)
    assert "List" in str(info.value)
    assert "UNAVAILABLE" in str(info.value)
    assert info.value.retryable


def test_server_answering_unavailable_is_reported(sockdir: str) -> None:
    with fake_kubelet(sockdir, KubeletBehavior(mode="unavailable")) as kubelet:
        with pytest.raises(PodResourcesError, match="UNAVAILABLE"):
            read_pod_resources(socket_path=kubelet.socket_path, timeout_s=2, now=NOW)
        assert kubelet.behavior.calls == 1


@pytest.mark.parametrize(
    ("name", "gpu"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/gpu.shared", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("nvidia.com/mig-3g.40gb", True),
        ("amd.com/gpu", False),
        ("example.com/fpga", False),
    ],
)
def test_is_gpu_resource(name: str, gpu: bool) -> None:
    assert is_gpu_resource(name) is gpu
