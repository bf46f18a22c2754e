"""A second real node for the local cluster, in its own network namespace.

The worker runs its own containerd and kubelet inside a network namespace
``orb8-<i>-w`` joined to the host by a veth pair (host ``orb8-v<i>``
``100.67.<i>.1/30``, worker ``eth0`` ``100.67.<i>.2``). Its pods get
``100.68.<i>.0/24`` on a bridge inside that namespace; the host routes that
range to the worker, and the worker's default route is the host, so pods on
the two nodes reach each other and the apiserver (on the host's Service IP)
through plain routing. The processes only enter the network namespace
and a private mount namespace of their own (held by a ``sleep`` process),
which, like a second machine's filesystem, shows the paths the cluster's
DaemonSets mount from the host with this node's contents: its cgroup
parent ``/orb8-<i>w`` is bind-mounted at the first node's ``/orb8-<i>``, and
its kubelet's pod-resources directory at the first node's. So one chart
install (one ``agent.hostCgroupRoot``, one ``agent.kubeletRootDir``) serves
both nodes. Mounts propagate from the host into that namespace, not back.

Because the worker's network is separate, its hostNetwork pods (the orb8
agent) see only the worker's interfaces, as a second machine's would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error
from orb8_common.procfs import pid_alive
from orb8_dev import containerd, hoststate, images, nodenet
from orb8_dev import pki as certs
from orb8_dev.node import (
    KubeletSpec,
    LocalNode,
    _cert_kubeconfig,
    _spawn,
    _wait_socket,
    start_kubelet,
    wait_node_ready,
)


class WorkerError(Orb8Error):
    """The worker node could not be started or stopped."""


@dataclass(frozen=True)
class Worker:
    index: int  # the cluster's node-network index

    @property
    def name(self) -> str:
        return f"orb8-node-{self.index}-w"

    @property
    def netns(self) -> str:
        return f"orb8-{self.index}-w"

    @property
    def host_if(self) -> str:
        return f"orb8-v{self.index}"

    @property
    def host_ip(self) -> str:
        return f"100.67.{self.index}.1"

    @property
    def ip(self) -> str:
        return f"100.67.{self.index}.2"

    @property
    def pod_subnet(self) -> str:
        return f"100.68.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"orb8-b{self.index}w"

    @property
    def cgroup_parent(self) -> str:
        return f"/orb8-{self.index}w"

    def base(self, node: LocalNode) -> Path:
        return node.base / "worker"

    def containerd(self, node: LocalNode) -> containerd.ContainerdPaths:
        return containerd.ContainerdPaths(
            base=self.base(node) / "containerd",
            run_dir=nodenet.LOCK_DIR / f"n{self.index}w",
            cache_root=images.cache_dir().parent / "containerd" / f"n{self.index}w",
        )

    def enter(self, holder: int) -> list[str]:
        return ["nsenter", f"--mount=/proc/{holder}/ns/mnt", f"--net=/run/netns/{self.netns}"]


def worker_of(*, node: LocalNode) -> Worker | None:
    """The worker of this cluster, if one was added."""
    try:
        meta = json.loads((node.plane.state_dir / "node.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    entry = meta.get("worker")
    return Worker(index=int(entry["index"])) if entry else None


def _run(args: list[str], *, check: bool = True) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise WorkerError(f"{' '.join(args)} failed: {result.stderr.strip()}")


def _wait_own_mount_ns(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``unshare`` has moved into its new mount namespace."""
    mine = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/mnt") != mine and Path(
                f"/proc/{pid}/cmdline"
            ).read_bytes().startswith(b"sleep"):
                return
        time.sleep(0.05)
    raise WorkerError("the worker's mount namespace holder did not start")


