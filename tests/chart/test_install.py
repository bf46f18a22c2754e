"""The chart installed by Helm into the real apiserver (RBAC on): every object
accepted, the service accounts allowed exactly their jobs, upgrades roll the
pods when settings change, and uninstall leaves nothing of the release."""

from __future__ import annotations

import json

import pytest

from orb8_dev.controlplane import ControlPlane
from orb8_dev.helm import CHART, Helm
from tests.chart.conftest import Release, new_release

pytestmark = pytest.mark.cluster


def test_every_object_is_in_the_cluster(release: Release) -> None:
    manifest = release.manifest()
    assert len(manifest) >= 11
    for doc in manifest:
        kind, name = doc["kind"], doc["metadata"]["name"]
        cluster_scoped = kind in ("ClusterRole", "ClusterRoleBinding")
        where = [] if cluster_scoped else ["-n", release.namespace]
        got = json.loads(release.plane.kubectl("get", kind, name, *where, "-o", "json").stdout)
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    status = release.run("status", release.name).stdout
    assert "STATUS: deployed" in status


def test_notes_tell_the_next_commands(release: Release) -> None:
    notes = release.run("get", "notes", release.name).stdout
    assert f"rollout status daemonset/{release.name}-agent" in notes
    assert f"helm test {release.name} -n {release.namespace}" in notes
    assert "kubectl wait ts/checkout-debug -n shop --for=condition=Complete" in notes


AGENT = "agent"
OPERATOR = "operator"

# (who, verb, resource, namespace or None for all, allowed)
RBAC_TABLE = [
    # The agent: watches its config, writes status only.
    (AGENT, "get", "secrets", "default", False),
    (AGENT, "list", "secrets", None, False),
    (AGENT, "watch", "nodeagentconfigs.orb8.io", None, True),
    (AGENT, "list", "nodeagentconfigs.orb8.io", None, True),
    (AGENT, "patch", "nodeagentconfigs.orb8.io/status", None, True),
    (AGENT, "patch", "nodeagentconfigs.orb8.io", None, False),
    (AGENT, "create", "nodeagentconfigs.orb8.io", None, False),
    (AGENT, "patch", "tracesessions.orb8.io/status", "shop", False),
    (AGENT, "patch", "gputelemetries.orb8.io/status", "ml", False),
    (AGENT, "get", "gputelemetries.orb8.io", "ml", True),
    (AGENT, "list", "tracesessions.orb8.io", "shop", False),
    (AGENT, "patch", "tracesessions.orb8.io", "shop", False),
    (AGENT, "update", "tracesessions.orb8.io", "shop", False),
    (AGENT, "delete", "tracesessions.orb8.io", "shop", False),
    (AGENT, "get", "tracesessions.orb8.io", "shop", True),
    (AGENT, "list", "pods", None, False),
    # ClusterIP flows name their Service and backend: listed and watched, never written,
    # never one object read.
    (AGENT, "list", "services", None, True),
    (AGENT, "list", "endpointslices.discovery.k8s.io", None, True),
    (AGENT, "watch", "services", None, True),
    (AGENT, "watch", "endpointslices.discovery.k8s.io", None, True),
    (AGENT, "get", "services", "shop", False),
    (AGENT, "get", "endpointslices.discovery.k8s.io", "shop", False),
    (AGENT, "patch", "services", "shop", False),
    (AGENT, "update", "endpointslices.discovery.k8s.io", "shop", False),
    (AGENT, "create", "events", "shop", False),
    (AGENT, "get", "configmaps", "default", False),
    # The operator: its job...
    (OPERATOR, "list", "pods", None, True),
    (OPERATOR, "watch", "pods", None, True),
    (OPERATOR, "list", "nodes", None, True),
    (OPERATOR, "watch", "namespaces", None, True),
    (OPERATOR, "watch", "tracesessions.orb8.io", None, True),
    (OPERATOR, "patch", "tracesessions.orb8.io", "shop", True),
    (OPERATOR, "patch", "tracesessions.orb8.io/status", "shop", True),
    (OPERATOR, "patch", "gputelemetries.orb8.io/status", "ml", True),
    (OPERATOR, "delete", "tracesessions.orb8.io", "shop", True),
    (OPERATOR, "create", "nodeagentconfigs.orb8.io", None, True),
    (OPERATOR, "patch", "nodeagentconfigs.orb8.io", None, True),
    (OPERATOR, "delete", "nodeagentconfigs.orb8.io", None, True),
    (OPERATOR, "create", "events", "shop", True),
    (OPERATOR, "create", "events.events.k8s.io", "shop", True),
    (OPERATOR, "watch", "customresourcedefinitions.apiextensions.k8s.io", None, True),
    # ...and not more.
    (OPERATOR, "get", "secrets", "default", False),
    (OPERATOR, "list", "secrets", None, False),
    (OPERATOR, "create", "pods", "shop", False),
    (OPERATOR, "delete", "pods", "shop", False),
    (OPERATOR, "patch", "pods", "shop", False),
    (OPERATOR, "get", "configmaps", "default", False),
    (OPERATOR, "create", "tracesessions.orb8.io", "shop", False),
    (OPERATOR, "patch", "nodeagentconfigs.orb8.io/status", None, False),
    (OPERATOR, "patch", "nodes", None, False),
    (OPERATOR, "create", "customresourcedefinitions.apiextensions.k8s.io", None, False),
    (OPERATOR, "list", "clusterkopfpeerings.kopf.dev", None, False),
    (OPERATOR, "create", "clusterroles.rbac.authorization.k8s.io", None, False),
]


