"""GitOps: the docs' example sessions, applied the way Argo CD and Flux apply
them (server-side apply), are reconciled by the operator running with the
chart's own ServiceAccount and RBAC, and afterwards `kubectl diff
--server-side` shows nothing: the operator and the agents never write spec or
user metadata. Sessions look healthy to kstatus (Flux) while running and once
finished."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from orb8_dev.controlplane import ControlPlane, free_port
from orb8_dev.helm import REPO, Helm
from orb8_dev.serviceaccounts import kubeconfig_for
from tests.chart.conftest import Release, new_release

pytestmark = pytest.mark.cluster

EXAMPLES = REPO / "docs" / "examples"
GITOPS_DOC = REPO / "docs" / "gitops.md"
# Runs an Argo CD health script the way Argo CD does: `obj` is a global, the
# script returns a table with status and message.
LUA_HARNESS = """
local cjson = require "cjson"
obj = cjson.decode(io.read("*a"))
local script = assert(loadstring(os.getenv("ARGO_HEALTH_SCRIPT")))
local hs = script()
io.write(hs.status, "|", hs.message or "")
"""


def argo_health_scripts() -> dict[str, str]:
    """The health checks docs/gitops.md tells users to put into argocd-cm."""
    blocks = re.findall(r"```yaml\n(.*?)```", GITOPS_DOC.read_text(), flags=re.S)
    configmaps = [yaml.safe_load(b) for b in blocks if "name: argocd-cm" in b]
    assert len(configmaps) == 1
    data: dict[str, str] = configmaps[0]["data"]
    return data


def argo_health(obj: dict[str, Any]) -> tuple[str, str]:
    script = argo_health_scripts()[f"resource.customizations.health.orb8.io_{obj['kind']}"]
    result = subprocess.run(
        ["lua5.1", "-e", LUA_HARNESS], input=json.dumps(obj), text=True,
        capture_output=True, check=False, env={**os.environ, "ARGO_HEALTH_SCRIPT": script},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("|")
    return status, message


def wait_for(predicate: Callable[[], Any], *, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus' verdict for a custom resource (the rules Flux's health checks use):
    InProgress while deleting or while status.observedGeneration lags
    metadata.generation or Reconciling=True, Failed when Stalled=True, else Current."""
    meta, status = obj["metadata"], obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "InProgress"
    if "observedGeneration" in status and status["observedGeneration"] != meta["generation"]:
        return "InProgress"
    for cond in status.get("conditions") or ():
        if cond["type"] == "Reconciling" and cond["status"] == "True":
            return "InProgress"
        if cond["type"] == "Stalled" and cond["status"] == "True":
            return "Failed"
    return "Current"


@pytest.fixture(scope="module")
def gitops(control_plane: ControlPlane, helm: Helm) -> Iterator[Release]:
    release = new_release(control_plane, helm, prefix="orb8-gitops")
    try:
        yield release
    finally:
        helm("uninstall", release.name, "-n", release.namespace,
             "--kubeconfig", str(control_plane.kubeconfig))  # fmt: skip
        control_plane.kubectl("delete", "namespace", release.namespace, "--wait=false")


@dataclass(frozen=True)
class GitRepo:
    path: Path
    namespaces: dict[str, str]  # namespace in docs/examples -> the test's own
    cross: list[str]  # FROM:TO pairs the examples select across (operator consent)


