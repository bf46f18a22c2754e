"""Node scenarios as data: the GPUs dcgm-exporter sees, what the kubelet
allocated, and which pods a session targets."""

from __future__ import annotations

from dataclasses import dataclass, field

from orb8_agent.gpu.model import TargetContainer, TargetPod
from orb8_dev.gpu_servers import A100, Allocation, FakeGpu, FakeMig, Pod, gpu_uuid, mig_uuid

GPU = "nvidia.com/gpu"


@dataclass
class Scenario:
    gpus: list[FakeGpu]
    allocations: list[Allocation]
    allocatable: list[tuple[str, str]]
    targets: list[TargetPod] = field(default_factory=list)


def target(ns: str, pod: str, *containers: str) -> TargetPod:
    return TargetPod(
        namespace=ns,
        name=pod,
        uid=f"{abs(hash((ns, pod))) % 10**8:08d}-0000-4000-8000-000000000000",
        containers=tuple(TargetContainer(name=c) for c in containers or ("main",)),
    )


def whole_gpus(*, n: int = 8, kubernetes_mode_pods: bool = False) -> Scenario:
    """n whole GPUs, one per pod trainer-<i> in namespace ml."""
    gpus = []
    allocations = []
    for i in range(n):
        pod = Pod("ml", f"trainer-{i}", "main")
        gpus.append(
            FakeGpu(
                index=i,
                util=10 * i + 5,
                fb_used_mib=1024 * (i + 1),
                fb_free_mib=81559 - 1024 * (i + 1),
                temp=40 + i,
                power=100.0 + i + 0.25,
                pods=[pod] if kubernetes_mode_pods else [],
            )
        )
        allocations.append(Allocation("ml", f"trainer-{i}", "main", GPU, [gpu_uuid(i)]))
    return Scenario(
        gpus=gpus,
        allocations=allocations,
        allocatable=[(GPU, gpu_uuid(i)) for i in range(n)],
        targets=[target("ml", f"trainer-{i}") for i in range(n)],
    )


def time_sliced(*, kubernetes_mode: bool = True) -> Scenario:
    """GPU 0 time-sliced (4 replicas) and shared by three pods; GPU 1 exclusive."""
    sharers = [Pod("infer", f"web-{c}", "server") for c in "abc"]
    gpus = [
        # The exporter labels only the first sharer (dcgm-exporter's bug).
        FakeGpu(
            index=0,
            util=72,
            fb_used_mib=30000,
            fb_free_mib=51559,
            pods=sharers if kubernetes_mode else [],
        ),
        FakeGpu(index=1, util=3, fb_used_mib=500, fb_free_mib=81059),
    ]
    allocations = [
        Allocation(p.namespace, p.pod, p.container, GPU, [f"{gpu_uuid(0)}::{n}"])
        for n, p in enumerate(sharers)
    ]
    allocations.append(Allocation("batch", "solo", "main", GPU, [gpu_uuid(1)]))
    allocatable = [(GPU, f"{gpu_uuid(0)}::{n}") for n in range(4)] + [(GPU, gpu_uuid(1))]
    targets = [target(p.namespace, p.pod, p.container) for p in sharers]
    targets.append(target("batch", "solo"))
    return Scenario(gpus=gpus, allocations=allocations, allocatable=allocatable, targets=targets)


def mig(*, labels: bool = False) -> Scenario:
    """A100 0 in MIG mode: one 3g.40gb and two 2g.20gb instances, all allocated."""
    a = Pod("ml", "big", "main")
    b = Pod("ml", "small-a", "main")
    c = Pod("ml", "small-b", "main")
    instances = [
        FakeMig(
            gi_id=1,
            profile="3g.40gb",
            fb_used_mib=20000,
            fb_free_mib=20096,
            gr_active=0.8125,
            pods=[a] if labels else [],
        ),
        FakeMig(
            gi_id=5,
            profile="2g.20gb",
            fb_used_mib=3000,
            fb_free_mib=16968,
            gr_active=0.25,
            pods=[b] if labels else [],
        ),
        FakeMig(
            gi_id=6,
            profile="2g.20gb",
            fb_used_mib=9000,
            fb_free_mib=10968,
            gr_active=0.0,
            pods=[c] if labels else [],
        ),
    ]
    gpus = [
        FakeGpu(
            index=0,
            model=A100,
            util=None,
            fb_used_mib=None,
            fb_free_mib=None,
            temp=55,
            power=250.5,
            mig=instances,
        )
    ]
    allocations = [
        Allocation("ml", "big", "main", "nvidia.com/mig-3g.40gb", [mig_uuid(0, 1)]),
        Allocation("ml", "small-a", "main", "nvidia.com/mig-2g.20gb", [mig_uuid(0, 5)]),
        Allocation("ml", "small-b", "main", "nvidia.com/mig-2g.20gb", [mig_uuid(0, 6)]),
    ]
    allocatable = [
        ("nvidia.com/mig-3g.40gb", mig_uuid(0, 1)),
        ("nvidia.com/mig-2g.20gb", mig_uuid(0, 5)),
        ("nvidia.com/mig-2g.20gb", mig_uuid(0, 6)),
    ]
    targets = [target("ml", p) for p in ("big", "small-a", "small-b")]
    return Scenario(gpus=gpus, allocations=allocations, allocatable=allocatable, targets=targets)
