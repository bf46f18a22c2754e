"""The images `make images` builds: run it (a no-op when its inputs are
unchanged; minutes on a cold machine), then read the docker-archive tarballs
the way `ctr images import` does: manifest.json, the image config, the layers."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from orb8_dev.helm import CHART, REPO

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OUT = REPO / "build" / "images"
SITE = "opt/orb8/lib/python3.11/site-packages/"
EM_BPF = 247  # ELF e_machine of BPF objects


@dataclass(frozen=True)
class Image:
    tags: list[str]
    config: dict[str, Any]
    files: dict[str, tarfile.TarInfo]  # path in the image -> entry (last layer wins)
    archive: Path
    layer_of: dict[str, str]

    def read(self, path: str) -> bytes:
        with tarfile.open(self.archive) as outer:
            layer = outer.extractfile(self.layer_of[path])
            assert layer is not None
            with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
                member = inner.extractfile(path)
                assert member is not None
                return member.read()


def load(archive: Path) -> Image:
    with tarfile.open(archive) as outer:
        manifest = json.loads(outer.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert len(manifest) == 1
        entry = manifest[0]
        config = json.loads(outer.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        files: dict[str, tarfile.TarInfo] = {}
        layer_of: dict[str, str] = {}
        for name in entry["Layers"]:
            layer = outer.extractfile(name)
            assert layer is not None, f"layer {name} listed but missing"
            with tarfile.open(fileobj=io.BytesIO(layer.read())) as inner:
                for member in inner.getmembers():
                    path = member.name.removeprefix("./")
                    parent, _, base = path.rpartition("/")
                    if base == ".wh..wh..opq":  # opaque directory: lower layers' content hidden
                        for gone in [p for p in files if p.startswith(parent + "/")]:
                            del files[gone], layer_of[gone]
                    elif base.startswith(".wh."):  # whiteout: a lower layer's file deleted
                        hidden = f"{parent}/{base[4:]}" if parent else base[4:]
                        for gone in [p for p in files if p == hidden or p.startswith(hidden + "/")]:
                            del files[gone], layer_of[gone]
                    else:
                        files[path] = member
                        layer_of[path] = name
    return Image(entry["RepoTags"], config, files, archive, layer_of)


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Image]]:
    result = subprocess.run(
        ["make", "-s", "images"], cwd=REPO, capture_output=True, text=True, timeout=3500,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    yield {t: load(OUT / f"orb8-{t}-{VERSION}.tar") for t in ("agent", "operator")}


def test_archives_are_named_like_the_charts_images(built: dict[str, Image]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for target, image in built.items():
        repo = values[target]["image"]["repository"]
        assert image.tags == [f"{values['image']['registry']}/{repo}:{chart['appVersion']}"]


def test_image_configs(built: dict[str, Image]) -> None:
    agent, operator = built["agent"].config["config"], built["operator"].config["config"]
    assert agent["User"] == "0:0"
    assert operator["User"] == "65532:65532"
    assert agent["Entrypoint"] == ["orb8-agent"]
    assert operator["Entrypoint"] == ["orb8-operator"]
    for config in (agent, operator):
        assert config["Labels"]["org.opencontainers.image.version"] == VERSION
        path = next(e for e in config["Env"] if e.startswith("PATH="))
        assert path.startswith("PATH=/opt/orb8/bin:")
    assert built["agent"].config["architecture"] == "amd64"


def test_agent_image_holds_the_bpf_objects_and_libbpf(built: dict[str, Image]) -> None:
    agent = built["agent"]
    for name in ("flows", "syscalls", "tcphealth", "dns", "hostflows"):
        elf = agent.read(f"{SITE}orb8_agent/bpf/{name}.bpf.o")
        assert elf[:4] == b"\x7fELF"
        assert int.from_bytes(elf[18:20], "little") == EM_BPF
    assert any(p.startswith("usr/lib/x86_64-linux-gnu/libbpf.so.1") for p in agent.files)
    assert "usr/bin/python3.11" in agent.files
    assert any(p.startswith(("sbin/tc", "usr/sbin/tc")) for p in agent.files)


def test_one_wheel_no_dev_tooling_no_build_tools(built: dict[str, Image]) -> None:
    for image in built.values():
        paths = image.files
        assert any(p.startswith(f"{SITE}orb8-{VERSION}.dist-info/") for p in paths)
        for unwanted in ("orb8_dev/", "tests/", "pip/", "setuptools/"):
            assert not any(p.startswith(SITE + unwanted) for p in paths), unwanted
        assert not any(p.startswith(("usr/bin/clang", "usr/sbin/bpftool")) for p in paths)
        lists = [p for p in paths if p.startswith("var/lib/apt/lists/") and "_Packages" in p]
        assert not lists, lists[:3]
    assert not any("libbpf.so" in p for p in built["operator"].files)


def test_a_second_run_rebuilds_nothing(built: dict[str, Image]) -> None:
    before = {t: (OUT / f"orb8-{t}-{VERSION}.tar").stat().st_mtime_ns for t in built}
    result = subprocess.run(
        ["hack/build-images.sh"], cwd=REPO, capture_output=True, text=True, timeout=600,
        check=True,
    )  # fmt: skip
    for target in built:
        assert f"orb8-{target}:{VERSION} up to date" in result.stderr
        assert (OUT / f"orb8-{target}-{VERSION}.tar").stat().st_mtime_ns == before[target]
