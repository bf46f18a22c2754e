"""``orb8 get flows|alerts`` filters, outputs and ``--watch`` against the real apiserver.

The session's status is written by the test through the status subresource,
as the agents write it. ``--watch`` is followed line by line: each status
write must show up as the changed rows only, filtered, and Ctrl-C must end
the command with exit code 130 and nothing on stderr.
"""

from __future__ import annotations

import json
import signal
import subprocess

from orb8_dev.controlplane import ControlPlane
from tests.cli.sessions import ORB8, Lines, flow, make_session, run, write_status

WEB = {"namespace": "shop", "pod": "web-1", "ip": "10.0.0.1", "port": 40000}
DB = {"namespace": "data", "pod": "db-0", "ip": "10.0.0.2", "port": 5432}
DNS = {"ip": "10.0.0.10", "port": 53}
ALERT = {"namespace": "shop", "pod": "web-1", "container": "app", "node": "node-a",
         "syscall": "ptrace", "count": 2, "severity": "High", "reason": "on the alert list",
         "firstSeen": "2026-12-04T10:00:01Z", "lastSeen": "2026-12-04T10:00:02Z"}  # fmt: skip
FLOWS = [flow(WEB, DB, size=5000), flow({**WEB, "port": 41000}, DNS, proto="UDP", size=90)]


def test_filters_and_outputs(control_plane: ControlPlane) -> None:
    ns = make_session(control_plane, status={"phase": "Running", "flows": FLOWS,
                                             "alerts": [ALERT]})  # fmt: skip
    out = run(control_plane, "get", "flows", "live", "-n", ns, "-o", "json", "--protocol", "udp")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [FLOWS[1]]
    out = run(control_plane, "get", "flows", "live", "-n", ns, "-o", "ndjson", "--port", "5432",
              "--pod", "shop/web-*", "--direction", "egress")  # fmt: skip
    assert [json.loads(line) for line in out.stdout.splitlines()] == [FLOWS[0]]
    out = run(control_plane, "get", "flows", "live", "-n", ns, "--pod", "db-0", "--direction",
              "egress")  # fmt: skip
    assert out.stdout.strip() == "no flows reported yet for live"
    wide = run(control_plane, "get", "flows", "live", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["SRC", "IP", "DST", "IP"]
    assert "10.0.0.1" in wide[1] and "shop/web-1:40000" in wide[1]
    alerts = run(control_plane, "get", "alerts", "live", "-n", ns, "-o", "wide",
                 "--pod-namespace", "shop").stdout.splitlines()  # fmt: skip
    assert "REASON" in alerts[0] and "on the alert list" in alerts[1]
    none = run(control_plane, "get", "alerts", "live", "-n", ns, "--pod-namespace", "data")
    assert none.stdout.strip() == "no alerts for live"


def test_bad_filter_values_are_one_line_before_the_cluster_is_asked(
    control_plane: ControlPlane,
) -> None:
    for argv, fragment in (
        (["--port", "99999"], "invalid port"),
        (["--protocol", "sctp"], "unknown protocol"),
        (["--direction", "sideways"], "invalid direction"),
    ):
        # The session does not exist: the filter is refused before it is looked up.
        out = run(control_plane, "get", "flows", "nosuch", "-n", "nosuch", *argv)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert fragment in out.stderr and "Traceback" not in out.stderr
    out = run(control_plane, "get", "alerts", "nosuch", "--port", "53")
    assert out.returncode == 2 and "--port does not apply to alerts" in out.stderr


def test_watch_prints_filtered_changes_and_stops_on_ctrl_c(control_plane: ControlPlane) -> None:
    ns = make_session(control_plane, status={"phase": "Running", "flows": FLOWS[:1]})
    proc = subprocess.Popen(
        [*ORB8, "get", "flows", "live", "-n", ns, "--watch", "-o", "ndjson", "--protocol", "TCP"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=control_plane.env(),
    )  # fmt: skip
    try:
        lines = Lines(proc.stdout)  # type: ignore[arg-type]
        assert json.loads(lines.next(timeout=60) or "null") == FLOWS[0]

        grown = {**FLOWS[0], "bytes": 7000, "lastSeen": "2026-12-04T10:00:05Z"}
        new = flow({**WEB, "port": 42000}, DB, size=10)
        write_status(control_plane, namespace=ns, name="live",
                     status={"flows": [grown, FLOWS[1], new]})  # fmt: skip
        printed = [json.loads(lines.next(timeout=60) or "null") for _ in range(2)]
        assert sorted(printed, key=lambda r: r["bytes"]) == [new, grown]

        # A change that leaves the TCP rows alone prints nothing; the sentinel after
        # it proves the watch went past it (events arrive in order).
        write_status(control_plane, namespace=ns, name="live", status={"phase": "Completed"})
        sentinel = flow({**WEB, "port": 43000}, DB, size=1)
        write_status(control_plane, namespace=ns, name="live",
                     status={"flows": [grown, FLOWS[1], new, sentinel]})  # fmt: skip
        assert json.loads(lines.next(timeout=60) or "null") == sentinel
        assert all(json.loads(line)["protocol"] == "TCP" for line in lines.seen)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 130, stderr
    assert stderr == ""


def test_watch_table_and_a_deleted_session(control_plane: ControlPlane) -> None:
    ns = make_session(control_plane, status={"phase": "Running"})
    proc = subprocess.Popen(
        [*ORB8, "get", "alerts", "live", "-n", ns, "-w"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=control_plane.env(),
    )  # fmt: skip
    try:
        lines = Lines(proc.stdout)  # type: ignore[arg-type]
        assert lines.next(timeout=60) == "no alerts for live"
        write_status(control_plane, namespace=ns, name="live", status={"alerts": [ALERT]})
        assert (lines.next(timeout=60) or "").split()[0] == "SEVERITY"
        assert (lines.next(timeout=60) or "").split()[:4] == ["High", "shop/web-1", "app", "ptrace"]
        control_plane.kubectl("delete", "ts", "live", "-n", ns, "--wait=false")
        assert lines.next(timeout=60) is None  # the command ends by itself
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 1 and stderr.strip() == f"orb8: tracesessions {ns}/live was deleted"
