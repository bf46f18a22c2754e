"""`make demo`: orb8's whole loop on this machine, in a couple of minutes.

By default on a real local node with orb8 installed by Helm (hack/demo_node.py).
With --sim (`make demo DEMO_ARGS=--sim`), the simulated-node demo below:

1. A real kube-apiserver + etcd on loopback (`make cluster-up`), orb8's CRDs.
2. The orb8 operator and one agent, as the Deployment and DaemonSet would run them.
3. A simulated node with two pods, `checkout` and `cart`, each a real network
   namespace + veth + cgroup (no kubelet runs, so the harness plays it).
4. docs/examples/demo-tracesession.yaml applied; checkout sends traffic to
   cart and makes a suspicious syscall.
5. `kubectl get tracesessions` and `orb8 get flows/alerts` print what orb8 saw,
   and the agent's /metrics its per-pod counters.
6. Everything is torn down again (pass --keep to leave the control plane up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orb8_agent.dataplane.cgroupfs import cgroup2_mount  # noqa: E402
from orb8_common.errors import Orb8Error  # noqa: E402
from orb8_dev.controlplane import ControlPlane, attach, free_port, start, stop  # noqa: E402
from orb8_dev.kubelet import SimKubelet, SimPod  # noqa: E402
from orb8_dev.nodepods import orb8_tc_filters  # noqa: E402

SESSION_FILE = REPO / "docs" / "examples" / "demo-tracesession.yaml"
NAMESPACE, SESSION, NODE = "shop", "checkout-debug", "demo-node"
TRAFFIC = [sys.executable, "-m", "orb8_dev.traffic"]
VICTIM = [sys.executable, "-m", "orb8_dev.victim"]


METRICS_SHOWN = ("orb8_flow_bytes_total", "orb8_syscall_alerts_total")


def agent_metrics(*, port: int, prefixes: tuple[str, ...]) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return "\n".join(line for line in lines if line.startswith(prefixes))


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


@contextlib.contextmanager
def background(name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> Iterator[None]:
    log = log_dir / f"{name}.log"
    proc = subprocess.Popen(
        args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    print(f"    {name} started (pid {proc.pid}, log {log})")
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"    {name} stopped")


def send(client: SimPod, server: SimPod, *, nbytes: int, port: int) -> None:
    sink = server.spawn([*TRAFFIC, "tcp-sink", "--bind", "0.0.0.0", "--port", str(port)],
                        stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip
    assert sink.stdout is not None
    sink.stdout.readline()
    client.run([*TRAFFIC, "tcp-send", "--dst", server.ip, "--port", str(port),
                "--bytes", str(nbytes)])  # fmt: skip
    sink.communicate(timeout=60)


def wait_attached(pods: list[SimPod], *, timeout: float) -> None:
    """Wait until the agent has put its tc filters on every pod's host veth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(orb8_tc_filters(interface=pod.host_if) for pod in pods):
            return
        print("    waiting for the agent to attach…", flush=True)
        time.sleep(1)
    raise SystemExit(f"demo: the agent did not attach within {timeout:.0f}s; see the logs")