def _wire(worker: Worker, node: LocalNode) -> None:
    ns = worker.netns
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", worker.host_if, "type", "veth", "peer", "name", "eth0",
          "netns", ns])  # fmt: skip
    _run(["ip", "addr", "add", f"{worker.host_ip}/30", "dev", worker.host_if])
    _run(["ip", "link", "set", worker.host_if, "up"])
    _run(["ip", "-n", ns, "addr", "add", f"{worker.ip}/30", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    _run(["ip", "-n", ns, "route", "add", "default", "via", worker.host_ip])
    _run(["ip", "route", "add", worker.pod_subnet, "via", worker.ip])
    # Pods of the two nodes reach each other through the host and the worker.
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    del node


def add_worker(*, node: LocalNode, timeout: float = 180.0) -> Worker:
    """Start the worker node; return when it is Ready. Recorded in node.json,
    so ``node.down`` (``make cluster-down``) removes it too."""
    worker = Worker(index=node.network.index)
    state_dir = node.plane.state_dir
    meta = json.loads((state_dir / "node.json").read_text())
    if meta.get("worker"):
        raise WorkerError(f"{worker.name} already runs")
    meta["worker"] = {"index": worker.index, "pids": {}}
    (state_dir / "node.json").write_text(json.dumps(meta))
    pids: dict[str, int] = {}

    def record(name: str, pid: int) -> None:
        pids[name] = pid
        meta["worker"]["pids"] = pids
        (state_dir / "node.json").write_text(json.dumps(meta))

    log_dir = state_dir / "logs"
    pki = state_dir / "pki"
    base = worker.base(node)
    base.mkdir(parents=True, exist_ok=True)
    try:
        _wire(worker, node)
        for directory in hoststate.cgroup_dirs(parent="/"):
            (directory / worker.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)
        (base / "kubelet" / "pod-resources").mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "slave", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        record("mount-holder", holder.pid)
        _wait_own_mount_ns(holder.pid)
        for source, target in (
            (hoststate.CGROUP_ROOT / "unified" / worker.cgroup_parent.lstrip("/"),
             hoststate.CGROUP_ROOT / "unified" / node.cgroup_parent.lstrip("/")),
            (base / "kubelet" / "pod-resources", node.kubelet_root / "pod-resources"),
        ):  # fmt: skip
            target.mkdir(parents=True, exist_ok=True)
            _run(["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "mount", "--bind",
                  str(source), str(target)])  # fmt: skip
        enter = worker.enter(holder.pid)
        paths = worker.containerd(node)
        containerd.write_config(
            paths=paths, sandbox_image=images.PAUSE_IMAGE,
            conflist=containerd.bridge_conflist(
                network=f"orb8-{worker.index}w", bridge=worker.bridge,
                subnet=worker.pod_subnet, ipam_dir=paths.ipam_dir,
            ),
        )  # fmt: skip
        record("containerd-worker", _spawn(
            name="containerd-worker", log_dir=log_dir,
            cmd=[*enter, *containerd.command(paths=paths)],
        ))  # fmt: skip
        _wait_socket(
            path=paths.socket, pid=pids["containerd-worker"], log=log_dir / "containerd-worker.log"
        )
        for archive in (images.pause_image(), images.app_image()):
            containerd.import_image(paths=paths, archive=archive)
        certs.write_client_cert(
            pki=pki, name="kubelet-worker", user=f"system:node:{worker.name}",
            groups=["system:nodes"],
        )  # fmt: skip
        kubeconfig = base / "kubelet.kubeconfig"
        _cert_kubeconfig(path=kubeconfig, server=node.plane.server, pki=pki, name="kubelet-worker")
        spec = KubeletSpec(
            name=worker.name, address=worker.ip, base=base, runtime_socket=paths.socket,
            cgroup_parent=worker.cgroup_parent,
        )  # fmt: skip
        record("kubelet-worker", start_kubelet(
            spec=spec, pki=pki, kubeconfig=kubeconfig, bin_dir=node.node_bin_dir,
            log_dir=log_dir, log_name="kubelet-worker", prefix=enter,
        ))  # fmt: skip
        wait_node_ready(plane=node.plane, name=worker.name, pids=pids, log_dir=log_dir)
    except BaseException:
        remove_worker(state_dir=state_dir)
        raise
    return worker


def remove_worker(*, state_dir: Path, delete_pods: bool = True) -> None:
    """Stop the worker: its pods (through the API), kubelet, containerd, network."""
    try:
        meta = json.loads((state_dir / "node.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    entry = meta.get("worker")
    if not entry:
        return
    worker = Worker(index=int(entry["index"]))
    pids = {str(k): int(v) for k, v in (entry.get("pids") or {}).items()}
    from orb8_dev import node as nodes  # the cluster's handle, if it still runs

    local = nodes.attach(state_dir=state_dir)
    if local is not None and delete_pods and pid_alive(pids.get("kubelet-worker", -1)):
        local.plane.kubectl(
            "delete", "pods", "--all-namespaces", "--field-selector",
            f"spec.nodeName={worker.name}", "--wait=true", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
        local.plane.kubectl("delete", "node", worker.name, "--wait=false", check=False)
    if "kubelet-worker" in pids:
        hoststate.kill_pids([pids["kubelet-worker"]], grace_s=10)
    paths = (
        worker.containerd(local)
        if local
        else containerd.ContainerdPaths(
            base=state_dir / "node" / "worker" / "containerd",
            run_dir=nodenet.LOCK_DIR / f"n{worker.index}w",
            cache_root=images.cache_dir().parent / "containerd" / f"n{worker.index}w",
        )
    )
    if pid_alive(pids.get("containerd-worker", -1)):
        with contextlib.suppress(containerd.ContainerdError):
            containerd.kill_all_tasks(paths=paths)
        hoststate.kill_pids([pids["containerd-worker"]], grace_s=10)
    hoststate.kill_pids(hoststate.processes_mentioning(text=str(paths.socket)), grace_s=2)
    hoststate.kill_cgroup_processes(parent=worker.cgroup_parent)
    if "mount-holder" in pids:  # the worker's mounts go with its mount namespace
        hoststate.kill_pids([pids["mount-holder"]], grace_s=2)
    hoststate.unmount_under(root=paths.base)
    hoststate.unmount_under(root=paths.root)
    for kind in ("sandboxes", "containers"):
        shutil.rmtree(paths.root / "io.containerd.grpc.v1.cri" / kind, ignore_errors=True)
    deadline = time.monotonic() + 10
    while hoststate.remove_cgroups(parent=worker.cgroup_parent) and time.monotonic() < deadline:
        time.sleep(0.2)
    _run(["ip", "route", "del", worker.pod_subnet], check=False)
    _run(["ip", "link", "del", worker.host_if], check=False)
    _run(["ip", "netns", "del", worker.netns], check=False)
    subprocess.run(
        ["rm", "-rf", "--one-file-system", str(state_dir / "node" / "worker")], check=False
    )
    shutil.rmtree(paths.run_dir, ignore_errors=True)
    meta.pop("worker", None)
    (state_dir / "node.json").write_text(json.dumps(meta))
