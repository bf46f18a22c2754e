"""--kernel-port/--kernel-cidr: the spec filter's model and compile path, and ``--pod``
passes them on to the trace pod's ``orb8 trace network --local``."""

from __future__ import annotations

import pytest

from orb8_agent.dataplane.flowfilter import compile_filter
from orb8_cli import ephemeral, kernelfilter
from orb8_cli.main import build_parser
from orb8_common.errors import UsageError
from orb8_common.models import FlowFilter


def test_flags_build_the_spec_filter_and_compile_the_same() -> None:
    wanted = kernelfilter.flow_filter(ports=["53", "5300"], cidrs=["10.96.0.0/12"])
    spec = FlowFilter(ports=(53, 5300), cidrs=("10.96.0.0/12",))
    assert wanted == spec
    compiled = kernelfilter.compiled(
        wanted=wanted, interfaces=["vethA"], pod_relative=False, veth=lambda name: True
    )
    assert compiled == compile_filter(filters=[spec])


def test_no_flags_no_kernel_filter() -> None:
    wanted = kernelfilter.flow_filter(ports=[], cidrs=[])
    assert kernelfilter.compiled(wanted=wanted, interfaces=["eth0"], pod_relative=False) is None


def test_cidr_needs_veths_unless_the_trace_is_pod_relative() -> None:
    wanted = kernelfilter.flow_filter(ports=[], cidrs=["10.0.0.0/8"])
    with pytest.raises(UsageError, match="eth0 is not a veth"):
        kernelfilter.compiled(
            wanted=wanted, interfaces=["vethA", "eth0"], pod_relative=False,
            veth=lambda name: name.startswith("veth"),
        )  # fmt: skip
    # trace --pod: the one interface is the pod's host veth
    assert kernelfilter.compiled(
        wanted=wanted, interfaces=["eth0"], pod_relative=True, veth=lambda name: False
    ) is not None  # fmt: skip


def test_too_many_ports_name_the_flag() -> None:
    with pytest.raises(UsageError, match=r"^--kernel-port: .*at most 16"):
        kernelfilter.flow_filter(ports=[str(p) for p in range(1, 18)], cidrs=[])


def test_pod_trace_passes_the_kernel_flags_on() -> None:
    args = build_parser().parse_args(
        ["trace", "network", "--pod", "shop/web", "--kernel-port", "443", "--kernel-port", "53",
         "--kernel-cidr", "10.96.0.0/12"]
    )  # fmt: skip
    target = ephemeral.Target(namespace="shop", name="web", node="n", container_ids=("c1",),
                              host_network=False)  # fmt: skip
    command = ephemeral.in_pod_command(args=args, probe="network", duration=10, target=target)
    joined = " ".join(command)
    assert "--kernel-port 443 --kernel-port 53 --kernel-cidr 10.96.0.0/12" in joined
