"""Start whichever probes can load; report the ones that cannot.

The agent wants both probes, but one failing (say, no tracefs for a classic
tracepoint) must not take the other down. Only when nothing loads is it an
error, and then the error carries every probe's remedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from orb8_common.errors import Orb8Error, ProbeLoadError

from . import tc
from .dns import DnsCollector
from .flows import FlowCollector
from .hostflows import HostFlowCollector
from .syscalls import Hook, SyscallCollector
from .tcphealth import TcpHealthCollector


@dataclass
class ProbeSet:
    """The loaded collectors (None where a probe failed) and each probe's status."""

    flows: FlowCollector | None = None
    syscalls: SyscallCollector | None = None
    tcp: TcpHealthCollector | None = None
    dns: DnsCollector | None = None
    hostflows: HostFlowCollector | None = None  # hostNetwork pods (cgroup_skb)
    failures: dict[str, str] = field(default_factory=dict)

    def statuses(self) -> list[dict[str, object]]:
        """``[{name, loadable, message}]`` as NodeAgentConfig status wants it."""
        out: list[dict[str, object]] = []
        named: tuple[tuple[str, object], ...] = (
            ("flows", self.flows), ("syscalls", self.syscalls), ("tcp", self.tcp),
            ("dns", self.dns), ("hostflows", self.hostflows),
        )  # fmt: skip
        for name, loaded in named:
            if loaded is not None or name in self.failures:
                out.append(
                    {
                        "name": name,
                        "loadable": loaded is not None,
                        "message": self.failures.get(name, ""),
                    }
                )
        return out

    def close(self) -> None:
        errors: list[str] = []
        for c in (self.dns, self.flows, self.syscalls, self.tcp, self.hostflows):
            if c is None:
                continue
            try:
                c.close()
            except Orb8Error as err:
                errors.append(str(err))
        self.flows = self.syscalls = self.tcp = self.dns = self.hostflows = None
        if errors:
            raise ProbeLoadError("; ".join(errors))


def start_probes(
    *,
    agent_id: str,
    flows: bool = True,
    syscalls: bool = True,
    tcp: bool = False,
    dns: bool = False,
    hook: Hook = Hook.RAW_TP,
    alerts_per_second: int = 100,
    run_dir: Path = tc.DEFAULT_RUN_DIR,
    pin_dir: Path | None = None,
    hostflows: bool = False,
) -> ProbeSet:
    """Open the requested probes. Raises ProbeLoadError only if none loads.

    ``pin_dir``: keep the flow, TCP health and DNS maps pinned there (see pins.py).
    ``hostflows``: also load the hostNetwork probe (cgroup_skb; never fatal).
    """
    probes = ProbeSet()
    fail = probes.failures
    if flows:
        probes.flows = _opened(FlowCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pin_dir),
                               name="flows", failures=fail)  # fmt: skip
    if syscalls:
        probes.syscalls = _opened(
            SyscallCollector(hook=hook, alerts_per_second=alerts_per_second),
            name="syscalls", failures=fail,
        )  # fmt: skip
    if tcp:
        probes.tcp = _opened(TcpHealthCollector(agent_id=agent_id, pin_dir=pin_dir),
                             name="tcp", failures=fail)  # fmt: skip
    if dns:
        probes.dns = _opened(DnsCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pin_dir),
                             name="dns", failures=fail)  # fmt: skip
    if hostflows:
        probes.hostflows = _opened(HostFlowCollector(), name="hostflows", failures=fail)
    # the hostNetwork probe rides along with flows and is never the only one
    loaded = (probes.flows, probes.syscalls, probes.tcp, probes.dns)
    if (flows or syscalls or tcp or dns) and all(p is None for p in loaded):
        detail = "; ".join(f"{name}: {msg}" for name, msg in probes.failures.items())
        raise ProbeLoadError(f"no probe could be loaded: {detail}")
    return probes


class _Openable(Protocol):
    def open(self) -> None: ...


_C = TypeVar("_C", bound=_Openable)


def _opened(collector: _C, *, name: str, failures: dict[str, str]) -> _C | None:
    """The collector once opened, or None with its error filed under ``name``."""
    try:
        collector.open()
    except Orb8Error as err:
        failures[name] = str(err)
        return None
    return collector
