"""Fixtures for data-plane tests on the real kernel.

Kernel tests need root, the compiled probes (``make bpf``) and bpffs/tracefs
(mounted here when missing). If any of that is absent they fail with the
reason instead of being skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.probes import ProbeSet, start_probes
from orb8_agent.preflight import run_preflight
from orb8_dev import netns


@pytest.fixture(scope="session")
def kernel_ready() -> None:
    if os.geteuid() != 0:
        pytest.fail("data-plane kernel tests must run as root (they load BPF programs)")
    for name in ("flows", "syscalls", "noop", "tcphealth", "hostflows"):
        if not object_path(name=name).is_file():
            pytest.fail(f"{object_path(name=name)} is missing: run `make bpf` first")
    report = run_preflight(mount=True, load_probes=False)
    failed = [f"{c.name}: {c.message} ({c.remedy})" for c in report.checks if not c.ok]
    if failed:
        pytest.fail("kernel not ready: " + "; ".join(failed))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def agent_id() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def pair(kernel_ready: None) -> Iterator[netns.VethPair]:
    with netns.veth_pair() as p:
        yield p


@pytest.fixture
def flow_probes(kernel_ready: None, run_dir: Path, agent_id: str) -> Iterator[ProbeSet]:
    """The flow probe alone, loaded as the agent loads it."""
    loaded = start_probes(agent_id=agent_id, flows=True, syscalls=False, run_dir=run_dir)
    assert loaded.flows is not None, loaded.failures
    try:
        yield loaded
    finally:
        loaded.close()
