"""`make bench-operator`: the operator at scale, against a real apiserver, with
simulated agents that write real reports at the real interval.

Default size: 50 nodes, 5,000 running pods, 500 TraceSessions applied at
once, in two layouts: ``clustered`` (each app's pods on two nodes) and
``spread`` (each app's pods on every node, so every session touches every
node). For each layout it measures:

- ``converge_s``: from applying the sessions until every NodeAgentConfig
  lists exactly the (session, pod) pairs the selectors call for;
- ``status_converge_s``: until every session is Running with every node it
  spans merged into its status (the simulated agents start reporting once
  the node configs are correct; bounded below by their first report);
- ``apiserver_writes_per_s``: the apiserver's own count of mutating requests
  (``apiserver_request_total``, POST/PUT/PATCH/DELETE/APPLY) on orb8's kinds
  and Events over a steady window of six intervals while the agents report;
  target <= (nodes + sessions) / interval (``apiserver_all_writes_per_s``
  adds the apiserver's own lease and endpoint writes, ~0.2/s);
- ``max_object_bytes``: the largest NodeAgentConfig or TraceSession (JSON);
- ``drain_s``: from stopping the agents until orb8's writes settle (under
  0.5/s for 10 s), no sooner than every node's last report is stale and
  looked at (4 intervals after the first of a round, plus one): the
  statuses still owed are written, then each session's Degraded condition;
- ``operator_rss_mib``, ``operator_idle_cpu_pct`` (after the drain: nothing
  changes) and ``operator_steady_cpu_pct`` (agents reporting).

A simulated agent does what the real one does on the API: it reads its
NodeAgentConfig, builds one report per session (totals that grow, a few
flows each) and writes them with one merge patch of its status per interval,
shrinking every session's flow list by one factor when the whole would pass
the agent's byte budget. No kernel is involved: this measures the control
loop, not the data plane.

The sessions are applied once the operator's /readyz says its caches are in.
To see where the time goes: ORB8_BENCH_KEEP=<prefix> keeps the operator's
log and the apiserver's /metrics (request counts and latencies by resource
and verb); ORB8_BENCH_PYSPY=<prefix> samples the operator with py-spy, when
installed, for the first ORB8_BENCH_PYSPY_S seconds (default 30) after it is
ready; ORB8_BENCH_TRACEMALLOC=<prefix> runs it under tracemalloc and writes its
live allocations at the end of the steady window (slower: not a run to time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orb8_agent.control.node_report import REPORT_BUDGET_BYTES, wire_size  # noqa: E402
from orb8_common.crd import (  # noqa: E402
    GPU_TELEMETRIES,
    GROUP,
    NODE_AGENT_CONFIGS,
    TRACE_SESSIONS,
    VERSION,
)
from orb8_common.models import NodeAgentConfigSpec, to_wire  # noqa: E402
from orb8_dev.controlplane import ControlPlane, free_port, start, stop  # noqa: E402
from orb8_operator.reconcile import STALE_REPORTS  # noqa: E402

NAMESPACES = 10
PODS_PER_GROUP = 50  # pods per (namespace, app) group; sessions select one group each
FLOWS_PER_SESSION = 5  # flows a simulated agent lists per session (before the budget)
RESULTS = REPO / "bench" / "results" / "operator.json"
MEMTRACE = REPO / "bench" / "memtrace"  # its sitecustomize traces the operator
MUTATING = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def _parallel(func: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 16) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


def _retrying(call: Callable[..., Any], *args: Any, attempts: int = 5) -> Any:
    """``call(*args)``, again after a transient refusal (429, 5xx: an overloaded apiserver
    answers 504 now and then); a create that already went through (409) counts as done."""
    for attempt in range(attempts):
        try:
            return call(*args)
        except client.ApiException as err:
            if err.status == 409 and attempt:
                return None
            if err.status not in (429, 500, 502, 503, 504) or attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _proc_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and RSS bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the cluster --------------------------------------------------------------------


def layout_pods(*, nodes: int, pods: int, layout: str) -> list[dict[str, Any]]:
    """Pods as dicts (namespace, name, node, app, ip), grouped by (namespace, app)."""
    groups = max(1, pods // PODS_PER_GROUP)
    apps = max(1, groups // NAMESPACES)
    out = []
    for i in range(pods):
        group, member = i % groups, i // groups
        # spread: a group's pods on as many nodes as it has pods; clustered: on two nodes.
        spread = layout == "spread"
        node = (member + group) % nodes if spread else (2 * group + member % 2) % nodes
        out.append({
            "namespace": f"bench-{group % NAMESPACES}", "name": f"pod-{i:05d}",
            "node": f"node-{node:03d}", "app": f"app-{group // NAMESPACES % apps}",
            "ip": f"10.{100 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}",
        })  # fmt: skip
    return out


def populate(*, core: Any, nodes: int, layout: list[dict[str, Any]]) -> None:
    for i in range(NAMESPACES):
        _retrying(core.create_namespace, {"metadata": {"name": f"bench-{i}"}})
    _parallel(lambda i: _retrying(core.create_node, {"metadata": {
        "name": f"node-{i:03d}", "labels": {"bench": "yes"}}}), range(nodes))  # fmt: skip

    def create(pod: dict[str, Any]) -> None:
        _retrying(core.create_namespaced_pod, pod["namespace"], {
            "metadata": {"name": pod["name"], "labels": {"app": pod["app"]}},
            "spec": {"nodeName": pod["node"],
                     "containers": [{"name": "app", "image": "registry.invalid/bench:1"}]},
        })  # fmt: skip
        running = {"status": {
            "phase": "Running", "podIP": pod["ip"], "podIPs": [{"ip": pod["ip"]}],
            "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0,
                                   "image": "registry.invalid/bench:1", "imageID": "",
                                   "containerID": f"containerd://{pod['name']:0>64}",
                                   "state": {"running": {}}}],
        }}  # fmt: skip
        _retrying(core.patch_namespaced_pod_status, pod["name"], pod["namespace"], running)

    _parallel(create, layout)


def sessions_spec(
    *, count: int, layout: list[dict[str, Any]], interval: str
) -> list[dict[str, Any]]:
    groups = sorted({(p["namespace"], p["app"]) for p in layout})
    return [
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TraceSession",
         "metadata": {"name": f"ts-{i:04d}", "namespace": groups[i % len(groups)][0]},
         "spec": {"selector": {"podSelector": {"matchLabels": {"app": groups[i % len(groups)][1]}}},
                  "probes": {"network": {"enabled": True}}, "reportInterval": interval}}
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


def actual_configs(items: list[dict[str, Any]]) -> dict[str, set[tuple[str, str]]]:
    """node → {(session namespace/name, pod name)} the NodeAgentConfigs list (read with the
    models, as the agents read them)."""
    out = {}
    for item in items:
        spec = NodeAgentConfigSpec.model_validate(item["spec"])
        out[item["metadata"]["name"]] = {
            (f"{s.namespace}/{s.name}", p.name) for s in spec.sessions for p in s.pods
        }
    return out


def _list(custom: Any, plural: str) -> list[dict[str, Any]]:
    """Every object, 50 per page (NodeAgentConfigs with reports are up to 512 KiB each).

    A loaded test apiserver answers 5xx/429 now and then (504 "Too large resource
    version" while its watch cache catches up): the whole listing is tried again,
    a few times, instead of ending the run."""
    for attempt in range(5):
        try:
            return _list_once(custom, plural)[0]
        except client.ApiException as err:
            if err.status not in (429, 500, 503, 504) or attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def _list_once(custom: Any, plural: str) -> tuple[list[dict[str, Any]], str]:
    """Every object, and the resourceVersion of the snapshot all pages came from."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = custom.list_cluster_custom_object(
            GROUP, VERSION, plural, limit=50, _continue=token, _request_timeout=120
        )
        items.extend(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            return items, str(page["metadata"].get("resourceVersion", ""))


V = TypeVar("V")


def merged_sessions(items: list[dict[str, Any]], *, spans: dict[str, int]) -> dict[str, bool]:
    """session namespace/name → Running with every node it spans merged as Running."""
    out = {}
    for item in items:
        st = item.get("status") or {}
        key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        running = sum(1 for n in st.get("nodes") or [] if n.get("state") == "Running")
        out[key] = st.get("phase") == "Running" and running == spans.get(key, -1)
    return out


class ObjectWatch(Generic[V]):
    """name → ``summarize``'s view of each object of one plural, kept by a watch, and
    the moment ``complete`` first holds for the whole picture.

    A watch, as each agent keeps on its own config, rather than listing every
    object each few seconds: in the spread layout one listing of the configs is
    ~10 MB of JSON and one of the sessions ~20 MB, for the apiserver to encode
    and this process to parse, on the same cores as the operator being
    measured. Each written object is read once, when its event arrives, so the
    time is that of the write that completed the picture.
    """

    def __init__(
        self, *, custom: Any, plural: str,
        summarize: Callable[[list[dict[str, Any]]], dict[str, V]],
        complete: Callable[[dict[str, V]], bool],
    ) -> None:  # fmt: skip
        self._custom = custom
        self._plural = plural
        self._summarize = summarize
        self._complete = complete
        self._lock = threading.Lock()
        self._got: dict[str, V] = {}
        self._stop = threading.Event()
        self.done = threading.Event()
        self.converged_at: float | None = None
        self._version = ""
        self._thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)

    def start(self) -> None:
        """Lists the objects there are now, then watches from there."""
        self._relist()
        self._thread.start()

    def _relist(self) -> None:
        items, version = _list_once(self._custom, self._plural)
        with self._lock:
            self._got = self._summarize(items)
        self._version = version
        self._check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=70)

    def snapshot(self) -> dict[str, V]:
        with self._lock:
            return dict(self._got)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.done.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self._custom.list_cluster_custom_object, GROUP, VERSION, self._plural,
                    resource_version=self._version, timeout_seconds=30,
                    allow_watch_bookmarks=True,
                )  # fmt: skip
                for event in stream:
                    self._fold(event)
                    if self._stop.is_set() or self.done.is_set():
                        return
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                if getattr(err, "status", None) != 410:  # 410 Gone: too old; list again
                    print(f"bench-operator: {self._plural} watch: {err}", flush=True)
                    time.sleep(1.0)
                try:
                    self._relist()
                except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as relist:
                    print(f"bench-operator: {self._plural} list: {relist}", flush=True)

    def _fold(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            self._version = meta["resourceVersion"]
        if event["type"] == "BOOKMARK":
            return
        if event["type"] == "ERROR":
            raise client.ApiException(status=int(obj.get("code") or 0), reason=obj.get("reason"))
        with self._lock:
            if event["type"] == "DELETED":
                for key in self._summarize([obj]):
                    self._got.pop(key, None)
            else:
                self._got.update(self._summarize([obj]))
        self._check()

    def _check(self) -> None:
        with self._lock:
            complete = self._complete(self._got)
        if complete and self.converged_at is None:
            self.converged_at = time.monotonic()
            self.done.set()


def wait_settled(
    *, plane: ControlPlane, at_least_s: float, window_s: float = 10.0, below_per_s: float = 0.5,
    give_up_s: float = 300.0,
) -> float:  # fmt: skip
    """Seconds until the apiserver's mutating requests stay under ``below_per_s`` for a
    ``window_s`` window, waiting ``at_least_s`` first (at most ``give_up_s``)."""
    started = time.monotonic()
    time.sleep(at_least_s)
    while time.monotonic() - started < give_up_s:
        writes0, t0 = mutating_requests(plane).orb8, time.monotonic()
        time.sleep(window_s)
        if (mutating_requests(plane).orb8 - writes0) / (time.monotonic() - t0) < below_per_s:
            break
    return time.monotonic() - started


# What orb8 writes: its own kinds, and the Events the operator posts about them.
ORB8_WRITTEN = frozenset({TRACE_SESSIONS, GPU_TELEMETRIES, NODE_AGENT_CONFIGS, "events"})


@dataclass(frozen=True)
class Writes:
    orb8: int  # mutating requests on ORB8_WRITTEN
    all: int  # every mutating request (the apiserver's own lease and endpoint writes too)


def mutating_requests(plane: ControlPlane) -> Writes:
    """The apiserver's own count of mutating requests so far (apiserver_request_total)."""
    orb8 = total = 0
    for line in plane.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            verb = re.search(r'verb="([A-Z]+)"', line)
            if verb and verb.group(1) in MUTATING:
                count = int(float(line.rsplit(" ", 1)[1]))
                total += count
                resource = re.search(r'resource="([^"]*)"', line)
                orb8 += count if resource and resource.group(1) in ORB8_WRITTEN else 0
    return Writes(orb8=orb8, all=total)


# --- simulated agents -------------------------------------------------------------------


class SimAgents:
    """One report per node per interval into NodeAgentConfig/<node>.status, as agents write."""

    def __init__(self, *, custom: Any, nodes: list[str], interval_s: float) -> None:
        self._custom = custom
        self._nodes = nodes
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-agents", daemon=True)
        self._totals: dict[tuple[str, str], int] = defaultdict(int)
        self.writes = 0
        self.max_report_bytes = 0
        self.scaled_nodes: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _run(self) -> None:
        # Agents start at different moments: spread the nodes over the interval.
        step = self._interval / max(1, len(self._nodes))
        with ThreadPoolExecutor(max_workers=4) as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                for index, node in enumerate(self._nodes):
                    if self._stop.wait(max(0.0, started + index * step - time.monotonic())):
                        return
                    pool.submit(self._report, node)
                self._stop.wait(max(0.0, started + self._interval - time.monotonic()))

    def _report(self, node: str) -> None:
        try:
            nac = self._custom.get_cluster_custom_object(GROUP, VERSION, NODE_AGENT_CONFIGS, node)
        except client.ApiException:
            return  # no config (yet): nothing to serve
        sessions = [to_wire(s) | {"pods": [to_wire(p) for p in s.pods]}
                    for s in NodeAgentConfigSpec.model_validate(nac["spec"]).sessions]  # fmt: skip
        flows = FLOWS_PER_SESSION
        while True:
            reports = [self._session_report(node, s, flows) for s in sessions]
            size = wire_size(value=reports)
            if size <= REPORT_BUDGET_BYTES or flows == 0:
                break
            flows = max(0, int(flows * 0.9 * REPORT_BUDGET_BYTES / size))
            self.scaled_nodes.add(node)
        self.max_report_bytes = max(self.max_report_bytes, size)
        for s in sessions:
            self._totals[(node, s["uid"])] += 1
        try:
            self._custom.patch_cluster_custom_object_status(
                GROUP, VERSION, NODE_AGENT_CONFIGS, node,
                {"status": {"reports": reports, "heartbeat": _now()}},
            )  # fmt: skip
            self.writes += 1
        except client.ApiException as err:
            print(f"bench-operator: report of {node} refused: {err.status} {err.reason}",
                  flush=True)  # fmt: skip

    def _session_report(self, node: str, session: dict[str, Any], flows: int) -> dict[str, Any]:
        rounds = self._totals[(node, session["uid"])] + 1
        pods = session.get("pods") or []
        rows = []
        for i in range(flows):
            pod = pods[i % len(pods)] if pods else {"namespace": "", "name": "", "ips": ["0.0.0.0"]}
            rows.append({
                "source": {"namespace": pod["namespace"], "pod": pod["name"],
                           "ip": (pod.get("ips") or ["0.0.0.0"])[0], "port": 40000 + i},
                "destination": {"ip": f"10.96.0.{i + 1}", "port": 443},
                "protocol": "TCP", "bytes": 1000 * rounds * (i + 1), "packets": 10 * rounds,
                "firstSeen": _now(), "lastSeen": _now(), "node": node,
            })  # fmt: skip
        return {
            "uid": session["uid"], "kind": session["kind"], "namespace": session["namespace"],
            "name": session["name"], "generation": session.get("generation", 0),
            "trace": {"node": node, "state": "Running", "probes": ["flows"], "message": "",
                      "lastReportTime": _now(), "flowCount": FLOWS_PER_SESSION,
                      "bytes": 1000 * rounds * 15, "packets": 50 * rounds, "alertCount": 0,
                      "droppedEvents": 0, "flows": rows},
        }  # fmt: skip


# --- the operator ------------------------------------------------------------------------


def wait_ready(*, proc: subprocess.Popen[bytes], port: int, tag: str, log: Path) -> None:
    """Until the operator's /readyz answers 200 (its list-then-watch caches are synced)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{tag}: the operator exited; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or 503 until the caches are in
        time.sleep(0.5)
    raise SystemExit(f"{tag}: the operator was not ready after 180s; see {log}")


def profile(*, pid: int, layout: str) -> None:
    """ORB8_BENCH_PYSPY=<prefix>: sample the operator with py-spy (when installed) for
    ORB8_BENCH_PYSPY_S seconds (default 30) from now into <prefix>-<layout>.txt
    (collapsed stacks)."""
    prefix = os.environ.get("ORB8_BENCH_PYSPY")
    spy = Path(sys.executable).parent / "py-spy"
    if not prefix or not spy.exists():
        return
    seconds = os.environ.get("ORB8_BENCH_PYSPY_S", "30")
    subprocess.Popen(
        [str(spy), "record", "-r", "40", "-f", "raw", "-o", f"{prefix}-{layout}.txt",
         "--duration", seconds, "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def memtrace_env(*, env: dict[str, str], layout: str) -> dict[str, str]:
    """ORB8_BENCH_TRACEMALLOC=<prefix>: run the operator under tracemalloc
    (bench/memtrace/sitecustomize.py); its live allocations after the steady window go
    to <prefix>-<layout>.txt. Tracing slows the operator: that run's timings do not count."""
    prefix = os.environ.get("ORB8_BENCH_TRACEMALLOC")
    if not prefix:
        return env
    path = os.pathsep.join(p for p in (str(MEMTRACE), env.get("PYTHONPATH", "")) if p)
    return {
        **env,
        "PYTHONPATH": path,
        "ORB8_BENCH_TRACEMALLOC_OUT": str(Path(f"{prefix}-{layout}.txt").resolve()),
    }


def memtrace_dump(*, pid: int, layout: str) -> None:
    """Ask a traced operator for its live allocations, and wait for them (≤ 300 s)."""
    prefix = os.environ.get("ORB8_BENCH_TRACEMALLOC")
    if not prefix:
        return
    out = Path(f"{prefix}-{layout}.txt")
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 300
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    where = f"in {out}" if out.exists() else "not written"
    print(f"bench-operator [{layout}]: live allocations {where}", flush=True)


def keep_logs(*, plane: ControlPlane, state: Path, layout: str) -> None:
    """ORB8_BENCH_KEEP=<prefix>: keep the operator's log and the apiserver's /metrics
    as <prefix>-<layout>-operator.log and <prefix>-<layout>-apiserver-metrics.txt."""
    prefix = os.environ.get("ORB8_BENCH_KEEP")
    if not prefix:
        return
    try:
        metrics = plane.kubectl("get", "--raw", "/metrics").stdout
        Path(f"{prefix}-{layout}-apiserver-metrics.txt").write_text(metrics)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"bench-operator: apiserver metrics not kept: {err}", flush=True)
    log = state / "operator.log"
    if log.exists():
        shutil.copy(log, f"{prefix}-{layout}-operator.log")


