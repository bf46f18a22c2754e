"""Pods on the local real node, for the demo and tests.

Manifests for the locally built app image, waiting for pods, and the facts an
oracle needs that do not come from orb8: a container's cgroup directory (from
the kubelet's cgroupfs layout), its processes, and the pod's host-side veth
(from the ``iflink`` of ``eth0`` inside the pod's network namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orb8_common.errors import Orb8Error
from orb8_dev.images import APP_IMAGE
from orb8_dev.node import LocalNode

# sh as PID 1 ignores SIGTERM unless it traps it: exit at once on deletion.
IDLE = "trap 'exit 0' TERM; while sleep 1; do :; done"
UNIFIED = Path("/sys/fs/cgroup/unified")


class PodWaitError(Orb8Error):
    """A pod did not reach the wanted state in time."""


@dataclass(frozen=True)
class RunningPod:
    namespace: str
    name: str
    uid: str
    ip: str
    node: str
    containers: dict[str, str]  # container name -> bare container id

    def container_id(self, name: str = "app") -> str:
        return self.containers[name]


def app_pod(
    *, name: str, namespace: str, labels: dict[str, str] | None = None,
    command: str = IDLE, host_network: bool = False, ports: list[dict[str, Any]] | None = None,
    node_name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A Pod running ``command`` with ``sh -c`` in the app image (busybox + orb8-victim)."""
    container: dict[str, Any] = {
        "name": "app",
        "image": APP_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    if ports:
        container["ports"] = ports
    spec: dict[str, Any] = {"hostNetwork": host_network}
    if node_name:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node_name}
    return _pod(name=name, namespace=namespace, labels=labels, container=container, spec=spec)


def python_pod(
    *, name: str, namespace: str, image: str, args: list[str], source: Path,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A Pod running ``python3 ARGS`` in ``image`` (one with Python, e.g. the agent image)
    with this checkout's ``source`` mounted read-only on ``PYTHONPATH``, so tools such as
    ``orb8_dev.dnsload`` run in a pod without an image of their own. Container ``app``."""
    container = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", *args],
        "env": [{"name": "PYTHONPATH", "value": "/orb8-src"}],
        "volumeMounts": [{"name": "src", "mountPath": "/orb8-src", "readOnly": True}],
    }
    volumes = [{"name": "src", "hostPath": {"path": str(source), "type": "Directory"}}]
    return _pod(name=name, namespace=namespace, labels=labels, container=container,
                spec={"volumes": volumes})  # fmt: skip


def _pod(
    *, name: str, namespace: str, labels: dict[str, str] | None, container: dict[str, Any],
    spec: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """A one-container Pod that stops within 2 s of its deletion."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [container], **spec},
    }


