"""Fixtures for the chart tests: the real Helm engine, renders, and installed releases."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from orb8_dev.controlplane import ControlPlane
from orb8_dev.helm import CHART, Helm, find_helm

Doc = dict[str, Any]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return find_helm(home=tmp_path_factory.mktemp("helm-home"))


def docs_of(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[Doc], kind: str, name_suffix: str = "") -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"{kind} *{name_suffix}: {[d['metadata']['name'] for d in matches]}"
    return matches[0]


Render = Callable[..., list[Doc]]


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """`helm template` with --set pairs (and any extra flags); fails the test on error."""

    def run(*sets: str, chart: Path = CHART, extra: tuple[str, ...] = (),
            namespace: str = "orb8-system", release: str = "orb8") -> list[Doc]:  # fmt: skip
        flags = [arg for pair in sets for arg in ("--set", pair)]
        result = helm("template", release, str(chart), "-n", namespace, *flags, *extra)
        assert result.returncode == 0, result.stderr
        return docs_of(result.stdout)

    return run


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    plane: ControlPlane
    helm: Helm

    def run(self, *args: str) -> Any:
        result = self.helm(*args, "-n", self.namespace, "--kubeconfig", str(self.plane.kubeconfig))
        assert result.returncode == 0, result.stderr
        return result

    def manifest(self) -> list[Doc]:
        return docs_of(self.run("get", "manifest", self.name).stdout)

    def get(self, kind: str, name: str) -> Doc:
        out = self.plane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        value: Doc = json.loads(out)
        return value

    def can_i(self, sa: str, verb: str, resource: str, *, namespace: str | None = None) -> bool:
        """`kubectl auth can-i` as the release's service account ``sa``."""
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        kind, _, sub = resource.partition("/")
        subresource = [f"--subresource={sub}"] if sub else []
        result = self.plane.kubectl(
            "auth", "can-i", verb, kind, *subresource, *where,
            f"--as=system:serviceaccount:{self.namespace}:{sa}", check=False,
        )  # fmt: skip
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"


def new_release(plane: ControlPlane, helm: Helm, *sets: str, prefix: str) -> Release:
    suffix = secrets.token_hex(3)
    release = Release(name=f"{prefix}-{suffix}", namespace=f"{prefix}-ns-{suffix}",
                      plane=plane, helm=helm)  # fmt: skip
    flags = [arg for pair in sets for arg in ("--set", pair)]
    # No --wait: this control plane has no kubelet, so pods never run; what
    # matters here is that the apiserver accepts every object.
    release.run("install", release.name, str(CHART), "--create-namespace", *flags)
    return release


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, helm: Helm) -> Iterator[Release]:
    """The chart installed with default values into its own namespace."""
    installed = new_release(control_plane, helm, prefix="orb8")
    try:
        yield installed
    finally:
        helm("uninstall", installed.name, "-n", installed.namespace,
             "--kubeconfig", str(control_plane.kubeconfig))  # fmt: skip
        control_plane.kubectl("delete", "namespace", installed.namespace, "--wait=false",
                              check=False)  # fmt: skip