# --- one run -----------------------------------------------------------------------------


def _spanned(want: dict[str, set[tuple[str, str]]]) -> dict[str, int]:
    """session namespace/name → how many nodes it spans."""
    out: dict[str, int] = defaultdict(int)
    for pairs in want.values():
        for key in {session for session, _ in pairs}:
            out[key] += 1
    return out


def run(
    *, nodes: int, pods: int, sessions: int, layout: str, interval_s: int,
    steady_s: float, idle_s: float, configs_only: bool = False,
) -> dict[str, Any]:  # fmt: skip
    state = Path(tempfile.mkdtemp(prefix="orb8-bench-"))
    plane: ControlPlane = start(state_dir=state)
    operator: subprocess.Popen[bytes] | None = None
    agents: SimAgents | None = None
    tag = f"bench-operator [{layout} {nodes}n/{sessions}s/{pods}p]"
    try:
        plane.apply_crds()
        config.load_kube_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        core: Any = client.CoreV1Api()
        custom: Any = client.CustomObjectsApi()
        t0 = time.monotonic()
        pod_layout = layout_pods(nodes=nodes, pods=pods, layout=layout)
        populate(core=core, nodes=nodes, layout=pod_layout)
        print(f"{tag}: nodes and running pods in {time.monotonic() - t0:.1f}s", flush=True)

        log = (state / "operator.log").open("w")
        metrics_port = free_port()
        operator = proc = subprocess.Popen(
            [sys.executable, "-m", "orb8_operator.main", "--liveness",
             f"http://127.0.0.1:{free_port()}/healthz", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(metrics_port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env=memtrace_env(env=plane.env(), layout=layout),
        )  # fmt: skip
        # Sessions are applied once its pod and node-config caches are in (/readyz):
        # convergence measures the running operator, not its start-up.
        wait_ready(proc=proc, port=metrics_port, tag=tag, log=state / "operator.log")
        profile(pid=proc.pid, layout=layout)

        manifests = sessions_spec(count=sessions, layout=pod_layout, interval=f"{interval_s}s")
        want = expected_configs(sessions=manifests, pods=pod_layout)
        spans = _spanned(want)
        agents = SimAgents(custom=custom, nodes=sorted(want), interval_s=interval_s)
        configs: ObjectWatch[set[tuple[str, str]]] = ObjectWatch(
            custom=custom, plural=NODE_AGENT_CONFIGS, summarize=actual_configs,
            complete=lambda got: got == want,
        )  # fmt: skip
        statuses: ObjectWatch[bool] = ObjectWatch(
            custom=custom, plural=TRACE_SESSIONS,
            summarize=lambda items: merged_sessions(items, spans=spans),
            complete=lambda got: len(got) == sessions and all(got.values()),
        )  # fmt: skip
        configs.start()
        applied = time.monotonic()
        _parallel(lambda m: _retrying(custom.create_namespaced_custom_object,
            GROUP, VERSION, m["metadata"]["namespace"], TRACE_SESSIONS, m), manifests)  # fmt: skip
        applied_all = time.monotonic()
        converged_at = status_at = None
        wanted_pairs = sum(len(pairs) for pairs in want.values())
        last_print = applied
        while time.monotonic() - applied < 240 and status_at is None:
            if configs_only and converged_at is not None:
                break
            if converged_at is None:
                if configs.done.wait(timeout=1.0):
                    converged_at = configs.converged_at
                    assert converged_at is not None
                    configs.stop()
                    print(f"{tag}: node configs correct after {converged_at - applied:.1f}s",
                          flush=True)  # fmt: skip
                    if not configs_only:  # they start once their configs are there
                        agents.start()
                        statuses.start()
            elif statuses.done.wait(timeout=1.0):
                status_at = statuses.converged_at
            if time.monotonic() - last_print >= 10:
                last_print = time.monotonic()
                if converged_at is None:
                    got = configs.snapshot()
                    right = sum(len(got.get(n, set()) & pairs) for n, pairs in want.items())
                    what = f"node configs ({right}/{wanted_pairs} (session, pod) pairs right)"
                else:
                    merged = sum(statuses.snapshot().values())
                    what = f"statuses ({merged}/{sessions} sessions merged)"
                print(f"{tag}: {time.monotonic() - applied:.0f}s, waiting for {what}", flush=True)
        if converged_at is None:
            configs.stop()
        statuses.stop()
        convergence = (converged_at - applied) if converged_at else float("inf")
        if configs_only:
            _, rss = _proc_usage(proc.pid)
            return {
                "nodes": nodes, "sessions": sessions, "pods": pods, "layout": layout,
                "converge_s": round(convergence, 2), "apply_s": round(applied_all - applied, 2),
                "operator_rss_mib": round(rss / 2**20, 1),
            }  # fmt: skip
        status_convergence = (status_at - applied) if status_at else float("inf")
        print(f"{tag}: statuses merged after {status_convergence:.1f}s", flush=True)

        # Steady state: agents report every interval, nothing else changes.
        time.sleep(interval_s)
        cpu0, _ = _proc_usage(proc.pid)
        writes0, t_steady = mutating_requests(plane), time.monotonic()
        time.sleep(steady_s)
        writes1, t_steady_end = mutating_requests(plane), time.monotonic()
        cpu1, rss_steady = _proc_usage(proc.pid)
        memtrace_dump(pid=proc.pid, layout=layout)
        writes_per_s = (writes1.orb8 - writes0.orb8) / (t_steady_end - t_steady)
        all_writes_per_s = (writes1.all - writes0.all) / (t_steady_end - t_steady)
        print(f"{tag}: steady {writes_per_s:.1f} writes/s "
              f"(budget {(nodes + sessions) / interval_s:.1f})", flush=True)  # fmt: skip

        sizes = [0]
        try:
            sizes += [len(json.dumps(item, separators=(",", ":")).encode())
                      for plural in (NODE_AGENT_CONFIGS, TRACE_SESSIONS)
                      for item in _list(custom, plural)]  # fmt: skip
        except client.ApiException as err:
            print(f"{tag}: listing objects for their sizes failed: {err.status}", flush=True)

        # Idle: no agent reports, no changes; the operator should do next to nothing.
        # First the agents' silence has to play out: the statuses still owed go out;
        # STALE_REPORTS intervals after its last report each node turns stale, and the
        # operator looks one interval after a session's first node does (the reports
        # of one round are spread over an interval), writing each session once.
        # Idle starts after that, once writes have settled.
        agents.stop()
        silence_s = (STALE_REPORTS + 1) * interval_s + 5
        drain_s = wait_settled(plane=plane, at_least_s=silence_s)
        print(f"{tag}: writes settled {drain_s:.0f}s after the agents stopped", flush=True)
        cpu2, _ = _proc_usage(proc.pid)
        idle_writes0 = mutating_requests(plane)
        time.sleep(idle_s)
        cpu3, rss_idle = _proc_usage(proc.pid)
        idle_writes1 = mutating_requests(plane)
        idle_writes = idle_writes1.orb8 - idle_writes0.orb8
        idle_all_writes = idle_writes1.all - idle_writes0.all
        return {
            "nodes": nodes, "sessions": sessions, "pods": pods, "layout": layout,
            "report_interval_s": interval_s,
            "converge_s": round(convergence, 2),
            # null: not reached within the bench's 240 s (JSON has no Infinity)
            "status_converge_s": (
                round(status_convergence, 2) if math.isfinite(status_convergence) else None
            ),
            "apply_s": round(applied_all - applied, 2),
            "apiserver_writes_per_s": round(writes_per_s, 2),
            "apiserver_all_writes_per_s": round(all_writes_per_s, 2),
            "write_budget_per_s": round((nodes + sessions) / interval_s, 2),
            "drain_s": round(drain_s, 1),
            "idle_writes_per_s": round(idle_writes / idle_s, 2),
            "idle_all_writes_per_s": round(idle_all_writes / idle_s, 2),
            "max_object_bytes": max(sizes),
            "max_agent_report_bytes": agents.max_report_bytes,
            "nodes_that_shrank_their_report": len(agents.scaled_nodes),
            "node_configs": len(want),
            "operator_rss_mib": round(max(rss_steady, rss_idle) / 2**20, 1),
            "operator_steady_cpu_pct": round(100 * (cpu1 - cpu0) / steady_s, 1),
            "operator_idle_cpu_pct": round(100 * (cpu3 - cpu2) / idle_s, 1),
        }  # fmt: skip
    finally:
        if agents is not None:
            agents.stop()
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        keep_logs(plane=plane, state=state, layout=layout)
        stop(state_dir=state)
        shutil.rmtree(state, ignore_errors=True)  # etcd's data: 100-300 MB a run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--layout", choices=["clustered", "spread", "both"], default="both")
    parser.add_argument("--interval", type=int, default=15, help="report interval, seconds")
    parser.add_argument("--steady-seconds", type=float, default=90.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument(
        "--configs-only", action="store_true",
        help="stop once the node configs are right (converge_s, apply_s); no agents",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    layouts = ["clustered", "spread"] if args.layout == "both" else [args.layout]
    results: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for layout in layouts:
        results.append(
            run(nodes=args.nodes, pods=args.pods, sessions=args.sessions, layout=layout,
                interval_s=args.interval, steady_s=args.steady_seconds, idle_s=args.idle_seconds,
                configs_only=args.configs_only)
        )  # fmt: skip
        text = json.dumps(results if len(results) > 1 else results[0], indent=2)
        print(text, flush=True)
        args.out.write_text(text + "\n")  # after each layout, so a later failure loses nothing
    return 0 if all(r["converge_s"] != float("inf") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
