"""`make bench-operator`: the operator at scale, against a real apiserver.

50 simulated nodes and 5,000 running pods; 500 TraceSessions applied at once.
Measures how long until every NodeAgentConfig is exactly what the sessions
call for (target: 10 s), then counts status writes in a quiet steady state
(target: none when nothing changes), and the operator's RSS and CPU.

Only API objects are simulated here (no agents, no kernel): this measures
the operator, not the data plane.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from urllib3.exceptions import ProtocolError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orb8_dev.controlplane import ControlPlane, start, stop  # noqa: E402

GROUP, VERSION = "orb8.io", "v1alpha1"
NAMESPACES = 10
APPS_PER_NAMESPACE = 10


def _parallel(func: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 16) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(func, items):
            pass


def _proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and RSS bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE")


def populate(*, core: Any, nodes: int, pods: int) -> list[dict[str, Any]]:
    """Nodes and Running pods; returns the pods as (namespace, name, node, app, ip).

    Each (namespace, app) group's pods are spread over all nodes, so every
    session touches every node: the heaviest case for the node configs.
    """
    for i in range(NAMESPACES):
        core.create_namespace({"metadata": {"name": f"bench-{i}"}})
    _parallel(lambda i: core.create_node({"metadata": {"name": f"node-{i:02d}",
                                                       "labels": {"bench": "yes"}}}),
              range(nodes))  # fmt: skip
    layout = [
        {"namespace": f"bench-{i % NAMESPACES}", "name": f"pod-{i:05d}",
         "node": f"node-{(i // (NAMESPACES * APPS_PER_NAMESPACE)) % nodes:02d}",
         "app": f"app-{(i // NAMESPACES) % APPS_PER_NAMESPACE}",
         "ip": f"10.{100 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}"}
        for i in range(pods)
    ]  # fmt: skip

    def create(pod: dict[str, Any]) -> None:
        core.create_namespaced_pod(pod["namespace"], {
            "metadata": {"name": pod["name"], "labels": {"app": pod["app"]}},
            "spec": {"nodeName": pod["node"],
                     "containers": [{"name": "app", "image": "registry.invalid/bench:1"}]},
        })  # fmt: skip
        core.patch_namespaced_pod_status(pod["name"], pod["namespace"], {"status": {
            "phase": "Running", "podIP": pod["ip"], "podIPs": [{"ip": pod["ip"]}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                   "image": "registry.invalid/bench:1", "imageID": "",
                                   "containerID": f"containerd://{pod['name']:0>64}",
                                   "state": {"running": {}}}],
        }})  # fmt: skip

    _parallel(create, layout)
    return layout


def sessions_spec(count: int) -> list[dict[str, Any]]:
    return [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TraceSession",
         "metadata": {"name": f"ts-{i:03d}", "namespace": f"bench-{i % NAMESPACES}"},
         "spec": {"selector": {"podSelector": {"matchLabels": {
                      "app": f"app-{(i // NAMESPACES) % APPS_PER_NAMESPACE}"}}},
                  "probes": {"network": {"enabled": True}}, "reportInterval": "15s"}}
        for i in range(count)
    ]  # fmt: skip


def expected_configs(
    *, sessions: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> dict[str, set[tuple[str, str]]]:
    """node → {(session namespace/name, pod name)} as the selectors call for."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        by_key[(pod["namespace"], pod["app"])].append(pod)
    want: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for session in sessions:
        ns = session["metadata"]["namespace"]
        app = session["spec"]["selector"]["podSelector"]["matchLabels"]["app"]
        for pod in by_key[(ns, app)]:
            want[pod["node"]].add((f"{ns}/{session['metadata']['name']}", pod["name"]))
    return want


def actual_configs(custom: Any) -> dict[str, set[tuple[str, str]]]:
    items = custom.list_cluster_custom_object(GROUP, VERSION, "nodeagentconfigs")["items"]
    got: dict[str, set[tuple[str, str]]] = {}
    for item in items:
        got[item["metadata"]["name"]] = {
            (f"{s['namespace']}/{s['name']}", p["name"])
            for s in item["spec"].get("sessions") or [] for p in s.get("pods") or []
        }  # fmt: skip
    return got


