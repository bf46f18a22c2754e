"""kube-proxy for the local node, so ClusterIP Services are real DNAT.

It runs in nftables mode (this kernel has nf_tables built in, Debian's
``nftables`` package gives ``nft``; no iptables binary is needed) with the
node's Service range (``--service-cluster-ip-range`` of the apiserver, see
``nodenet.NodeNetwork.service_cidr``) and its pod range as the cluster CIDR.

kube-proxy owns the host-wide nftables tables ``ip kube-proxy`` and
``ip6 kube-proxy``: two of them on one host would delete each other's rules.
So one local node per host runs it: the first to claim
``/run/orb8-dev/kube-proxy.json`` (owner state directory and pid); a node
started while another one's kube-proxy is alive runs without it
(``LocalNode.kube_proxy`` is False, and tests that need Services say why).
``stop`` kills it and removes both tables. The slot is claimed before the
control plane starts: with kube-proxy the apiserver listens on the node IP
(the ``kubernetes`` Service's endpoint) and kube-proxy DNATs the Service IP
there; an endpoint that is itself a ClusterIP would be rejected by
kube-proxy's ``cluster-ips-check``.

Pod → ClusterIP → pod traffic on one node: the client's packet is routed
through the host (the ClusterIP is off the pod subnet) and DNATed in
prerouting; the backend's reply is bridged straight back to the client, so
it must pass netfilter to be reverse-NATed: ``net.bridge.bridge-nf-call-iptables``
is set to 1 (the node's host baseline restores it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from orb8_common.procfs import pid_alive
from orb8_dev import controlplane, hoststate
from orb8_dev.nodenet import LOCK_DIR, NodeNetwork, host_lock

OWNER = LOCK_DIR / "kube-proxy.json"
TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def config(*, network: NodeNetwork, kubeconfig: Path) -> dict[str, object]:
    """KubeProxyConfiguration for a local node (nftables mode)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": network.node_name,
        "clusterCIDR": network.pod_subnet,
        "detectLocalMode": "ClusterCIDR",
        # NodePorts only on the node's own address, never the machine's others
        "nodePortAddresses": [f"{network.node_ip}/32"],
        "healthzBindAddress": f"127.0.0.1:{controlplane.free_port()}",
        "metricsBindAddress": f"127.0.0.1:{controlplane.free_port()}",
        # leave the host's conntrack table size and timeouts as they are
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def claim(*, state_dir: Path) -> bool:
    """Take the host's one kube-proxy slot for ``state_dir``. False: another
    live node holds it."""
    with host_lock():
        try:
            owner = json.loads(OWNER.read_text())
        except (OSError, json.JSONDecodeError):
            owner = None
        if (
            owner is not None
            and owner.get("state_dir") != str(state_dir)
            and pid_alive(int(owner.get("pid", -1)))
        ):
            return False
        OWNER.parent.mkdir(parents=True, exist_ok=True)
        # our own pid until kube-proxy's is known: the claim holds while we start
        OWNER.write_text(json.dumps({"state_dir": str(state_dir), "pid": os.getpid()}))
        return True


def start(
    *, state_dir: Path, network: NodeNetwork, kubeconfig: Path, bin_dir: Path, log_dir: Path
) -> int | None:
    """Start kube-proxy if this host has none; its pid, or None when another node's runs."""
    if not claim(state_dir=state_dir):
        return None
    path = state_dir / "node" / "kube-proxy-config.json"
    path.write_text(json.dumps(config(network=network, kubeconfig=kubeconfig), indent=2))
    BRIDGE_NF.write_text("1")
    pid = controlplane._spawn(
        cmd=[str(bin_dir / "kube-proxy"), f"--config={path}", "--v=1"],
        log=log_dir / "kube-proxy.log",
    )
    with host_lock():
        OWNER.write_text(json.dumps({"state_dir": str(state_dir), "pid": pid}))
    return pid


def stop(*, state_dir: Path, pid: int | None) -> None:
    """Kill this node's kube-proxy, remove its nftables tables, free the slot."""
    if pid is not None:
        hoststate.kill_pids([pid], grace_s=5)
    with host_lock():
        try:
            owner = json.loads(OWNER.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if owner.get("state_dir") != str(state_dir):
            return  # not ours: never touch another node's rules
        for family, table in TABLES:
            subprocess.run(
                ["nft", "delete", "table", family, table], capture_output=True, check=False
            )
        OWNER.unlink(missing_ok=True)


def tables_present() -> list[str]:
    """kube-proxy's nftables tables that exist now (for teardown checks)."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    present = {tuple(line.split()[1:3]) for line in out.stdout.splitlines() if line.strip()}
    return [f"{f} {t}" for f, t in TABLES if (f, t) in present]
