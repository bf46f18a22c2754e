"""Fixtures for the CRD tests: the orb8 CRDs installed in the real apiserver,
a fresh namespace per test module, and small kubectl helpers."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from orb8_dev.controlplane import ControlPlane


@dataclass(frozen=True)
class Cluster:
    """The control plane with the orb8 CRDs established, and a namespace to work in."""

    plane: ControlPlane
    namespace: str

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` (client-side apply, kubectl's default --validate=strict)."""
        return self.kubectl(
            "apply",
            "-n",
            self.namespace,
            "-f",
            "-",
            *extra,
            input=yaml.safe_dump(manifest),
            check=False,
        )

    def get_json(
        self, resource: str, name: str, *extra: str, namespaced: bool = True
    ) -> dict[str, Any]:
        args = ["get", resource, name, "-o", "json", *extra]
        if namespaced:
            args += ["-n", self.namespace]
        obj: dict[str, Any] = json.loads(self.kubectl(*args).stdout)
        return obj

    def exists(self, resource: str, name: str) -> bool:
        result = self.kubectl(
            "get",
            resource,
            name,
            "-n",
            self.namespace,
            "--ignore-not-found",
            "-o",
            "name",
            check=False,
        )
        return result.returncode == 0 and result.stdout.strip() != ""


@pytest.fixture(scope="session")
def orb8_crds(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with every CRD in crds/ applied and Established."""
    control_plane.apply_crds()
    return control_plane


@pytest.fixture(scope="module")
def cluster(orb8_crds: ControlPlane, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A fresh namespace for this test module. No namespace controller runs, so
    namespaces are never finalized; each module gets a new, unique name."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    namespace = f"crds-{module}-{uuid.uuid4().hex[:6]}"
    orb8_crds.kubectl("create", "namespace", namespace)
    yield Cluster(plane=orb8_crds, namespace=namespace)
