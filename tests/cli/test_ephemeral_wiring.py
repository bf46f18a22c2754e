"""``orb8 trace network|syscalls|dns --pod``: what the workstation side builds and prints.

The trace pod's command line is parsed back with the real ``orb8`` parser: it
must be a ``--local`` trace aimed at the target's containers that prints its
result line, with the user's options carried over. The result line a trace pod
prints is rendered exactly as the local trace would print it.
"""

from __future__ import annotations

import argparse
import json

import pytest

from orb8_cli import ephemeral
from orb8_cli.main import build_parser, main

TARGET = ephemeral.Target(
    namespace="shop", name="checkout-7d9", node="node-a",
    container_ids=("containerd://aaa111", "containerd://bbb222"), host_network=False,
)  # fmt: skip


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _in_pod(argv: list[str], probe: str) -> argparse.Namespace:
    args = _parse(argv)
    command = ephemeral.in_pod_command(args=args, probe=probe, duration=20.0, target=TARGET)
    assert command[:4] == ["orb8", "trace", probe, "--local"]
    return _parse(command[1:])


def test_the_dns_trace_pod_runs_a_local_dns_trace_of_the_targets_veth() -> None:
    pod = _in_pod(["trace", "dns", "--pod", "shop/checkout-7d9", "-d", "20s", "--top", "5",
                   "-o", "json"], "dns")  # fmt: skip
    assert pod.func.__module__ == "orb8_cli.dns" and pod.func.__name__ == "run_trace"
    assert pod.local and not pod.pod and pod.interface == []
    assert pod.target_container == list(TARGET.container_ids)
    assert (pod.result_prefix, pod.cgroup_root) == (ephemeral.RESULT_PREFIX, "/host/cgroup")
    assert (float(pod.duration), pod.top) == (20.0, 5)


def test_the_syscalls_trace_pod_carries_the_alert_list_and_hook() -> None:
    pod = _in_pod(["trace", "syscalls", "--pod", "shop/checkout-7d9", "--alert", "mount",
                   "--alert", "ptrace", "--hook", "tp_btf"], "syscalls")  # fmt: skip
    assert pod.func.__name__ == "run_syscalls"
    assert pod.local and pod.cgroup is None and pod.pid is None
    assert pod.alert == ["mount", "ptrace"] and pod.hook == "tp_btf"
    assert pod.target_container == list(TARGET.container_ids)
    assert pod.result_prefix == ephemeral.RESULT_PREFIX
    # no --alert: the pod uses the default list, as a local trace does
    assert _in_pod(["trace", "syscalls", "--pod", "shop/x"], "syscalls").alert == []