def wait_for_results(plane: ControlPlane, *, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        out = plane.kubectl("get", "ts", SESSION, "-n", NAMESPACE, "-o", "json", check=False)
        if out.returncode == 0:
            status = json.loads(out.stdout).get("status") or {}
            if status.get("flows") and status.get("alerts"):
                return status
        print(f"    waiting for the agent's report… phase={status.get('phase', '-')}", flush=True)
        time.sleep(2)
    raise SystemExit(f"demo: no flows and alerts in status after {timeout:.0f}s; see the logs")


def run(*, state_dir: Path, keep: bool) -> int:
    step("control plane: kube-apiserver + etcd on loopback (built from source, cached)")
    plane = attach(state_dir=state_dir) or start(state_dir=state_dir)
    print(f"    kube-apiserver {plane.version()} at {plane.server}")
    plane.apply_crds()
    print("    CRDs established: tracesessions, gputelemetries, nodeagentconfigs")
    env = plane.env()
    log_dir = state_dir / "logs"

    kubelet = SimKubelet(plane=plane, cgroup_root=cgroup2_mount() / "orb8-demo")
    try:
        step(f"a simulated node {NODE} with two pods in namespace {NAMESPACE}")
        plane.kubectl("create", "namespace", NAMESPACE, check=False)
        kubelet.add_node(name=NODE)
        checkout = kubelet.run_pod(namespace=NAMESPACE, name="checkout", node=NODE,
                                   labels={"app": "checkout", "tier": "web"})  # fmt: skip
        cart = kubelet.run_pod(namespace=NAMESPACE, name="cart", node=NODE,
                               labels={"app": "cart", "tier": "web"})  # fmt: skip
        for pod in (checkout, cart):
            print(f"    {pod.name}: {pod.ip}, host veth {pod.host_if}, cgroup {pod.cgroup.path}")

        metrics_port = free_port()
        with background("orb8-operator", [sys.executable, "-m", "orb8_operator.main",
                                          "--liveness", "http://127.0.0.1:0/healthz",
                                          "--metrics-port", "0"],
                        env=env, log_dir=log_dir), \
                background("orb8-agent", [sys.executable, "-m", "orb8_agent.main",
                                          "--node", NODE, "--cgroup-root", str(kubelet.cgroup_root),
                                          "--http-host", "127.0.0.1",
                                          "--http-port", str(metrics_port)],
                           env=env, log_dir=log_dir):  # fmt: skip
            step(f"kubectl apply -f {SESSION_FILE.relative_to(REPO)}")
            print(plane.kubectl("apply", "-f", str(SESSION_FILE)).stdout.strip())
            wait_attached([checkout, cart], timeout=60)

            step("traffic: checkout → cart (8 MB over TCP), and checkout calls ptrace")
            send(checkout, cart, nbytes=8_000_000, port=8080)
            checkout.run([*VICTIM, "--calls", "ptrace"])
            wait_for_results(plane, timeout=60)

            step(f"kubectl get tracesessions -n {NAMESPACE}")
            print(plane.kubectl("get", "tracesessions", "-n", NAMESPACE).stdout.rstrip())
            for what in ("flows", "alerts"):
                step(f"orb8 get {what} {SESSION} -n {NAMESPACE}")
                out = subprocess.run(
                    [sys.executable, "-m", "orb8_cli.main", "get", what, SESSION, "-n", NAMESPACE],
                    capture_output=True, text=True, env=env, check=False,
                )  # fmt: skip
                print(out.stdout.rstrip() or out.stderr.rstrip())

            step(
                f"curl -s 127.0.0.1:{metrics_port}/metrics | grep -E "
                "'^orb8_(flow_bytes|syscall_alerts)_total'"
            )
            print(agent_metrics(port=metrics_port, prefixes=METRICS_SHOWN))

            step("clean-up: delete the session (its finalizer detaches every probe)")
            plane.kubectl("delete", "-f", str(SESSION_FILE), "--timeout=60s")
    finally:
        kubelet.close()
        if not keep:
            stop(state_dir=state_dir)
            print("    control plane stopped")
    if keep:
        print(f"\ncontrol plane left running: export KUBECONFIG={plane.kubeconfig}")
    step("demo finished")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("ORB8_STATE", "/tmp/orb8-dev")))  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument(
        "--sim", action="store_true",
        help="a simulated node and orb8 as local processes (no kubelet, no images, no Helm)",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: run as root (it loads BPF programs and creates network namespaces)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.sim:
        return run(state_dir=args.state_dir.resolve(), keep=args.keep)
    from demo_node import run as run_on_node  # hack/demo_node.py, next to this script

    try:
        return run_on_node(state_dir=args.state_dir.resolve(), keep=args.keep)
    except Orb8Error as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
