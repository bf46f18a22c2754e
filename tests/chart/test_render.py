"""The chart as the real Helm engine renders it: lint, the apiserver's
server-side dry run, least privilege, the schema, monitors, dashboards and the
checksum that rolls pods. Cluster-marked like every test that needs Go-built tools."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from orb8_agent.main import _parser as agent_parser
from orb8_dev.controlplane import ControlPlane
from orb8_dev.helm import CHART, REPO, Helm
from orb8_operator.main import _parser as operator_parser
from tests.chart.conftest import Doc, Render, find

pytestmark = pytest.mark.cluster

AGENT_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}
ALL_ON = (
    "agent.privileged=false", "agent.sysResource=true", "operator.peering=true",
    "operator.watchNamespaces={shop,ml}", "operator.logLevel=DEBUG",
    "imagePullSecrets[0].name=pull", "agent.nodeSelector.gpu=yes",
)  # fmt: skip


def container(doc: Doc) -> Doc:
    containers: list[Doc] = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def test_lint_default_and_all_options(helm: Helm) -> None:
    for sets in ((), ALL_ON, ("agent.privileged=true",)):
        flags = [arg for pair in sets for arg in ("--set", pair)]
        result = helm("lint", "--strict", str(CHART), *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "sets", [(), ALL_ON, ("agent.privileged=true",)], ids=["default", "options", "privileged"]
)
def test_apiserver_accepts_every_rendered_object(
    render: Render, control_plane: ControlPlane, sets: tuple[str, ...]
) -> None:
    ns = f"chart-dry-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", ns)
    try:
        docs = render(*sets, namespace=ns)
        kinds = sorted({d["kind"] for d in docs})
        assert kinds == sorted({
            "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Deployment",
            "Pod", "Service", "ServiceAccount",
        })  # fmt: skip
        result = control_plane.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("(server dry run)") == len(docs)
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false")


def test_agent_least_privilege(render: Render) -> None:
    ds = find(render(), "DaemonSet", "-agent")
    pod = ds["spec"]["template"]["spec"]
    ctx = container(ds)["securityContext"]
    assert ctx["privileged"] is False
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": sorted(AGENT_CAPS, key=[
        "BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"].index)}  # fmt: skip
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["terminationGracePeriodSeconds"] >= 30
    # Host paths: exactly these, the writable ones only for state and bpffs.
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host == {
        "bpffs": "/sys/fs/bpf", "btf": "/sys/kernel/btf", "cgroup": "/sys/fs/cgroup",
        "run": "/run/orb8", "pod-resources": "/var/lib/kubelet/pod-resources",
    }  # fmt: skip
    mounts = {m["name"]: m for m in container(ds)["volumeMounts"]}
    writable = {n for n, m in mounts.items() if n in host and not m.get("readOnly")}
    assert writable == {"bpffs", "run"}


def test_every_added_capability_has_its_reason(render: Render) -> None:
    """Each capability line in the template sits under a comment saying why."""
    text = (CHART / "templates" / "agent-daemonset.yaml").read_text()
    lines = text.splitlines()
    caps = [i for i, line in enumerate(lines) if re.fullmatch(r"\s+- [A-Z_]+", line)]
    assert {lines[i].strip()[2:] for i in caps} == AGENT_CAPS | {"SYS_RESOURCE"}
    for i in caps:
        assert lines[i - 1].strip().startswith("#"), f"no comment above {lines[i].strip()}"


def test_agent_options(render: Render) -> None:
    ctx = container(find(render("agent.privileged=true"), "DaemonSet"))["securityContext"]
    assert ctx["privileged"] is True and "capabilities" not in ctx
    assert ctx["allowPrivilegeEscalation"] is True
    added = container(find(render("agent.sysResource=true"), "DaemonSet"))["securityContext"]
    assert added["capabilities"]["add"][-1] == "SYS_RESOURCE"
    hybrid = find(render("agent.hostCgroupRoot=/sys/fs/cgroup/unified"), "DaemonSet")
    volumes = {v["name"]: v for v in hybrid["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup/unified"


def test_agent_args_are_flags_the_agent_accepts(render: Render) -> None:
    docs = render(
        "agent.dcgmExporterHost=10.0.0.9", "agent.syscallHook=tp_btf", "agent.probes=flows",
        "agent.metricsMaxPods=50",
    )  # fmt: skip
    env = {**find(docs, "ConfigMap", "-config")["data"], "NODE_NAME": "node-a", "NODE_IP": "x"}
    agent = container(find(docs, "DaemonSet"))
    assert agent["env"][0] == {
        "name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}
    }  # fmt: skip
    args = agent_parser().parse_args(expand(agent["args"], env))
    assert args.node == "node-a"
    assert args.http_port == 9091
    assert args.cgroup_root == Path("/host/cgroup")
    assert args.syscall_hook == "tp_btf"
    assert args.dcgm_exporter_host == "10.0.0.9"
    assert args.probes == ("flows",)
    assert args.metrics_max_pods == 50
    assert args.agent_id is None  # agent-<node>: stable across restarts, so cleanup finds its state
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert str(args.cgroup_root) in mounts
    assert str(Path(args.pod_resources_socket).parent) in mounts
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports == {"metrics": 9091}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_operator_hardening_and_args(render: Render) -> None:
    docs = render(
        "operator.watchNamespaces={shop,ml}", "operator.sessionResyncSeconds=3",
        "operator.allowCrossNamespace={monitoring:*,shop:shop-staging}",
    )  # fmt: skip
    deploy = find(docs, "Deployment", "-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    op = container(deploy)
    assert op["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert "hostNetwork" not in pod and "hostPID" not in pod
    env = find(docs, "ConfigMap", "-config")["data"]
    args = operator_parser().parse_args(expand(op["args"], env))
    assert args.namespace == ["shop", "ml"]
    assert args.session_resync == 3
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert not args.peering
    assert args.allow_cross_namespace == ["monitoring:*", "shop:shop-staging"]
    assert args.metrics_port == 8081
    assert {p["name"]: p["containerPort"] for p in op["ports"]} == {"health": 8080, "metrics": 8081}
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Ready follows the operator's own watches (served with /metrics).
    assert op["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = find(docs, "Service", "-operator")
    ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {"health": "health", "metrics": "metrics"}
    quiet = find(render("operator.metricsPort=0"), "Deployment")
    assert "--metrics-port=0" in container(quiet)["args"]
    assert [p["name"] for p in container(quiet)["ports"]] == ["health"]
    assert container(quiet)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_image_tags_follow_the_package_version(render: Render) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    docs = render()
    assert container(find(docs, "DaemonSet"))["image"] == f"ghcr.io/orb8/orb8-agent:{version}"
    assert container(find(docs, "Deployment"))["image"] == f"ghcr.io/orb8/orb8-operator:{version}"
    digest = "sha256:" + "ab" * 32
    pinned = render(f"agent.image.digest={digest}", "operator.image.registry=my.registry:5000/x")
    assert container(find(pinned, "DaemonSet"))["image"] == f"ghcr.io/orb8/orb8-agent@{digest}"
    assert container(find(pinned, "Deployment"))["image"] == (
        f"my.registry:5000/x/orb8-operator:{version}"
    )


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("agent.privileged=maybe", ["/agent/privileged", "want boolean"]),
        ("operator.replicas=2", ["/operator/replicas", "maximum"]),
        ("agent.syscallHook=tp", ["/agent/syscallHook", "tracepoint"]),
        ("agent.probes=gpu", ["/agent/probes", "gpu"]),
        ("operator.allowCrossNamespace={shop}", ["/operator/allowCrossNamespace/0", "shop"]),
        ("agent.metricsPort=70000", ["/agent/metricsPort", "65,535"]),
        ("agent.colour=blue", ["/agent", "colour"]),
        ("image.pullPolicy=Sometimes", ["/image/pullPolicy", "IfNotPresent"]),
        ("serviceMonitor.interval=soon", ["/serviceMonitor/interval", "soon"]),
        ("agent.hostCgroupRoot=sys/fs/cgroup", ["/agent/hostCgroupRoot", "sys/fs/cgroup"]),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, setting: str, words: list[str]) -> None:
    result = helm("template", "orb8", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_monitors_only_when_enabled_and_the_api_exists(render: Render, helm: Helm) -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor"}
    for kind, key in (("ServiceMonitor", "serviceMonitor"), ("PodMonitor", "podMonitor")):
        refused = helm("template", "orb8", str(CHART), "--set", f"{key}.enabled=true")
        assert refused.returncode != 0
        assert f"{key}.enabled=true needs the monitoring.coreos.com/v1 {kind} API" in refused.stderr
        api = ("--api-versions", f"monitoring.coreos.com/v1/{kind}")
        docs = render(f"{key}.enabled=true", f"{key}.labels.release=prom", extra=api)
        monitors = [d for d in docs if d["kind"] == kind]
        assert sorted(m["metadata"]["name"] for m in monitors) == ["orb8-agent", "orb8-operator"]
        for monitor in monitors:
            component = monitor["metadata"]["name"].removeprefix("orb8-")
            assert monitor["metadata"]["labels"]["release"] == "prom"
            selected = monitor["spec"]["selector"]["matchLabels"]
            if kind == "ServiceMonitor":
                service = find(docs, "Service", "-agent-metrics" if component == "agent" else
                               "-operator")  # fmt: skip
                assert selected.items() <= service["metadata"]["labels"].items()
                assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
            else:
                workload = find(docs, "DaemonSet" if component == "agent" else "Deployment")
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert selected.items() <= labels.items()
                assert "metrics" in {p["name"] for p in container(workload)["ports"]}
            endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
            assert endpoints[0]["port"] == "metrics"
            assert endpoints[0]["path"] == "/metrics"
        only_agent = render(f"{key}.enabled=true", "operator.metricsPort=0", extra=api)
        assert [d["metadata"]["name"] for d in only_agent if d["kind"] == kind] == ["orb8-agent"]


def test_dashboards_configmap_from_every_json(render: Render, tmp_path: Path) -> None:
    chart = tmp_path / "orb8"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "dashboards", ignore_errors=True)
    assert not [d for d in render(chart=chart) if d["metadata"]["name"].endswith("-dashboards")]
    (chart / "dashboards").mkdir()
    boards = {
        "orb8-agents.json": {"title": "agents", "panels": [{"id": 1, "title": "a\nb"}]},
        "orb8-sessions.json": {"title": "sessions", "panels": []},
    }
    for name, board in boards.items():
        (chart / "dashboards" / name).write_text(json.dumps(board, indent=2))
    cm = find(render(chart=chart), "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {name: json.loads(text) for name, text in cm["data"].items()} == boards
    off = render("grafanaDashboards.enabled=false", chart=chart)
    assert not [d for d in off if d["metadata"]["name"].endswith("-dashboards")]


def test_the_charts_own_dashboards_are_shipped(render: Render) -> None:
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    maps = [d for d in render() if d["metadata"]["name"].endswith("-dashboards")]
    assert sorted(maps[0]["data"]) == files if files else maps == []
    for name in files:
        json.loads(maps[0]["data"][name])


def test_config_change_rolls_both_workloads(render: Render) -> None:
    def checksums(*sets: str) -> tuple[str, str]:
        docs = render(*sets)
        deploy, ds = (
            find(docs, kind)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for kind in ("Deployment", "DaemonSet")
        )
        return deploy, ds

    base = checksums()
    assert base == checksums()
    assert len(set(base)) == 1
    changed = checksums("operator.nodeConfigResyncSeconds=60")
    assert changed[0] != base[0] and changed[1] != base[1]
    assert checksums("agent.logLevel=DEBUG") != base


def test_helm_test_pod_checks_operator_and_agent(render: Render) -> None:
    docs = render("agent.nodeSelector.pool=gpu")
    pod = find(docs, "Pod", "-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    agent = container(find(docs, "DaemonSet"))
    probe = spec["containers"][0]
    assert probe["image"] == agent["image"]
    env = {e["name"]: e.get("value") for e in probe["env"]}
    operator_service = find(docs, "Service", "-operator")
    assert env["OPERATOR_URL"] == (
        f"http://{operator_service['metadata']['name']}.orb8-system.svc:8080/healthz"
    )
    assert env["AGENT_URL"] == "http://$(HOST_IP):9091/readyz"
    compile(probe["args"][0], "helm-test", "exec")  # the script is valid Python


def test_more_operator_replicas_only_with_peering(render: Render) -> None:
    deploy = find(render("operator.peering=true", "operator.replicas=2"), "Deployment")
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert "--peering" in container(deploy)["args"]
    role = find(render("operator.peering=true"), "ClusterRole", "-operator")
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings", "kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"]} in role["rules"]  # fmt: skip
    default = find(render(), "ClusterRole", "-operator")
    assert not [r for r in default["rules"] if "kopf.dev" in r["apiGroups"]]


def test_cross_namespace_policy_is_the_deploy_file(
    render: Render, control_plane: ControlPlane
) -> None:
    deploy_file = REPO / "deploy" / "cross-namespace-policy.yaml"
    chart_file = CHART / "files" / "cross-namespace-policy.yaml"
    assert chart_file.read_bytes() == deploy_file.read_bytes(), "run make sync-crds"
    assert not [d for d in render() if d["kind"].startswith("ValidatingAdmissionPolicy")]
    api = ("--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")
    docs = render("crossNamespacePolicy.enabled=true", extra=api)
    policy = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert policy == [d for d in yaml.safe_load_all(deploy_file.read_text()) if d]
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(policy), check=False
    )
    assert result.returncode == 0, result.stderr
