"""deploy/cross-namespace-policy.yaml against the real apiserver: a session may
select another namespace only if its creator may create sessions there.

Users are impersonated (``kubectl --as``) with RBAC Roles the test grants, so
the apiserver's own authorizer answers the policy's ``authorizer`` checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orb8_dev.controlplane import ControlPlane
from tests.crds.manifests import gpu_telemetry, trace_session
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.cluster

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "cross-namespace-policy.yaml"


@pytest.fixture
def policy(orb8_crds: ControlPlane) -> Iterator[ControlPlane]:
    orb8_crds.kubectl("apply", "-f", str(POLICY))
    try:
        yield orb8_crds
    finally:
        orb8_crds.kubectl("delete", "-f", str(POLICY), "--ignore-not-found")


def _grant(plane: ControlPlane, *, user: str, namespace: str, resource: str) -> None:
    plane.kubectl("create", "role", f"{user}-{resource}", "-n", namespace,
                  "--verb=create,get,update,patch", f"--resource={resource}.orb8.io")  # fmt: skip
    plane.kubectl("create", "rolebinding", f"{user}-{resource}", "-n", namespace,
                  f"--role={user}-{resource}", f"--user={user}")  # fmt: skip


def _create_as(
    plane: ControlPlane, user: str, manifest: dict[str, object], *extra: str
) -> tuple[int, str]:
    result = plane.kubectl("create", "--as", user, "-f", "-", *extra,
                           input=yaml.safe_dump(manifest), check=False)  # fmt: skip
    return result.returncode, result.stderr


def _until_enforced(plane: ControlPlane, user: str, manifest: dict[str, object]) -> str:
    """The policy is enforced once the apiserver's policy informer has it; probe
    with server-side dry runs, which run admission but store nothing."""

    def refused() -> str | None:
        rc, err = _create_as(plane, user, manifest, "--dry-run=server")
        return err if rc != 0 and "orb8-cross-namespace" in err else None

    found: str = wait_for(refused, timeout=60, what="the policy enforced")
    return found


@pytest.mark.parametrize("kind", ["tracesessions", "gputelemetries"])
def test_selecting_a_namespace_needs_the_right_to_create_sessions_there(
    policy: ControlPlane, kind: str
) -> None:
    plane = policy
    tag = uuid.uuid4().hex[:6]
    home, other = f"xns-home-{tag}", f"xns-other-{tag}"
    user = f"alice-{tag}"
    for ns in (home, other):
        plane.kubectl("create", "namespace", ns)
    _grant(plane, user=user, namespace=home, resource=kind)
    make = trace_session if kind == "tracesessions" else gpu_telemetry
    peek = make("peek", selector={"podSelector": {}, "namespaces": [home, other]})
    peek["metadata"]["namespace"] = home
    own = make("own", selector={"podSelector": {}, "namespaces": [home]})
    own["metadata"]["namespace"] = home

    err = _until_enforced(plane, user, peek)
    rc, err = _create_as(plane, user, peek)
    assert rc != 0 and "denied request" in err
    assert "spec.selector.namespaces: " in err and other in err
    assert f"may create {kind}" in err
    # Her own namespace needs nothing beyond the right to create there.
    rc, err = _create_as(plane, user, own)
    assert rc == 0, err

    _grant(plane, user=user, namespace=other, resource=kind)
    wait_for(lambda: _create_as(plane, user, peek, "--dry-run=server")[0] == 0, timeout=30,
             what="admitted once she may create sessions in the other namespace")  # fmt: skip
    rc, err = _create_as(plane, user, peek)
    assert rc == 0, err
