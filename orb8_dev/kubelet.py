"""Plays the kubelet (and the CNI and container runtime) for simulated nodes.

No kubelet runs against the test apiserver, so this harness does its job:

* Node objects, Ready, with an InternalIP;
* Pod objects bound to a node, whose status it patches to Running with a
  podIP, a hostIP and containerStatuses carrying ``containerd://`` ids;
* for each pod, what a runtime would leave on the host: a network namespace
  whose ``eth0`` is one end of a veth pair (the host end enslaved to a test
  bridge, like the bridge CNI), and a cgroup v2 directory laid out as kubelet's
  systemd driver and containerd name it, holding a process that lives in both.

All simulated nodes share this host, so every agent sees every veth; each
attaches only to the pods its NodeAgentConfig names. The cgroup tree lives
under a per-test parent directory, passed to agents as their cgroup root.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orb8_dev.cgroups import Cgroup, remove_tree
from orb8_dev.controlplane import REPO_ROOT, ControlPlane
from orb8_dev.netns import run, unique

POD_PREFIX_LEN = 16


@dataclass
class SimPod:
    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    netns: str
    host_if: str
    container_id: str
    cgroup: Cgroup
    sleeper: subprocess.Popen[bytes]

    def spawn(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Run ``args`` inside this pod: its network namespace and its container's cgroup."""
        return self.cgroup.spawn(args, enter=["ip", "netns", "exec", self.netns], **popen)

    def run(self, args: Sequence[str], *, timeout: float = 60) -> str:
        proc = self.spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} in {self.name} failed: {err.decode().strip()}")
        return out.decode()


@dataclass
class SimKubelet:
    plane: ControlPlane
    cgroup_root: Path
    bridge: str = field(default_factory=lambda: unique("o8br"))
    pods: dict[str, SimPod] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    _next_ip: int = 10

    def __post_init__(self) -> None:
        self.cgroup_root.mkdir(parents=True, exist_ok=True)
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["sysctl", "-qw", f"net.ipv6.conf.{self.bridge}.disable_ipv6=1"])
        run(["ip", "link", "set", self.bridge, "up"])
        self._subnet = f"10.{secrets.randbelow(200) + 20}"

    def add_node(self, *, name: str, labels: Mapping[str, str] | None = None) -> None:
        index = len(self.nodes) + 1
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
        }
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(node))
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "simulated by the orb8 test harness",
                    },
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"127.0.1.{index}"},
                    {"type": "Hostname", "address": name},
                ],
            }
        }
        self._patch_status("node", name, status)
        self.nodes.append(name)

    def run_pod(
        self, *, namespace: str, name: str, node: str,
        labels: Mapping[str, str] | None = None, container: str = "app",
    ) -> SimPod:  # fmt: skip
        """Create a Running pod on ``node``, backed by a netns, a veth and a cgroup."""
        ip = f"{self._subnet}.{self._next_ip // 250}.{self._next_ip % 250 + 2}"
        self._next_ip += 1
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": {
                "nodeName": node,
                "containers": [{"name": container, "image": "registry.invalid/orb8-sim:1"}],
            },
        }
        created = json.loads(
            self.plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest)).stdout
        )
        uid = created["metadata"]["uid"]
        container_id = secrets.token_hex(32)

        netns, host_if = unique("o8pod"), unique("o8h")
        run(["ip", "netns", "add", netns])
        # IPv4-only pods: no router solicitations or MLD reports cluttering the flows.
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], netns=netns)
        run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"], netns=netns)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1"])
        run(["ip", "link", "set", host_if, "master", self.bridge, "up"])
        run(["ip", "addr", "add", f"{ip}/{POD_PREFIX_LEN}", "dev", "eth0"], netns=netns)
        run(["ip", "link", "set", "eth0", "up"], netns=netns)
        run(["ip", "link", "set", "lo", "up"], netns=netns)

        pod_slice = f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
        path = (
            self.cgroup_root / "kubepods.slice" / "kubepods-besteffort.slice" / pod_slice
            / f"cri-containerd-{container_id}.scope"
        )  # fmt: skip
        path.mkdir(parents=True)
        cgroup = Cgroup(path=path)
        sleeper = cgroup.spawn(["sleep", "infinity"], enter=["ip", "netns", "exec", netns])

        node_ip = f"127.0.1.{self.nodes.index(node) + 1}" if node in self.nodes else "127.0.1.250"
        self._patch_status(
            "pod", name, _running_status(ip=ip, host_ip=node_ip, container=container,
                                         container_id=container_id),
            namespace=namespace,
        )  # fmt: skip
        pod = SimPod(namespace, name, uid, node, ip, netns, host_if, container_id, cgroup, sleeper)
        self.pods[f"{namespace}/{name}"] = pod
        return pod

    def delete_pod(self, pod: SimPod) -> None:
        """Remove the Pod object (as kubelet confirms a deletion) and tear down its sandbox."""
        self.plane.kubectl(
            "delete", "pod", pod.name, "-n", pod.namespace, "--grace-period=0", "--force",
            "--wait=false", check=False,
        )  # fmt: skip
        self._teardown(pod)
        self.pods.pop(f"{pod.namespace}/{pod.name}", None)

    def _teardown(self, pod: SimPod) -> None:
        pod.sleeper.kill()
        pod.sleeper.wait(timeout=10)
        run(["ip", "link", "del", pod.host_if], check=False)
        run(["ip", "netns", "del", pod.netns], check=False)

    def close(self) -> None:
        """Tear down every sandbox and remove the Pod and Node objects this harness made,
        so that later tests sharing the apiserver see none of them."""
        for pod in list(self.pods.values()):
            self.plane.kubectl(
                "delete", "pod", pod.name, "-n", pod.namespace, "--grace-period=0", "--force",
                "--wait=false", check=False,
            )  # fmt: skip
            self._teardown(pod)
        self.pods.clear()
        if self.nodes:
            self.plane.kubectl("delete", "node", *self.nodes, "--wait=false", check=False)
        run(["ip", "link", "del", self.bridge], check=False)
        remove_tree(self.cgroup_root)

    def _patch_status(
        self, kind: str, name: str, status: Mapping[str, Any], *, namespace: str | None = None
    ) -> None:
        args = [
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        ]
        if namespace:
            args += ["-n", namespace]
        self.plane.kubectl(*args)


def _running_status(*, ip: str, host_ip: str, container: str, container_id: str) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    return {
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": now,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container,
                    "containerID": f"containerd://{container_id}",
                    "image": "registry.invalid/orb8-sim:1",
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
    }
