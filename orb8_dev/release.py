"""orb8 installed by Helm on the local real node, as a user installs it.

``make images`` (``hack/build-images.sh``) builds the agent and operator
images as docker archives under ``build/images/``; no registry is reachable,
so they are imported into the node's containerd, and the chart runs with
``image.pullPolicy=Never``. The only other values differ from the defaults
because of where this node keeps things: its cgroup2 tree sits under a
cgroup parent of its own on a hybrid host, and its kubelet root directory
(with the pod-resources socket) is in the state directory.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orb8_common.errors import Orb8Error
from orb8_dev.controlplane import free_port
from orb8_dev.helm import CHART, Helm, find_helm
from orb8_dev.node import LocalNode

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO_ROOT / "build" / "images"
BUILD_IMAGES = REPO_ROOT / "hack" / "build-images.sh"
IMAGE_DEPS = REPO_ROOT / "hack" / "install-image-deps.sh"
RELEASE = "orb8"
NAMESPACE = "orb8-system"


class ReleaseError(Orb8Error):
    """orb8 could not be built, installed or removed on the local node."""


@dataclass(frozen=True)
class Orb8Release:
    node: LocalNode
    helm: Helm
    name: str = RELEASE
    namespace: str = NAMESPACE

    @property
    def agent_daemonset(self) -> str:
        return f"{self.name}-agent"

    def helm_run(self, *args: str, timeout: float = 300.0) -> str:
        result = self.helm(
            *args, "-n", self.namespace, "--kubeconfig", str(self.node.plane.kubeconfig),
            timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise ReleaseError(f"helm {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def pods(self) -> list[dict[str, Any]]:
        out = self.node.plane.kubectl("get", "pods", "-n", self.namespace, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def agent_pod(self) -> dict[str, Any]:
        agents = [
            p
            for p in self.pods()
            if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "agent"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if len(agents) != 1:
            raise ReleaseError(f"expected one agent pod, found {len(agents)}")
        return agents[0]


def version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def build_images() -> list[Path]:
    """``make images``: the agent and operator archives (rebuilt only when their inputs change)."""
    for script in (IMAGE_DEPS, BUILD_IMAGES):
        result = subprocess.run(["bash", str(script)], check=False)
        if result.returncode != 0:
            raise ReleaseError(f"{script.relative_to(REPO_ROOT)} exited {result.returncode}")
    archives = [IMAGES_DIR / f"orb8-{part}-{version()}.tar" for part in ("agent", "operator")]
    missing = [str(a) for a in archives if not a.is_file()]
    if missing:
        raise ReleaseError(f"image archives missing after the build: {', '.join(missing)}")
    return archives


def helm_values(*, node: LocalNode) -> list[str]:
    """``--set`` pairs for this node (see the module docstring). The agent's
    metrics port is a free one: it uses the host's network, which other local
    nodes share."""
    return [
        "image.pullPolicy=Never",
        f"agent.metricsPort={free_port()}",
        f"agent.hostCgroupRoot=/sys/fs/cgroup/unified/{node.cgroup_parent.strip('/')}",
        f"agent.kubeletRootDir={node.kubelet_root}",
        "operator.sessionResyncSeconds=2",
    ]


def install(
    *, node: LocalNode, helm_home: Path, archives: list[Path], sets: list[str] | None = None,
    name: str = RELEASE, namespace: str = NAMESPACE, timeout: float = 240.0,
) -> Orb8Release:  # fmt: skip
    """Import the images, ``helm install`` the chart, wait until the operator and
    the agent are ready."""
    for archive in archives:
        node.import_image(archive=archive)
    release = Orb8Release(node=node, helm=find_helm(home=helm_home), name=name, namespace=namespace)
    flags = [arg for pair in [*helm_values(node=node), *(sets or [])] for arg in ("--set", pair)]
    release.helm_run(
        "upgrade", "--install", name, str(CHART), "--create-namespace", *flags, timeout=timeout
    )
    wait_ready(release=release, timeout=timeout)
    return release


def wait_ready(*, release: Orb8Release, timeout: float = 240.0) -> None:
    """Both workloads rolled out and every pod of the release Ready."""
    plane = release.node.plane
    for workload in (f"deployment/{release.name}-operator", f"daemonset/{release.name}-agent"):
        result = plane.kubectl(
            "rollout", "status", workload, "-n", release.namespace, f"--timeout={timeout:.0f}s",
            check=False, timeout=timeout + 30,
        )  # fmt: skip
        if result.returncode != 0:
            raise ReleaseError(
                f"{workload} not ready: {result.stderr.strip()}\n{describe_pods(release=release)}"
            )


def describe_pods(*, release: Orb8Release) -> str:
    out = release.node.plane.kubectl(
        "get", "pods", "-n", release.namespace, "-o", "wide", check=False
    )
    return out.stdout + out.stderr


def uninstall(*, release: Orb8Release, timeout: float = 120.0) -> None:
    """``helm uninstall --wait``, then wait until the release's pods are gone."""
    release.helm_run("uninstall", release.name, "--wait", f"--timeout={timeout:.0f}s")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not release.pods():
            return
        time.sleep(0.5)
    raise ReleaseError(f"pods of {release.name} still present:\n{describe_pods(release=release)}")