@pytest.fixture(scope="module")
def repo_copy(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitRepo]:
    """docs/examples as a Git checkout would hold them, in namespaces of their own."""
    suffix = secrets.token_hex(3)
    out = tmp_path_factory.mktemp("gitops-repo")
    names: dict[str, str] = {}
    cross: set[str] = set()

    def mapped(ns: str) -> str:
        return names.setdefault(ns, f"gitops-{ns}-{suffix}")

    for path in sorted(EXAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        home = mapped(doc["metadata"]["namespace"])
        doc["metadata"]["namespace"] = home
        selector = doc["spec"].get("selector") or {}
        if "namespaces" in selector:
            selector["namespaces"] = [mapped(ns) for ns in selector["namespaces"]]
            cross.update(f"{home}:{ns}" for ns in selector["namespaces"] if ns != home)
        (out / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    assert len(list(out.glob("*.yaml"))) >= 5
    for ns in names.values():
        control_plane.kubectl("create", "namespace", ns)
    try:
        yield GitRepo(path=out, namespaces=names, cross=sorted(cross))
    finally:
        for ns in names.values():
            control_plane.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.fixture(scope="module")
def operator_as_its_service_account(
    control_plane: ControlPlane, gitops: Release, repo_copy: GitRepo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:  # fmt: skip
    """The operator process with the chart's ServiceAccount token: RBAC as deployed."""
    work = tmp_path_factory.mktemp("gitops-operator")
    kubeconfig = kubeconfig_for(
        plane=control_plane, namespace=gitops.namespace, name=f"{gitops.name}-operator",
        path=work / "kubeconfig",
    )  # fmt: skip
    log = work / "operator.log"
    namespaces = [arg for ns in repo_copy.namespaces.values() for arg in ("--namespace", ns)]
    # The consent docs/examples/tracesession-full.yaml asks for (docs/security.md).
    consent = [f"--allow-cross-namespace={pair}" for pair in repo_copy.cross]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orb8_operator.main",
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
         "--session-resync", "1", "--metrics-port", "0", *namespaces, *consent],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO),
             "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text(errors="replace")[-3000:])


def _sessions(plane: ControlPlane, namespaces: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for ns in namespaces.values():
        out = plane.kubectl("get", "tracesessions,gputelemetries", "-n", ns, "-o", "json").stdout
        items.extend(json.loads(out)["items"])
    return items


def _reconciled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    ready = [c for c in status.get("conditions") or () if c["type"] == "Ready"]
    return (
        "orb8.io/finalizer" in obj["metadata"].get("finalizers", ())
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and bool(ready)
        and ready[0]["observedGeneration"] == obj["metadata"]["generation"]
    )


def _diff(plane: ControlPlane, repo: Path) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("diff", "--server-side", "-f", str(repo), check=False)


def _fake_node_with_web_pod(plane: ControlPlane, *, node: str, ns: str) -> None:
    """A Node and one Running pod labelled tier=web on it (no kubelet here)."""
    plane.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))  # fmt: skip
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": ns, "labels": {"tier": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "web"}]},
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    status = {"status": {
        "phase": "Running", "podIP": "10.244.9.5", "podIPs": [{"ip": "10.244.9.5"}],
        "containerStatuses": [{
            "name": "app", "containerID": "containerd://" + "a" * 64, "image": "web",
            "imageID": "", "ready": True, "restartCount": 0, "state": {"running": {}},
        }],
    }}  # fmt: skip
    plane.kubectl("-n", ns, "patch", "pod", "web-0", "--subresource=status", "--type=merge",
                  "-p", json.dumps(status))  # fmt: skip


