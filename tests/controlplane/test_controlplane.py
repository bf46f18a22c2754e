"""The local control plane is a real, RBAC-enforcing kube-apiserver."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from orb8_dev.controlplane import REPO_ROOT, ControlPlane


def _pinned_k8s_version() -> str:
    for line in (REPO_ROOT / "hack" / "k8s" / "versions.env").read_text().splitlines():
        if line.startswith("K8S_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("K8S_VERSION missing from versions.env")


def test_version_endpoint_reports_the_pinned_release(control_plane: ControlPlane) -> None:
    version = control_plane.get_json("/version")
    assert version["gitVersion"] == _pinned_k8s_version()
    assert version["gitTreeState"] == "clean"


def test_kubectl_lists_the_bootstrap_namespaces(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("get", "namespaces", "-o", "json").stdout
    names = {item["metadata"]["name"] for item in json.loads(out)["items"]}
    assert {"default", "kube-system", "kube-public"} <= names


def test_kubectl_client_matches_the_server(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == out["serverVersion"]["gitVersion"]


def test_rbac_denies_a_service_account_until_a_role_is_bound(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = f"rbac-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", ns)
    token = control_plane.kubectl("create", "token", "reader", "-n", ns).stdout.strip()
    assert token.count(".") == 2, "TokenRequest should return a signed JWT"

    as_reader = ["--token", token, "-n", ns]

    def can_list_pods() -> tuple[bool, str]:
        result = control_plane.kubectl("get", "pods", *as_reader, check=False)
        return result.returncode == 0, result.stderr

    allowed, stderr = can_list_pods()
    assert not allowed
    assert "forbidden" in stderr.lower()
    assert f"system:serviceaccount:{ns}:reader" in stderr

    control_plane.kubectl(
        "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", ns
    )
    control_plane.kubectl(
        "create", "rolebinding", "reader-pods", "--role=pod-reader",
        f"--serviceaccount={ns}:reader", "-n", ns,
    )  # fmt: skip
    allowed, stderr = can_list_pods()
    assert allowed, stderr


def test_unauthenticated_requests_are_refused(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("get", "namespaces", "--token", "not-a-token", check=False)
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "must be logged in" in result.stderr.lower()
