"""Session-wide fixtures: the real control plane on loopback, and a real node."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_dev import node
from orb8_dev.controlplane import CRD_DIR, ControlPlane, attach, start, stop
from orb8_dev.load import busy_cores
from orb8_dev.node import LocalNode


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control (a CI runner, `make test &` in a script) starts
    # background jobs with SIGINT ignored, and an ignored signal stays ignored across
    # exec: every CLI under test would then shrug off the Ctrl-C the tests send it.
    # Handled here, it is reset to the default in each child at exec.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--busy-cores",
        type=int,
        default=0,
        help="hold this many CPU cores busy with spinning processes for the whole run",
    )
    parser.addoption(
        "--soak-seconds",
        type=_soak_seconds,
        default=SOAK_DEFAULT_S,
        help="how long the soak (tests/e2e/test_soak.py) holds its load, after warm-up: "
        f"{SOAK_MIN_S}..{SOAK_MAX_S} (default {SOAK_DEFAULT_S}, as `make test` runs it in CI)",
    )


SOAK_DEFAULT_S = 600  # the 10 minutes in CI
SOAK_MIN_S = 30  # thirds of 10 s: enough samples to compare
SOAK_MAX_S = 8 * 3600


def _soak_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"--soak-seconds: not a whole number: {text!r}") from None
    if not SOAK_MIN_S <= value <= SOAK_MAX_S:
        raise pytest.UsageError(f"--soak-seconds must be {SOAK_MIN_S}..{SOAK_MAX_S}: {value}")
    return value


@pytest.fixture(scope="session", autouse=True)
def busy_machine(pytestconfig: pytest.Config) -> Iterator[None]:
    count = int(pytestconfig.getoption("--busy-cores"))
    if count <= 0:
        yield
        return
    with busy_cores(count=count) as pids:
        _announce(pytestconfig, f"load: {count} busy loops (pids {pids}) hold the CPUs")
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak_s = int(config.getoption("--soak-seconds"))
    for item in items:
        if item.get_closest_marker("soak") is not None:
            # warm-up, teardown and a loaded machine on top of the soak itself
            item.add_marker(pytest.mark.timeout(soak_s + 900))
        fixtures = getattr(item, "fixturenames", ())
        if "control_plane" in fixtures:
            item.add_marker(pytest.mark.cluster)
        if "real_node" in fixtures:
            item.add_marker(pytest.mark.node)


def _announce(config: pytest.Config, line: str) -> None:
    """Print a line to the terminal even while output capture is active."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ControlPlane]:
    """kube-apiserver + etcd built from source, with the orb8 CRDs installed.

    Set ORB8_TEST_STATE_DIR to the state directory of a `make cluster-up`
    control plane to reuse it instead of starting a fresh one.
    """
    reuse_dir = os.environ.get("ORB8_TEST_STATE_DIR")
    started = time.monotonic()
    if reuse_dir:
        plane = attach(state_dir=Path(reuse_dir))
        if plane is None:
            pytest.fail(f"ORB8_TEST_STATE_DIR={reuse_dir} has no running control plane")
        owned = False
    else:
        plane = start(state_dir=tmp_path_factory.mktemp("controlplane"))
        owned = True
    _announce(
        pytestconfig,
        f"control plane: kube-apiserver {plane.version()} ready at {plane.server} "
        f"in {time.monotonic() - started:.1f}s (state: {plane.state_dir})",
    )
    if any(CRD_DIR.glob("*.yaml")):
        plane.apply_crds()
    try:
        yield plane
    finally:
        if owned:
            stop(state_dir=plane.state_dir)


@pytest.fixture(scope="session")
def real_node(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[LocalNode]:
    """A control plane with a real node: kubelet, containerd, scheduler,
    controller-manager (``orb8_dev/node.py``). Slower to start than
    ``control_plane`` (which never starts a kubelet); torn down at the end of
    the session, restoring the host.
    """
    started = time.monotonic()
    state_dir = tmp_path_factory.mktemp("realnode")
    local = node.up(state_dir=state_dir, progress=False)
    _announce(
        pytestconfig,
        f"real node: {local.name} Ready at {local.network.node_ip}, apiserver "
        f"{local.plane.server}, in {time.monotonic() - started:.1f}s (state: {state_dir})",
    )
    try:
        yield local
    finally:
        node.down(state_dir=state_dir)