def test_the_network_trace_pod_carries_filters_and_top() -> None:
    pod = _in_pod(["trace", "network", "--pod", "shop/x", "--protocol", "tcp", "--port", "8080",
                   "--direction", "egress", "--top", "3"], "network")  # fmt: skip
    assert pod.func.__name__ == "run_network" and pod.top == 3
    assert (pod.filter_protocol, pod.filter_port, pod.filter_direction) == ("tcp", "8080", "egress")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trace", "dns", "--pod", "shop/x", "-i", "eth0"], "--interface does not apply"),
        (["trace", "dns", "--pod", "shop/x", "--top", "-1"], "--top"),
        (["trace", "dns", "--pod", "shop/x", "--local"], "--local"),
        (["trace", "dns", "--pod", "a/b/c"], "invalid pod"),
        (["trace", "syscalls", "--pod", "shop/x", "--cgroup", "/sys/fs/cgroup"], "do not apply"),
        (["trace", "syscalls", "--pod", "shop/x", "--pid", "1"], "do not apply"),
        (["trace", "syscalls", "--pod", "shop/x", "--alert", "nosuchcall"], "unknown syscall"),
        (["trace", "syscalls", "--pod", "a/b/c"], "invalid pod"),
    ],
)
def test_bad_pod_arguments_are_one_line_before_the_cluster_is_asked(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main([*argv, "-d", "1s"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("probe", ["dns", "syscalls", "network"])
def test_pod_traces_are_wired_through_to_the_cluster(
    probe: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not refused: the first thing that fails is reading the kubeconfig."""
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main(["trace", probe, "--pod", "shop/x", "-d", "1s"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "kubeconfig" in err, err
    assert "not supported" not in err


DNS_ROWS = [
    {"query": "web.shop.svc.cluster.local.", "qtype": "A", "rcode": "NOERROR", "count": 4,
     "latency_ms": 0.412, "latency_max_ms": 0.9, "src_ip": "10.1.0.5", "dst_ip": "10.1.0.2",
     "protocol": "UDP", "interface": "veth3c1a2b", "truncated": False},
    {"query": "nope.example.", "qtype": "AAAA", "rcode": "NXDOMAIN", "count": 2,
     "latency_ms": None, "latency_max_ms": None, "src_ip": "10.1.0.5", "dst_ip": "10.1.0.2",
     "protocol": "UDP", "interface": "veth3c1a2b", "truncated": False},
]  # fmt: skip
DNS_RESULT = {"probe": "dns", "interfaces": ["veth3c1a2b"], "rows": DNS_ROWS,
              "summary": "6 queries on veth3c1a2b; not counted: 0 malformed"}  # fmt: skip


def test_a_dns_result_line_prints_as_the_local_trace_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = f"{ephemeral.RESULT_PREFIX} {json.dumps(DNS_RESULT)}"
    result = ephemeral._take_line(line, [])
    assert result == DNS_RESULT
    ephemeral._print_result(result=result, probe="dns", output="json")
    assert json.loads(capsys.readouterr().out) == DNS_ROWS
    ephemeral._print_result(result=result, probe="dns", output="table")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["QUERY", "TYPE", "RCODE", "COUNT", "AVG", "MS", "MAX", "MS",
                                "CLIENT", "SERVER", "PROTO"]  # fmt: skip
    assert lines[1].split() == ["web.shop.svc.cluster.local.", "A", "NOERROR", "4", "0.41",
                                "0.90", "10.1.0.5", "10.1.0.2", "UDP"]  # fmt: skip
    assert lines[2].split() == ["nope.example.", "AAAA", "NXDOMAIN", "2", "-", "-", "10.1.0.5",
                                "10.1.0.2", "UDP"]  # fmt: skip
    assert "6 queries on veth3c1a2b" in err
    ephemeral._print_result(result={**DNS_RESULT, "rows": []}, probe="dns", output="table")
    assert capsys.readouterr().out.strip() == "no DNS seen on veth3c1a2b"


def test_a_syscalls_result_line_prints_alerts_and_the_seccomp_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = {
        "cgroup": "/host/cgroup/unified/kubepods/besteffort/podu/aaa111", "cgroup_id": 4242,
        "counts": [{"syscall": "mount", "nr": 165, "count": 7}],
        "alerts": [{"time": "2026-12-04T10:00:02.000Z", "pid": 9, "tid": 9,
                    "comm": "orb8-victim", "cgroup_id": 4242, "syscall": "mount", "nr": 165}],
        "alert_list": ["mount"],
        "dropped": {"rate_limited": 0, "ringbuf_full": 0, "count_map_full": 0},
        "seccomp_filtered_pids": [9, 10],
    }  # fmt: skip
    ephemeral._print_result(result={"probe": "syscalls", **doc}, probe="syscalls", output="json")
    out, err = capsys.readouterr()
    assert json.loads(out) == doc
    assert (
        err.strip() == "note: 2 traced processes ran under a seccomp filter (a runtime's "
        "default profile?): calls it refused are neither counted nor alerted on "
        "(docs/dataplane.md)"
    )
    ephemeral._print_result(result={"probe": "syscalls", **doc, "seccomp_filtered_pids": []},
                            probe="syscalls", output="table")  # fmt: skip
    out, err = capsys.readouterr()
    assert "orb8-victim" in out and "mount" in out and err == ""


def test_a_failed_trace_pod_is_explained_by_its_last_error_not_its_notice() -> None:
    attached = f"orb8: {ephemeral.PROBE_ATTACHED} to veth3c1a2b for 20s"
    assert ephemeral.failure_reason([attached], 137) == "exit code 137"
    assert ephemeral.failure_reason([], None) == "exit code None"
    assert ephemeral.failure_reason(["orb8: no cgroup of containers aaa111 under /host/cgroup",
                                     attached], 1) == \
        "no cgroup of containers aaa111 under /host/cgroup"  # fmt: skip
