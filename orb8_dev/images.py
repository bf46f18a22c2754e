"""Small container images for the local node, built here without a registry.

* ``pause``: the pod sandbox image, one static C program (``hack/node/pause.c``).
* ``app``: pods for demos and tests: Debian's static busybox (``sh``, ``nc``,
  ``sleep``, ``dd``…) plus ``orb8-victim`` (``hack/node/victim.c``), which
  makes alert-listed syscalls harmlessly, and ``orb8-sink``, a TCP sink.

Each image is one layer, written as a ``docker save`` archive (manifest.json,
config, layer tar) that ``ctr images import`` reads. Builds are reproducible
(fixed mtimes and owners) and cached under ``$ORB8_CACHE/images`` by a hash of
their inputs, so a warm build is a file lookup.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = REPO_ROOT / "hack" / "node"
BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "orb8.local/pause:1"
APP_IMAGE = "orb8.local/app:1"
# A TCP sink for busybox nc: `nc -ll -p PORT -e orb8-sink` reads every
# connection to its end (a plain `nc -l` with stdin at EOF quits at once).
SINK = b"#!/bin/sh\nexec cat > /dev/null\n"
_EPOCH = 0


class ImageBuildError(Orb8Error):
    """An image for the local node could not be built."""


@dataclass(frozen=True)
class ImageFile:
    """One file of an image's only layer."""

    path: str  # absolute path inside the image
    data: bytes = b""
    mode: int = 0o755
    link_to: str = ""  # a symlink when set


def cache_dir() -> Path:
    root = os.environ.get("ORB8_CACHE") or str(Path.home() / ".cache" / "orb8")
    return Path(root) / "images"


def compile_static(*, source: Path) -> bytes:
    """A static, stripped executable from one C file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / source.stem
        result = subprocess.run(
            ["cc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-o", str(out), str(source)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ImageBuildError(f"cc {source.name} failed: {result.stderr.strip()}")
        return out.read_bytes()


def layer_tar(*, files: list[ImageFile]) -> bytes:
    """A reproducible layer: parents first, fixed owner and mtime."""
    buf = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in sorted(files, key=lambda f: f.path):
            parts = item.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in seen:
                    seen.add(directory)
                    tar.addfile(_info(name=directory, kind=tarfile.DIRTYPE, mode=0o755))
            name = "/".join(parts)
            if item.link_to:
                info = _info(name=name, kind=tarfile.SYMTYPE, mode=0o777)
                info.linkname = item.link_to
                tar.addfile(info)
            elif item.data or not item.path.endswith("/"):
                info = _info(name=name, kind=tarfile.REGTYPE, mode=item.mode)
                info.size = len(item.data)
                tar.addfile(info, io.BytesIO(item.data))
    return buf.getvalue()


def _info(*, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = _EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def docker_archive(*, tag: str, layer: bytes, entrypoint: list[str], cmd: list[str]) -> bytes:
    """A ``docker save``-format archive holding one image with one layer."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": ["PATH=/usr/local/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "orb8_dev.images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (
            (config_name, config_bytes),
            (layer_name, layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            if "/" in name:
                tar.addfile(_info(name=name.split("/")[0], kind=tarfile.DIRTYPE, mode=0o755))
            info = _info(name=name, kind=tarfile.REGTYPE, mode=0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cached(*, name: str, inputs: list[bytes], build: Callable[[], bytes]) -> Path:
    digest = hashlib.sha256()
    for part in inputs:
        digest.update(hashlib.sha256(part).digest())
    path = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.tar"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def pause_image() -> Path:
    """The sandbox image archive (tag :data:`PAUSE_IMAGE`); built once, then cached."""
    source = SOURCES / "pause.c"

    def build() -> bytes:
        binary = compile_static(source=source)
        layer = layer_tar(files=[ImageFile(path="/pause", data=binary)])
        return docker_archive(tag=PAUSE_IMAGE, layer=layer, entrypoint=["/pause"], cmd=[])

    return _cached(name="pause", inputs=[source.read_bytes(), PAUSE_IMAGE.encode()], build=build)


def app_image() -> Path:
    """The demo/test app image archive (tag :data:`APP_IMAGE`); built once, then cached."""
    if not BUSYBOX.is_file():
        raise ImageBuildError(f"{BUSYBOX} is missing: run hack/install-node-deps.sh")
    source = SOURCES / "victim.c"
    busybox = BUSYBOX.read_bytes()

    def build() -> bytes:
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        files = [
            ImageFile(path="/bin/busybox", data=busybox),
            ImageFile(path="/usr/local/bin/orb8-victim", data=compile_static(source=source)),
            ImageFile(path="/usr/local/bin/orb8-sink", data=SINK),
            ImageFile(path="/tmp/.keep", data=b"", mode=0o644),
            ImageFile(path="/etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n", mode=0o644),
            ImageFile(path="/etc/group", data=b"root:x:0:\n", mode=0o644),
        ]
        files += [
            ImageFile(path=f"/bin/{applet}", link_to="busybox")
            for applet in applets
            if applet != "busybox"
        ]
        layer = layer_tar(files=files)
        return docker_archive(tag=APP_IMAGE, layer=layer, entrypoint=[], cmd=["/bin/sh"])

    return _cached(
        name="app", inputs=[source.read_bytes(), busybox, SINK, APP_IMAGE.encode()], build=build
    )
