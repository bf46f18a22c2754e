"""`make demo`: orb8 installed by Helm on a real local node, end to end.

1. A control plane and a real node: kubelet, containerd, scheduler,
   controller-manager (`make cluster-up`).
2. The agent and operator images (`make images`, content-cached), imported
   into the node's containerd; `helm install orb8 charts/orb8`; the operator
   Deployment and the agent DaemonSet become Ready.
3. Two pods, `checkout` and `cart`, from a small image built here.
4. docs/examples/demo-tracesession.yaml applied; checkout sends 8 MB to cart
   and calls ptrace, both through `kubectl exec`.
5. `kubectl get pods -n orb8-system`, `kubectl get tracesessions` and
   `orb8 get flows/alerts` print what orb8 saw.
6. Everything is torn down (pass --keep to leave the cluster and orb8 up).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orb8_dev import node, nodepods, release  # noqa: E402
from orb8_dev.node import LocalNode  # noqa: E402

SESSION_FILE = REPO / "docs" / "examples" / "demo-tracesession.yaml"
NAMESPACE, SESSION = "shop", "checkout-debug"
PAYLOAD = 8_000_000


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def shell(local: LocalNode, *args: str) -> None:
    """Print a kubectl command and its output, as a user would see it."""
    print(f"$ kubectl {' '.join(args)}", flush=True)
    out = local.plane.kubectl(*args, check=False)
    print((out.stdout + out.stderr).rstrip(), flush=True)


def wait_status(local: LocalNode, *, what: str, done: str, timeout: float) -> dict[str, Any]:
    """Poll the session's status until ``done`` (``attached`` or ``results``) holds."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = local.plane.kubectl("get", "ts", SESSION, "-n", NAMESPACE, "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            nodes: list[dict[str, Any]] = status.get("nodes") or []
            attached = any(
                n.get("state") == "Running" and "flows" in n.get("probes", []) for n in nodes
            )
            if (done == "attached" and attached) or (
                done == "results" and status.get("flows") and status.get("alerts")
            ):
                return status
        time.sleep(1)
    raise SystemExit(f"demo: {what} not seen after {timeout:.0f}s (status: {status})")


def run(*, state_dir: Path, keep: bool) -> int:
    started = time.monotonic()
    step("a control plane and a real node (kubelet, containerd, scheduler, controller-manager)")
    local = node.attach(state_dir=state_dir) or node.up(state_dir=state_dir)
    try:
        step("images: make images (agent, operator; rebuilt only when their sources change)")
        archives = release.build_images()
        for archive in archives:
            print(f"    {archive.relative_to(REPO)}")
        step("helm install orb8 charts/orb8 -n orb8-system --create-namespace")
        for pair in release.helm_values(node=local):
            print(f"    --set {pair}")
        installed = release.install(node=local, helm_home=state_dir / "helm", archives=archives)
        print(f"    operator and agent Ready ({time.monotonic() - started:.0f}s since start)")

        step(f"two pods in namespace {NAMESPACE}: checkout and cart")
        nodepods.create_namespace(node=local, name=NAMESPACE)
        pods = {
            "cart": nodepods.app_pod(
                name="cart", namespace=NAMESPACE, labels={"app": "cart", "tier": "web"},
                command="nc -ll -p 8080 -e orb8-sink & " + nodepods.IDLE,
            ),
            "checkout": nodepods.app_pod(
                name="checkout", namespace=NAMESPACE, labels={"app": "checkout", "tier": "web"}
            ),
        }  # fmt: skip
        for manifest in pods.values():
            nodepods.apply(node=local, manifest=manifest)
        cart = nodepods.wait_running(node=local, namespace=NAMESPACE, name="cart")
        checkout = nodepods.wait_running(node=local, namespace=NAMESPACE, name="checkout")
        for pod in (checkout, cart):
            print(f"    {pod.name}: {pod.ip}, host veth {nodepods.host_veth(node=local, pod=pod)}")

        step(f"kubectl apply -f {SESSION_FILE.relative_to(REPO)}")
        print(local.plane.kubectl("apply", "-f", str(SESSION_FILE)).stdout.strip())
        wait_status(local, what="the agent attaching", done="attached", timeout=60)

        step("traffic and a suspicious syscall, through kubectl exec")
        send = f"dd if=/dev/zero bs=1000 count={PAYLOAD // 1000} 2>/dev/null | nc {cart.ip} 8080"
        print(f"$ kubectl exec -n {NAMESPACE} checkout -- sh -c '{send}'")
        nodepods.exec_in(node=local, pod=checkout, command=send)
        print(f"$ kubectl exec -n {NAMESPACE} checkout -- orb8-victim ptrace")
        nodepods.exec_in(node=local, pod=checkout, command="orb8-victim ptrace")
        wait_status(local, what="flows and alerts in the session's status", done="results",
                    timeout=60)  # fmt: skip

        step("what runs, and what orb8 saw")
        shell(local, "get", "pods", "-n", installed.namespace, "-o", "wide")
        shell(local, "get", "tracesessions", "-n", NAMESPACE)
        env = local.plane.env()
        for what in ("flows", "alerts"):
            print(f"$ orb8 get {what} {SESSION} -n {NAMESPACE}", flush=True)
            out = subprocess.run(
                [sys.executable, "-m", "orb8_cli.main", "get", what, SESSION, "-n", NAMESPACE],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            print((out.stdout or out.stderr).rstrip(), flush=True)
        if not keep:
            step("clean-up: delete the session, helm uninstall orb8")
            local.plane.kubectl("delete", "-f", str(SESSION_FILE), "--timeout=60s")
            release.uninstall(release=installed)
    finally:
        if not keep:
            node.down(state_dir=state_dir)
            print("    node and control plane stopped; host restored")
    if keep:
        print(f"\ncluster and orb8 left running: export KUBECONFIG={local.plane.kubeconfig}")
        print(f"export PATH={local.plane.bin_dir}:$PATH")
    step(f"demo finished in {time.monotonic() - started:.0f}s")
    return 0