def create_namespace(*, node: LocalNode, name: str, timeout: float = 60.0) -> None:
    """Create a namespace and wait for its ``default`` ServiceAccount (the
    controller-manager makes it; until then the admission plugin refuses pods)."""
    node.plane.kubectl("create", "namespace", name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise PodWaitError(f"namespace {name} has no default ServiceAccount after {timeout:.0f}s")


def apply(*, node: LocalNode, manifest: dict[str, Any]) -> None:
    node.plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def wait_running(
    *, node: LocalNode, namespace: str, name: str, timeout: float = 120.0
) -> RunningPod:
    """Wait until the pod is Running with an IP and container ids; return them."""
    deadline = time.monotonic() + timeout
    phase = "absent"
    while time.monotonic() < deadline:
        out = node.plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        if out.returncode == 0:
            pod = json.loads(out.stdout)
            status = pod.get("status", {})
            phase = status.get("phase", "Pending")
            statuses = status.get("containerStatuses") or []
            ids = {
                s["name"]: s["containerID"].split("://", 1)[-1]
                for s in statuses
                if s.get("containerID") and "running" in (s.get("state") or {})
            }
            if phase == "Running" and status.get("podIP") and len(ids) == len(statuses):
                return RunningPod(
                    namespace=namespace, name=name, uid=pod["metadata"]["uid"],
                    ip=status["podIP"], node=pod["spec"].get("nodeName", ""), containers=ids,
                )  # fmt: skip
        time.sleep(0.3)
    raise PodWaitError(f"pod {namespace}/{name} not Running after {timeout:.0f}s (phase {phase})")


def wait_gone(*, node: LocalNode, namespace: str, name: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = node.plane.kubectl("get", "pod", name, "-n", namespace, "-o", "name", check=False)
        if out.returncode != 0 and "NotFound" in out.stderr:
            return
        time.sleep(0.3)
    raise PodWaitError(f"pod {namespace}/{name} still exists after {timeout:.0f}s")


def exec_in(
    *, node: LocalNode, pod: RunningPod, command: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``kubectl exec`` (through the apiserver and the kubelet), failing on error."""
    return node.plane.kubectl(
        "exec", pod.name, "-n", pod.namespace, "-c", "app", "--", "sh", "-c", command,
        timeout=timeout,
    )  # fmt: skip


def container_cgroup(*, node: LocalNode, pod: RunningPod, container: str = "app") -> Path:
    """The container's cgroup v2 directory, as the kubelet's cgroupfs driver lays it
    out under the node's cgroup parent (or its worker's, ``<parent>w``)."""
    cid = pod.container_id(container)
    for parent in (node.cgroup_parent, node.cgroup_parent + "w"):
        kubepods = UNIFIED / parent.lstrip("/") / "kubepods"
        for candidate in (
            kubepods / "besteffort" / f"pod{pod.uid}" / cid,
            kubepods / "burstable" / f"pod{pod.uid}" / cid,
            kubepods / f"pod{pod.uid}" / cid,
        ):
            if candidate.is_dir():
                return candidate
    raise PodWaitError(f"no cgroup directory for container {cid[:12]} of {pod.name}")


def container_pids(*, node: LocalNode, pod: RunningPod, container: str = "app") -> list[int]:
    path = container_cgroup(node=node, pod=pod, container=container) / "cgroup.procs"
    return [int(pid) for pid in path.read_text().split()]


def host_veth(*, node: LocalNode, pod: RunningPod, netns: str | None = None) -> str:
    """The host-side veth of the pod's eth0: its peer's ifindex, looked up on the
    host (or in ``netns``, the network namespace of a node that has its own)."""
    pid = container_pids(node=node, pod=pod)[0]
    # Netlink, not /sys: sysfs shows the netns of whoever mounted it.
    out = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-j", "link", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    ifindex = str(json.loads(out.stdout)[0]["link_index"])
    if netns is not None:
        links = json.loads(
            subprocess.run(["ip", "-n", netns, "-j", "link", "show"], capture_output=True,
                           text=True, check=True).stdout
        )  # fmt: skip
        for entry in links:
            if str(entry["ifindex"]) == ifindex:
                return str(entry["ifname"])
        raise PodWaitError(f"no interface with ifindex {ifindex} in {netns} for {pod.name}")
    for link in Path("/sys/class/net").iterdir():
        try:
            if (link / "ifindex").read_text().strip() == ifindex:
                return link.name
        except OSError:
            continue
    raise PodWaitError(f"no host interface with ifindex {ifindex} for {pod.name}")


# Handle of every tc filter orb8's flow probe attaches (docs/architecture.md).
ORB8_TC_HANDLE = "0xb8"


def rx_bytes(*, interface: str, netns: str | None = None) -> int:
    """The interface's rx byte counter (on the host, or in ``netns``)."""
    where = ["-n", netns] if netns else []
    out = subprocess.run(
        ["ip", *where, "-s", "-j", "link", "show", "dev", interface],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])


def orb8_tc_filters(*, interface: str, netns: str | None = None) -> list[dict[str, Any]]:
    """orb8's tc filters on ``interface`` (both clsact directions); [] if it is gone."""
    found: list[dict[str, Any]] = []
    where = ["-n", netns] if netns else []
    for direction in ("ingress", "egress"):
        out = subprocess.run(
            ["tc", *where, "-j", "filter", "show", "dev", interface, direction],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            continue
        for entry in json.loads(out.stdout or "[]"):
            options = entry.get("options") or {}
            if options.get("handle") == ORB8_TC_HANDLE:
                found.append({"direction": direction, **entry})
    return found


def bpf_prog_ids_held(*, pids: list[int]) -> set[int]:
    """Ids of the BPF programs these processes hold open (program and link fds),
    read from /proc/<pid>/fdinfo as bpftool does."""
    held: set[int] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if not os.readlink(fd).startswith(("anon_inode:bpf-prog", "anon_inode:bpf_link")):
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
            except OSError:
                continue
            for line in info.splitlines():
                if line.startswith("prog_id:"):
                    held.add(int(line.split()[1]))
    return held
