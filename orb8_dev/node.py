"""A real Kubernetes node on this machine, next to the control plane.

``up`` starts, in one state directory:

* etcd + kube-apiserver (``controlplane.py``), listening on the node
  network's ``kubernetes`` Service IP (``nodenet.py``);
* kube-controller-manager (service-account tokens, ``default``
  ServiceAccounts, DaemonSets, Deployments, garbage collection, namespace
  deletion) and kube-scheduler;
* containerd + runc from Debian, with their own config, root, state and
  socket (``containerd.py``), the bridge CNI plugin, and a sandbox image built
  here (``images.py``) — no registry is reachable, so images are imported;
* a kubelet with its own root and certificate directories, the cgroupfs
  driver under a cgroup parent of its own, on a dummy interface's address;
* kube-proxy in nftables mode (``kubeproxy.py``), so ClusterIP Services
  are real DNAT; one per host, as its nftables tables are host-wide.

``down`` undoes every part of it: pods are deleted through the API (so the
kubelet runs their shutdown and CNI teardown), then every process, mount,
cgroup, interface and file the node made goes, and the kernel settings it
changed are restored (``hoststate.py``). Logs stay in ``<state>/logs``.

The build of kubelet, kube-scheduler, kube-controller-manager and kube-proxy
is ``hack/k8s/build.sh node``, cached by version like the apiserver's.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error
from orb8_common.procfs import pid_alive
from orb8_dev import containerd, controlplane, hoststate, images, kubeproxy, nodenet
from orb8_dev import pki as certs
from orb8_dev.controlplane import BUILD_SCRIPT, ControlPlane
from orb8_dev.nodenet import NodeNetwork

READY_TIMEOUT_S = 180.0
# Stop order: nothing may recreate pods while they are being deleted.
STOP_ORDER = ("kube-controller-manager", "kube-scheduler", "kubelet", "containerd")


class NodeError(Orb8Error):
    """The local node could not be started, reached or stopped."""


@dataclass(frozen=True)
class LocalNode:
    """Handle on a running local node and its control plane."""

    plane: ControlPlane
    network: NodeNetwork
    name: str
    node_bin_dir: Path
    kube_proxy: bool = False  # False: another local node on this host runs it

    @property
    def base(self) -> Path:
        return self.plane.state_dir / "node"

    @property
    def containerd(self) -> containerd.ContainerdPaths:
        return containerd_paths(state_dir=self.plane.state_dir, network=self.network)

    @property
    def kubelet_root(self) -> Path:
        return self.base / "kubelet"

    @property
    def pod_resources_socket(self) -> Path:
        return self.kubelet_root / "pod-resources" / "kubelet.sock"

    @property
    def cgroup_parent(self) -> str:
        return self.network.cgroup_parent

    def import_image(self, *, archive: Path) -> bool:
        """Import an image archive into every node of the cluster (the worker's too,
        if one runs). False: this very archive was already imported everywhere."""
        from orb8_dev.worker import worker_of  # the optional second node

        runtimes = [self.containerd]
        worker = worker_of(node=self)
        if worker is not None:
            runtimes.append(worker.containerd(self))
        imported = [containerd.import_image(paths=paths, archive=archive) for paths in runtimes]
        return any(imported)


def containerd_paths(*, state_dir: Path, network: NodeNetwork) -> containerd.ContainerdPaths:
    return containerd.ContainerdPaths(
        base=state_dir / "node" / "containerd",
        run_dir=nodenet.LOCK_DIR / f"n{network.index}",
        cache_root=images.cache_dir().parent / "containerd" / f"n{network.index}",
    )


def build_node_binaries() -> Path:
    """Build (or find cached) kubelet, kube-scheduler, kube-controller-manager."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "node"], stdout=subprocess.PIPE, stderr=None, text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise NodeError(f"{BUILD_SCRIPT} node failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def _cert_kubeconfig(*, path: Path, server: str, pki: Path, name: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate": str(pki / f"{name}.crt"),
                    "client-key": str(pki / f"{name}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


@dataclass(frozen=True)
class KubeletSpec:
    """One kubelet: its node name and address, its files and its runtime."""

    name: str
    address: str
    base: Path  # kubelet root, certificates, logs and config live under it
    runtime_socket: Path
    cgroup_parent: str

    @property
    def root_dir(self) -> Path:
        return self.base / "kubelet"


def kubelet_config(*, pki: Path, spec: KubeletSpec, port: int) -> dict[str, object]:
    """KubeletConfiguration for this machine kind (see docs/development.md)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": spec.address,
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{spec.runtime_socket}",
        # Hybrid cgroups (v1 controllers, cgroup2 at /sys/fs/cgroup/unified)
        # and PID 1 is not systemd.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupRoot": spec.cgroup_parent,
        "failSwapOn": False,
        "podLogsDir": str(spec.base / "pod-logs"),
        "volumePluginDir": str(spec.base / "volume-plugins"),
        "makeIPTablesUtilChains": False,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # Never evict or garbage-collect the imported images on a busy test box.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "resolvConf": "/etc/resolv.conf",
        "nodeStatusUpdateFrequency": "5s",
    }


def start_kubelet(
    *, spec: KubeletSpec, pki: Path, kubeconfig: Path, bin_dir: Path, log_dir: Path,
    log_name: str = "kubelet", prefix: list[str] | None = None,
) -> int:  # fmt: skip
    """Write the kubelet's config and start it (``prefix``: e.g. an nsenter); return its pid."""
    config = spec.base / "kubelet-config.json"
    config.write_text(
        json.dumps(kubelet_config(pki=pki, spec=spec, port=controlplane.free_port()), indent=2)
    )
    return _spawn(
        name=log_name, log_dir=log_dir,
        cmd=[
            *(prefix or []),
            str(bin_dir / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={spec.root_dir}",
            f"--cert-dir={spec.base / 'kubelet-pki'}",
            f"--hostname-override={spec.name}",
            f"--node-ip={spec.address}",
            "--v=1",
        ],
    )  # fmt: skip


def _spawn(*, name: str, cmd: list[str], log_dir: Path) -> int:
    return controlplane._spawn(cmd=cmd, log=log_dir / f"{name}.log")


def _read_meta(state_dir: Path) -> dict[str, object] | None:
    try:
        meta: dict[str, object] = json.loads((state_dir / "node.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta


def attach(*, state_dir: Path) -> LocalNode | None:
    """The local node running from ``state_dir``, or None."""
    meta = _read_meta(state_dir)
    plane = controlplane.attach(state_dir=state_dir)
    if meta is None or plane is None:
        return None
    pids = meta.get("pids")
    if not isinstance(pids, dict) or not all(pid_alive(int(p)) for p in pids.values()):
        return None
    return LocalNode(
        plane=plane, network=NodeNetwork(index=int(str(meta["index"]))),
        name=str(meta["name"]), node_bin_dir=Path(str(meta["node_bin_dir"])),
        kube_proxy="kube-proxy" in pids,
    )  # fmt: skip


def up(*, state_dir: Path, progress: bool = True) -> LocalNode:
    """Start the control plane and a real node; return when the node is Ready."""
    say = _progress if progress else _quiet
    if (state_dir / "node.json").exists() or (state_dir / "pids.json").exists():
        down(state_dir=state_dir)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        bins = pool.submit(controlplane.build_binaries)
        node_bins = pool.submit(build_node_binaries)
        pause = pool.submit(images.pause_image)
        app = pool.submit(images.app_image)
        bin_dir, node_bin_dir = bins.result(), node_bins.result()
        archives = [pause.result(), app.result()]
    say(f"binaries ready ({time.monotonic() - started:.1f}s)")
    network = nodenet.allocate()
    base = state_dir / "node"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    meta: dict[str, object] = {
        "index": network.index, "name": network.node_name, "node_bin_dir": str(node_bin_dir),
        "pids": {},
    }  # fmt: skip
    (state_dir / "node.json").write_text(json.dumps(meta))
    hoststate.register(net=network, state_dir=state_dir)
    try:
        node = _start(
            state_dir=state_dir, network=network, bin_dir=bin_dir, node_bin_dir=node_bin_dir,
            archives=archives, meta=meta, say=say, started=started,
        )  # fmt: skip
    except BaseException:
        down(state_dir=state_dir)
        raise
    return node


def _start(
    *, state_dir: Path, network: NodeNetwork, bin_dir: Path, node_bin_dir: Path,
    archives: list[Path], meta: dict[str, object], say: Callable[[str], None], started: float,
) -> LocalNode:  # fmt: skip
    # One kube-proxy per host (kubeproxy.py): with it, the apiserver listens on the
    # node IP, which kube-proxy makes the `kubernetes` Service's endpoint.
    proxied = kubeproxy.claim(state_dir=state_dir)
    plane = controlplane.start(
        state_dir=state_dir, bin_dir=bin_dir, network=network, wait=False,
        listen_ip=network.node_ip if proxied else None,
    )  # fmt: skip
    node = LocalNode(
        plane=plane, network=network, name=network.node_name, node_bin_dir=node_bin_dir
    )
    log_dir = state_dir / "logs"
    pki = state_dir / "pki"
    pids: dict[str, int] = {}

    def record(name: str, pid: int) -> None:
        pids[name] = pid
        meta["pids"] = pids
        (state_dir / "node.json").write_text(json.dumps(meta))

    # containerd starts while the apiserver comes up.
    paths = node.containerd
    containerd.write_config(
        paths=paths, sandbox_image=images.PAUSE_IMAGE,
        conflist=containerd.bridge_conflist(
            network=network.cni_network, bridge=network.bridge, subnet=network.pod_subnet,
            ipam_dir=paths.ipam_dir,
        ),
    )  # fmt: skip
    record(
        "containerd",
        _spawn(name="containerd", cmd=containerd.command(paths=paths), log_dir=log_dir),
    )
    for name, user, groups in (
        ("kubelet", f"system:node:{network.node_name}", ["system:nodes"]),
        ("controller-manager", "system:kube-controller-manager", []),
        ("scheduler", "system:kube-scheduler", []),
        ("kube-proxy", "system:kube-proxy", []),  # bound to system:node-proxier by default
    ):
        certs.write_client_cert(pki=pki, name=name, user=user, groups=groups)
        _cert_kubeconfig(path=base_kubeconfig(node, name), server=plane.server, pki=pki, name=name)
    for directory in hoststate.cgroup_dirs(parent="/"):
        (directory / network.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)
    _wait_socket(path=paths.socket, pid=pids["containerd"], log=log_dir / "containerd.log")
    for archive in archives:  # the sandbox image, and the app image for demo/test pods
        containerd.import_image(paths=paths, archive=archive)
    controlplane.wait_ready(plane=plane)
    elapsed = time.monotonic() - started
    say(f"kube-apiserver {plane.version()} ready at {plane.server} ({elapsed:.1f}s)")

    record("kube-controller-manager", _spawn(
        name="kube-controller-manager", log_dir=log_dir,
        cmd=[
            str(node_bin_dir / "kube-controller-manager"),
            f"--kubeconfig={base_kubeconfig(node, 'controller-manager')}",
            f"--authentication-kubeconfig={base_kubeconfig(node, 'controller-manager')}",
            f"--authorization-kubeconfig={base_kubeconfig(node, 'controller-manager')}",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={network.service_cidr}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
            f"--flex-volume-plugin-dir={node.base / 'volume-plugins'}",
            "--v=1",
        ],
    ))  # fmt: skip
    record("kube-scheduler", _spawn(
        name="kube-scheduler", log_dir=log_dir,
        cmd=[
            str(node_bin_dir / "kube-scheduler"),
            f"--kubeconfig={base_kubeconfig(node, 'scheduler')}",
            f"--authentication-kubeconfig={base_kubeconfig(node, 'scheduler')}",
            f"--authorization-kubeconfig={base_kubeconfig(node, 'scheduler')}",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        ],
    ))  # fmt: skip
    spec = KubeletSpec(
        name=network.node_name, address=network.node_ip, base=node.base,
        runtime_socket=paths.socket, cgroup_parent=network.cgroup_parent,
    )  # fmt: skip
    record("kubelet", start_kubelet(
        spec=spec, pki=pki, kubeconfig=base_kubeconfig(node, "kubelet"), bin_dir=node_bin_dir,
        log_dir=log_dir,
    ))  # fmt: skip
    proxy_pid = None
    if proxied:
        proxy_pid = kubeproxy.start(
            state_dir=state_dir, network=network,
            kubeconfig=base_kubeconfig(node, "kube-proxy"), bin_dir=node_bin_dir,
            log_dir=log_dir,
        )  # fmt: skip
    if proxy_pid is not None:
        record("kube-proxy", proxy_pid)
    else:
        say("kube-proxy not started: another local node on this host runs it")
    wait_node_ready(plane=plane, name=network.node_name, pids=pids, log_dir=log_dir)
    say(f"node {network.node_name} Ready at {network.node_ip} ({time.monotonic() - started:.1f}s)")
    return LocalNode(
        plane=plane, network=network, name=network.node_name, node_bin_dir=node_bin_dir,
        kube_proxy=proxy_pid is not None,
    )  # fmt: skip


def base_kubeconfig(node: LocalNode, name: str) -> Path:
    return node.base / f"{name}.kubeconfig"


def _wait_socket(*, path: Path, pid: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_socket():
            return
        if not pid_alive(pid):
            raise NodeError(f"containerd exited during start-up:\n{controlplane._tail(log)}")
        time.sleep(0.1)
    raise NodeError(f"containerd socket {path} missing after {timeout:.0f}s")


def wait_node_ready(*, plane: ControlPlane, name: str, pids: dict[str, int], log_dir: Path) -> None:
    """Wait until Node ``name`` is Ready; fail early if a process in ``pids``
    (keyed by the name of its log file) exits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        for proc, pid in pids.items():
            if not pid_alive(pid):
                raise NodeError(
                    f"{proc} exited during start-up:\n{controlplane._tail(log_dir / f'{proc}.log')}"
                )
        out = plane.kubectl(
            "get", "node", name, "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}", check=False,
        )  # fmt: skip
        status = out.stdout.strip()
        if status == "True":
            return
        time.sleep(0.5)
    raise NodeError(
        f"node {name} not Ready after {READY_TIMEOUT_S:.0f}s (Ready={status or 'absent'}):\n"
        + "\n".join(
            controlplane._tail(log_dir / f"{proc}.log") for proc in pids if "kubelet" in proc
        )
    )


def down(*, state_dir: Path, progress: bool = False) -> None:
    """Stop the node and its control plane and undo everything they did to the host."""
    say = _progress if progress else _quiet
    meta = _read_meta(state_dir)
    if meta is None:
        controlplane.stop(state_dir=state_dir)
        return
    network = NodeNetwork(index=int(str(meta["index"])))
    raw_pids = meta.get("pids")
    pids = {str(k): int(v) for k, v in raw_pids.items()} if isinstance(raw_pids, dict) else {}
    base = state_dir / "node"
    plane = controlplane.attach(state_dir=state_dir)
    for name in STOP_ORDER[:2]:
        if name in pids:
            hoststate.kill_pids([pids[name]])
    if plane is not None and pid_alive(pids.get("kubelet", -1)):
        # The kubelet stops each pod's containers and tears down its network.
        say("deleting pods (the kubelet stops their containers and networks)")
        plane.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--wait=true", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
    from orb8_dev.worker import remove_worker  # the optional second node

    remove_worker(state_dir=state_dir, delete_pods=False)
    if "kubelet" in pids:
        hoststate.kill_pids([pids["kubelet"]], grace_s=10)
    kubeproxy.stop(state_dir=state_dir, pid=pids.get("kube-proxy"))
    paths = containerd_paths(state_dir=state_dir, network=network)
    if pid_alive(pids.get("containerd", -1)):
        try:
            containerd.kill_all_tasks(paths=paths)
        except containerd.ContainerdError as err:
            say(f"containerd: {err}")
        hoststate.kill_pids([pids["containerd"]], grace_s=10)
    # Whatever is left: shims, container processes, mounts, cgroups.
    hoststate.kill_pids(hoststate.processes_mentioning(text=str(paths.socket)), grace_s=2)
    hoststate.kill_cgroup_processes(parent=network.cgroup_parent)
    controlplane.stop(state_dir=state_dir)
    hoststate.unmount_under(root=base)
    hoststate.unmount_under(root=paths.root)
    # The kept root holds images only: no per-sandbox or per-container CRI files.
    for kind in ("sandboxes", "containers"):
        shutil.rmtree(paths.root / "io.containerd.grpc.v1.cri" / kind, ignore_errors=True)
    left = hoststate.remove_cgroups(parent=network.cgroup_parent)
    nodenet.release(network)
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
    shutil.rmtree(paths.run_dir, ignore_errors=True)
    for leftover in ("etcd", "pki"):
        shutil.rmtree(state_dir / leftover, ignore_errors=True)
    for leftover in ("tokens.csv", "plane.json", "kubeconfig", "node.json"):
        (state_dir / leftover).unlink(missing_ok=True)
    hoststate.unregister(net=network)
    if left:
        raise NodeError(f"cgroups left behind: {', '.join(map(str, left))}")
    say(f"node {meta['name']} and its control plane stopped; host restored")


def _progress(text: str) -> None:
    print(f"node: {text}", flush=True)


def _quiet(text: str) -> None:
    del text
