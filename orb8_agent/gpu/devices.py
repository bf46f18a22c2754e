"""Device plugin ids as the kubelet reports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceRef:
    kind: str  # "gpu", "replica", "mig" or "other"
    uuid: str  # the physical GPU for gpu/replica, the MIG-... id for mig
    replica: int | None = None


def parse_device_id(device_id: str) -> DeviceRef:
    """Classify a device plugin id: GPU-<uuid>, GPU-<uuid>::<n>, MIG-<uuid>."""
    if device_id.startswith("MIG-"):
        return DeviceRef(kind="mig", uuid=device_id)
    if device_id.startswith("GPU-"):
        base, sep, n = device_id.partition("::")
        if sep:
            return DeviceRef(kind="replica", uuid=base, replica=int(n) if n.isdigit() else None)
        return DeviceRef(kind="gpu", uuid=device_id)
    return DeviceRef(kind="other", uuid=device_id)


def mig_profile_of(resource_name: str) -> str:
    """nvidia.com/mig-1g.10gb -> 1g.10gb; '' for the single MIG strategy (nvidia.com/gpu)."""
    prefix = "nvidia.com/mig-"
    return resource_name[len(prefix) :] if resource_name.startswith(prefix) else ""