def count_status_writes(*, custom: Any, seconds: float) -> dict[str, int]:
    """MODIFIED events on TraceSessions during a quiet window (every one is a write)."""
    writes: dict[str, int] = defaultdict(int)
    listing = custom.list_cluster_custom_object(GROUP, VERSION, "tracesessions")
    deadline = time.monotonic() + seconds
    version = listing["metadata"]["resourceVersion"]
    while (left := deadline - time.monotonic()) > 1:
        try:
            watcher: Any = watch.Watch()  # type: ignore[no-untyped-call]
            for event in watcher.stream(
                custom.list_cluster_custom_object, GROUP, VERSION, "tracesessions",
                resource_version=version, timeout_seconds=max(1, int(left)),
            ):  # fmt: skip
                meta = event["object"]["metadata"]
                version = meta["resourceVersion"]
                if event["type"] == "MODIFIED":
                    writes[f"{meta['namespace']}/{meta['name']}"] += 1
        except ProtocolError:
            continue  # the server closed the watch at its timeout
    return writes


def run(*, nodes: int, pods: int, sessions: int, quiet_s: float) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="orb8-bench-"))
    plane: ControlPlane = start(state_dir=state)
    operator: subprocess.Popen[bytes] | None = None
    try:
        plane.apply_crds()
        config.load_kube_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        core: Any = client.CoreV1Api()
        custom: Any = client.CustomObjectsApi()
        t0 = time.monotonic()
        layout = populate(core=core, nodes=nodes, pods=pods)
        print(f"bench-operator: {nodes} nodes and {pods} running pods in "
              f"{time.monotonic() - t0:.1f}s", flush=True)  # fmt: skip

        log = (state / "operator.log").open("w")
        operator = proc = subprocess.Popen(
            [sys.executable, "-m", "orb8_operator.main", "--liveness",
             "http://127.0.0.1:0/healthz"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=plane.env(),
        )  # fmt: skip
        time.sleep(3)  # let it list pods and nodes into its indexes
        cpu_before, _ = _proc_usage(proc.pid)

        manifests = sessions_spec(sessions)
        want = expected_configs(sessions=manifests, pods=layout)
        applied = time.monotonic()
        _parallel(lambda m: custom.create_namespaced_custom_object(
            GROUP, VERSION, m["metadata"]["namespace"], "tracesessions", m), manifests)  # fmt: skip
        applied_all = time.monotonic()
        converged_at = None
        wanted_pairs = sum(len(pairs) for pairs in want.values())
        last_report = applied
        while time.monotonic() - applied < 120:
            got = actual_configs(custom)
            if got == want:
                converged_at = time.monotonic()
                break
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                right = sum(len(got.get(node, set()) & pairs) for node, pairs in want.items())
                print(f"bench-operator: {time.monotonic() - applied:.0f}s: {right}/{wanted_pairs} "
                      f"(session, pod) pairs in place", flush=True)  # fmt: skip
            time.sleep(1.0)  # each check lists every (large) config: poll gently
        convergence = (converged_at - applied) if converged_at else float("inf")
        cpu_converge, rss_converge = _proc_usage(proc.pid)
        print(f"bench-operator: {sessions} sessions applied in {applied_all - applied:.1f}s; "
              f"node configs correct after {convergence:.1f}s", flush=True)  # fmt: skip

        time.sleep(20)  # let first-time status writes (phase, matchedPods) settle
        cpu_quiet_start, _ = _proc_usage(proc.pid)
        writes = count_status_writes(custom=custom, seconds=quiet_s)
        cpu_quiet_end, rss_quiet = _proc_usage(proc.pid)
        return {
            "nodes": nodes, "pods": pods, "sessions": sessions,
            "apply_seconds": round(applied_all - applied, 2),
            "convergence_seconds": round(convergence, 2),
            "convergence_vs_target_10s": round(convergence / 10.0, 2),
            "node_configs": len(want),
            "operator_cpu_seconds_to_converge": round(cpu_converge - cpu_before, 2),
            "operator_rss_mib_after_converge": round(rss_converge / 2**20, 1),
            "quiet_window_seconds": quiet_s,
            "status_writes_in_quiet_window": sum(writes.values()),
            "sessions_written_in_quiet_window": len(writes),
            "operator_cpu_percent_quiet": round(
                100 * (cpu_quiet_end - cpu_quiet_start) / quiet_s, 2),
            "operator_rss_mib_quiet": round(rss_quiet / 2**20, 1),
        }  # fmt: skip
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        stop(state_dir=state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--quiet-seconds", type=float, default=30.0)
    args = parser.parse_args()
    result = run(nodes=args.nodes, pods=args.pods, sessions=args.sessions,
                 quiet_s=args.quiet_seconds)  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0 if result["convergence_seconds"] != float("inf") else 1


if __name__ == "__main__":
    sys.exit(main())