def test_argo_health_waits_for_the_operator() -> None:
    """Both kinds have the check; a session as Git holds it (no status) is Progressing."""
    scripts = argo_health_scripts()
    assert set(scripts) == {
        "resource.customizations.health.orb8.io_TraceSession",
        "resource.customizations.health.orb8.io_GpuTelemetry",
    }
    for path in sorted(EXAMPLES.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["generation"] = 1
        assert argo_health(doc) == ("Progressing", "waiting for the orb8 operator"), path.name
        doc["status"] = {"observedGeneration": 1, "phase": "Failed", "conditions": [
            {"type": "Ready", "status": "False", "message": "spec.duration: bad"}]}  # fmt: skip
        assert argo_health(doc) == ("Degraded", "spec.duration: bad")


def test_git_managed_sessions_never_drift(
    control_plane: ControlPlane, gitops: Release, repo_copy: GitRepo,
    operator_as_its_service_account: Path, tmp_path: Path,
) -> None:  # fmt: skip
    plane = control_plane
    repo, namespaces = repo_copy.path, repo_copy.namespaces
    assert repo_copy.cross, "an example selects across namespaces; the test must cover it"
    shop = namespaces["shop"]
    node = f"gitops-node-{secrets.token_hex(3)}"
    _fake_node_with_web_pod(plane, node=node, ns=shop)
    try:
        applied = plane.kubectl("apply", "--server-side", "-f", str(repo)).stdout
        assert applied.count("serverside-applied") == len(_sessions(plane, namespaces)) >= 5

        # The operator (as its ServiceAccount) takes every session on: finalizer,
        # status with observedGeneration, Ready with observedGeneration.
        wait_for(lambda: all(_reconciled(s) for s in _sessions(plane, namespaces)) or None,
                 what="the operator to reconcile every example session")  # fmt: skip
        # ...and wrote the node's config for the session whose pod exists.
        nac = wait_for(lambda: json.loads(plane.kubectl(
            "get", "nodeagentconfig", node, "-o", "json", check=False).stdout or "null"),
            what=f"NodeAgentConfig/{node}")  # fmt: skip
        assert "checkout-debug" in {s["name"] for s in nac["spec"]["sessions"]}

        # An agent, with the agent ServiceAccount's token, reports its node's share.
        agent_kubeconfig = kubeconfig_for(
            plane=plane, namespace=gitops.namespace, name=f"{gitops.name}-agent",
            path=tmp_path / "agent.kubeconfig",
        )  # fmt: skip
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        report = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
            "metadata": {"name": "checkout-debug", "namespace": shop},
            "status": {"nodes": [{"node": node, "state": "Running", "lastReportTime": now,
                                  "flowCount": 0, "bytes": 0, "packets": 0}]},
        }  # fmt: skip
        subprocess.run(
            [plane.kubectl_path, "--kubeconfig", str(agent_kubeconfig), "apply",
             "--server-side", f"--field-manager=orb8-agent/{node}", "--subresource=status",
             "-f", "-"],
            input=json.dumps(report), text=True, capture_output=True, check=True,
        )  # fmt: skip

        def running() -> dict[str, Any] | None:
            obj = json.loads(plane.kubectl("get", "ts", "checkout-debug", "-n", shop,
                                           "-o", "json").stdout)  # fmt: skip
            return obj if (obj.get("status") or {}).get("phase") == "Running" else None

        session = wait_for(running, what="checkout-debug Running")
        ready = next(c for c in session["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"

        # Nothing the operator or the agent wrote shows up as drift from Git.
        diff = _diff(plane, repo)
        assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
        assert all(kstatus(s) == "Current" for s in _sessions(plane, namespaces))
        # Argo CD, with the health check from docs/gitops.md.
        health = {
            s["metadata"]["name"]: argo_health(s) for s in _sessions(plane, namespaces)
        }  # fmt: skip
        assert health.pop("checkout-debug") == ("Healthy", "1/1 nodes reporting")
        assert health and all(
            h == ("Progressing", "no running pod matches the selector") for h in health.values()
        ), health

        # A change in Git: the new generation is applied, reconciled, and again no drift.
        flows = repo / "tracesession-network.yaml"
        flows.write_text(flows.read_text().replace("duration: 10m", "duration: 45m"))
        assert "duration: 45m" in flows.read_text()
        assert _diff(plane, repo).returncode == 1  # kubectl diff: 1 means "differs"
        plane.kubectl("apply", "--server-side", "-f", str(repo))
        wait_for(lambda: all(_reconciled(s) for s in _sessions(plane, namespaces)) or None,
                 what="the operator to catch up with the new generation")  # fmt: skip
        changed = json.loads(plane.kubectl("get", "-f", str(flows), "-o", "json").stdout)
        assert changed["metadata"]["generation"] == 2
        assert _diff(plane, repo).stdout == ""
    finally:
        plane.kubectl("delete", "-f", str(repo), "--wait=false", check=False)
        plane.kubectl("delete", "node", node, check=False)
        text = operator_as_its_service_account.read_text(errors="replace")
        assert "403" not in text and "forbidden" not in text.lower(), text[-3000:]


def test_a_finished_session_is_healthy(
    control_plane: ControlPlane, repo_copy: GitRepo,
    operator_as_its_service_account: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """A session whose duration has elapsed is Completed, and Current to kstatus."""
    ns = repo_copy.namespaces["shop"]
    repo = tmp_path / "repo"
    repo.mkdir()
    doc = yaml.safe_load((EXAMPLES / "tracesession-network.yaml").read_text())
    doc["metadata"] = {"name": "short", "namespace": ns}
    doc["spec"]["duration"] = "3s"
    (repo / "short.yaml").write_text(yaml.safe_dump(doc))
    control_plane.kubectl("apply", "--server-side", "-f", str(repo))

    def completed() -> dict[str, Any] | None:
        obj: dict[str, Any] = json.loads(control_plane.kubectl(
            "get", "ts", "short", "-n", ns, "-o", "json").stdout)  # fmt: skip
        return obj if (obj.get("status") or {}).get("phase") == "Completed" else None

    session = wait_for(completed, what="the short session to complete")
    conditions = {c["type"]: c for c in session["status"]["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert kstatus(session) == "Current"
    status, message = argo_health(session)
    assert (status, message) == ("Healthy", conditions["Complete"]["message"])
    assert message == "duration 3s elapsed"
    assert _diff(control_plane, repo).stdout == ""
    control_plane.kubectl("wait", "ts/short", "-n", ns, "--for=condition=Complete",
                          "--timeout=10s")  # fmt: skip
    control_plane.kubectl("delete", "-f", str(repo))
    shutil.rmtree(repo)
