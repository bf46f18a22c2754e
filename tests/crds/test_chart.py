"""The Helm chart: linted, and installed by the real Helm engine into a fresh
kube-apiserver that has no orb8 CRDs yet (the session's control plane already
has them, and Helm skips CRDs that exist)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orb8_dev.controlplane import ControlPlane, start, stop
from orb8_dev.helm import CHART, Helm, find_helm
from tests.crds.manifests import trace_session

# Like the cluster tests these need Go-built tooling (helm): `make test-unit` leaves them out.
pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = {"tracesessions.orb8.io", "gputelemetries.orb8.io", "nodeagentconfigs.orb8.io"}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return find_helm(home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def bare_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second control plane, without the orb8 CRDs."""
    plane = start(state_dir=tmp_path_factory.mktemp("bare-plane"))
    try:
        yield plane
    finally:
        stop(state_dir=plane.state_dir)


def test_chart_lints(helm: Helm) -> None:
    result = helm("lint", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_template_includes_the_crds_verbatim(helm: Helm) -> None:
    result = helm("template", "orb8", str(CHART), "--include-crds")
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    crds = {
        doc["metadata"]["name"]: doc
        for doc in rendered
        if doc["kind"] == "CustomResourceDefinition"
    }
    assert set(crds) == CRD_NAMES
    for path in sorted((REPO / "crds").glob("*.yaml")):
        ours = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert crds[ours["metadata"]["name"]] == ours


def test_helm_install_creates_working_crds(helm: Helm, bare_plane: ControlPlane) -> None:
    assert not CRD_NAMES & set(bare_plane.kubectl("get", "crds", "-o", "name").stdout.split())
    result = helm(
        "install", "orb8", str(CHART), "--namespace", "orb8-system", "--create-namespace",
        "--kubeconfig", str(bare_plane.kubeconfig),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "orb8 0.1.0 is installed in namespace orb8-system" in result.stdout
    bare_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *[f"crd/{name}" for name in sorted(CRD_NAMES)],
    )  # fmt: skip
    labelled = bare_plane.kubectl(
        "get", "crds", "-l", "app.kubernetes.io/part-of=orb8", "-o", "name"
    ).stdout.split()
    assert sorted(labelled) == sorted(
        f"customresourcedefinition.apiextensions.k8s.io/{name}" for name in CRD_NAMES
    )
    bare_plane.kubectl("create", "namespace", "shop")
    bare_plane.kubectl("apply", "-n", "shop", "-f", "-", input=yaml.safe_dump(trace_session("t")))
    header = bare_plane.kubectl("get", "ts", "-n", "shop").stdout.splitlines()[0].split()
    assert header == [
        "NAME", "PHASE", "PODS", "NODES", "FLOWS", "BYTES", "ALERTS", "RETRANS", "DNS-ERRORS",
        "AGE",
    ]  # fmt: skip
    status = helm("status", "orb8", "-n", "orb8-system", "--kubeconfig", str(bare_plane.kubeconfig))
    assert "STATUS: deployed" in status.stdout
