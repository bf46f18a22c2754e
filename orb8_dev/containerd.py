"""containerd for the local node: its own config, root, state and socket.

The root (content store, image snapshots, metadata) is a cache kept between
runs in ``$ORB8_CACHE/containerd/n<i>``, so images imported once are not
imported again (the agent image alone takes tens of seconds to import and
unpack); every container and sandbox is deleted at teardown, so only images
stay. The state (running tasks, mounts, netns) lives in the state directory
and goes with the node.

Debian's containerd and runc run with everything under one directory, so
several nodes (worktrees, test sessions) can run side by side and nothing of
the package's own service is used. Settings this machine kind needs:

* ``restrict_oom_score_adj = true``: the capability bounding set lacks
  CAP_SYS_RESOURCE, so runc cannot set the negative ``oom_score_adj`` the
  kubelet asks for, and every sandbox would fail.
* ``SystemdCgroup = false``: PID 1 is not systemd; the kubelet uses the
  cgroupfs driver.
* netns bind mounts and runc's state under the state directory, so teardown
  finds everything it has to undo in one place.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error

CNI_BIN_DIR = Path("/usr/lib/cni")
K8S_NAMESPACE = "k8s.io"


class ContainerdError(Orb8Error):
    """containerd could not be configured, started or driven."""


@dataclass(frozen=True)
class ContainerdPaths:
    """Everything one containerd instance owns: files under ``base``; its sockets
    in ``run_dir``, a short path, because a unix socket path has at most 104
    bytes here and test state directories are long."""

    base: Path
    run_dir: Path
    cache_root: Path

    @property
    def config(self) -> Path:
        return self.base / "config.toml"

    @property
    def root(self) -> Path:
        return self.cache_root

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.base / "cni" / "ipam"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"


def render_config(*, paths: ContainerdPaths, sandbox_image: str) -> str:
    """containerd 1.6 config (version 2) for one local node."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.runc"
    return "\n".join(
        [
            "version = 2",
            f'root = "{paths.root}"',
            f'state = "{paths.state}"',
            # Plugins this machine cannot use; listing them keeps the log quiet.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",'
            ' "io.containerd.internal.v1.tracing"]',
            "",
            "[grpc]",
            f'  address = "{paths.socket}"',
            "[ttrpc]",
            f'  address = "{paths.socket}.ttrpc"',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{paths.base / "opt"}"',
            "",
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            "  disable_apparmor = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{runc}]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{runc}.options]",
            "  SystemdCgroup = false",
            f'  Root = "{paths.runc_root}"',
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{paths.cni_conf_dir}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def bridge_conflist(*, network: str, bridge: str, subnet: str, ipam_dir: Path) -> str:
    """A CNI config: one Linux bridge, host-local IPAM, no masquerading.

    Pods talk to each other and to the node's addresses only, so no NAT
    (and no iptables rule) is needed.
    """
    conflist = {
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }
    return json.dumps(conflist, indent=2) + "\n"


def write_config(*, paths: ContainerdPaths, sandbox_image: str, conflist: str) -> None:
    for directory in (paths.root, paths.state, paths.cni_conf_dir, paths.ipam_dir, paths.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(render_config(paths=paths, sandbox_image=sandbox_image))
    (paths.cni_conf_dir / "10-orb8.conflist").write_text(conflist)


def command(*, paths: ContainerdPaths) -> list[str]:
    return ["containerd", "--config", str(paths.config), "--log-level", "warn"]


def ctr(*, paths: ContainerdPaths, args: list[str], timeout: float = 120.0) -> str:
    """Run ``ctr`` against this containerd in the kubelet's namespace."""
    cmd = ["ctr", "--address", str(paths.socket), "--namespace", K8S_NAMESPACE, *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ContainerdError(f"ctr {' '.join(args)} timed out after {timeout:.0f}s") from None
    if result.returncode != 0:
        raise ContainerdError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def import_image(*, paths: ContainerdPaths, archive: Path) -> bool:
    """Import a docker-archive/OCI tarball so pods can use it without a pull.

    Skipped (returns False) when this very file (path, size, mtime) was
    imported into this root before and its images are still there.
    """
    record = paths.root / "orb8-imports.json"
    try:
        imported: dict[str, dict[str, object]] = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        imported = {}
    stat = archive.stat()
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    entry = imported.get(str(archive.resolve()))
    if entry and entry.get("key") == key:
        names = entry.get("images")
        if isinstance(names, list) and set(map(str, names)) <= image_names(paths=paths):
            return False
    ctr(paths=paths, args=["images", "import", str(archive)], timeout=600)
    imported[str(archive.resolve())] = {"key": key, "images": archive_tags(archive)}
    record.write_text(json.dumps(imported, indent=2))
    return True


def archive_tags(archive: Path) -> list[str]:
    """The image names a ``docker save`` archive carries (its manifest.json)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            return []
        manifest = json.loads(member.read())
    return sorted({tag for image in manifest for tag in image.get("RepoTags") or []})


def image_names(*, paths: ContainerdPaths) -> set[str]:
    return set(ctr(paths=paths, args=["images", "list", "--quiet"]).split())


def kill_all_tasks(*, paths: ContainerdPaths) -> None:
    """SIGKILL and delete every task, then delete every container and sandbox
    (teardown after the kubelet is gone), so the kept root holds only images."""
    tasks = ctr(paths=paths, args=["tasks", "list", "--quiet"]).split()
    for task in tasks:
        subprocess.run(
            ["ctr", "--address", str(paths.socket), "--namespace", K8S_NAMESPACE,
             "tasks", "kill", "--signal", "SIGKILL", task],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip
    for task in tasks:
        subprocess.run(
            ["ctr", "--address", str(paths.socket), "--namespace", K8S_NAMESPACE,
             "tasks", "delete", "--force", task],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip
    containers = ctr(paths=paths, args=["containers", "list", "--quiet"]).split()
    if containers:
        subprocess.run(
            ["ctr", "--address", str(paths.socket), "--namespace", K8S_NAMESPACE,
             "containers", "delete", *containers],
            capture_output=True, check=False, timeout=120,
        )  # fmt: skip