@pytest.mark.parametrize(
    ("who", "verb", "resource", "namespace", "allowed"),
    RBAC_TABLE,
    ids=[f"{w}-{v}-{r}-{'yes' if a else 'no'}" for w, v, r, _, a in RBAC_TABLE],
)
def test_service_account_permissions(
    release: Release, who: str, verb: str, resource: str, namespace: str | None, allowed: bool
) -> None:
    sa = f"{release.name}-{who}"
    assert release.can_i(sa, verb, resource, namespace=namespace) is allowed


def test_the_roles_grant_nothing_beyond_their_rules(release: Release) -> None:
    """No wildcard anywhere; the agent writes nothing but its NodeAgentConfig's status."""
    for who in (AGENT, OPERATOR):
        role = release.get("clusterrole", f"{release.name}-{who}")
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], rule
    agent = release.get("clusterrole", f"{release.name}-agent")
    written = {
        res for rule in agent["rules"] for res in rule["resources"]
        if set(rule["verbs"]) - {"get", "list", "watch"}
    }  # fmt: skip
    assert written == {"nodeagentconfigs/status"}


def test_upgrade_with_changed_settings_rolls_the_pods(release: Release) -> None:
    def annotations() -> tuple[str, str]:
        deploy = release.get("deployment", f"{release.name}-operator")
        ds = release.get("daemonset", f"{release.name}-agent")
        return (
            deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
            ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
        )

    before = annotations()
    release.run("upgrade", release.name, str(CHART), "--reuse-values")
    assert annotations() == before, "an upgrade without changes must not roll pods"
    release.run(
        "upgrade", release.name, str(CHART), "--reuse-values",
        "--set", "operator.sessionResyncSeconds=7", "--set", "agent.logLevel=DEBUG",
    )  # fmt: skip
    after = annotations()
    assert after[0] != before[0] and after[1] != before[1]
    config = release.get("configmap", f"{release.name}-config")["data"]
    assert config["ORB8_OPERATOR_SESSION_RESYNC_S"] == "7"
    assert config["ORB8_AGENT_LOG_LEVEL"] == "DEBUG"
    assert "REVISION: 3" in release.run("status", release.name).stdout


def test_refused_values_fail_install_with_the_reason(
    control_plane: ControlPlane, helm: Helm
) -> None:
    result = helm(
        "install", "orb8-bad", str(CHART), "-n", "orb8-bad", "--create-namespace",
        "--set", "agent.privileged=yes", "--kubeconfig", str(control_plane.kubeconfig),
    )  # fmt: skip
    assert result.returncode != 0
    assert "at '/agent/privileged'" in result.stderr
    listed = helm("list", "-A", "--kubeconfig", str(control_plane.kubeconfig)).stdout
    assert "orb8-bad" not in listed


def _labelled(plane: ControlPlane, *, instance: str, namespace: str) -> list[str]:
    """Every object, of every listable kind, that carries the release's instance label."""
    listing = plane.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = ",".join(k for k in listing if k not in ("events", "events.events.k8s.io"))
    out = plane.kubectl(
        "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={instance}",
        "-o", "name", "--ignore-not-found",
    ).stdout  # fmt: skip
    return out.split()


def test_uninstall_leaves_nothing_but_the_crds(control_plane: ControlPlane, helm: Helm) -> None:
    release = new_release(control_plane, helm, prefix="orb8-gone")
    present = _labelled(control_plane, instance=release.name, namespace=release.namespace)
    assert len(present) >= 11, present
    assert any(name.startswith("clusterrole.") for name in present)
    release.run("uninstall", release.name, "--wait")
    assert _labelled(control_plane, instance=release.name, namespace=release.namespace) == []
    # CRDs stay (Helm never deletes crds/): sessions in the cluster survive.
    crds = control_plane.kubectl("get", "crds", "-l", "app.kubernetes.io/part-of=orb8",
                                 "-o", "name").stdout.split()  # fmt: skip
    assert len(crds) == 3
    control_plane.kubectl("delete", "namespace", release.namespace, "--wait=false")
