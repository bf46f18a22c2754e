"""Network workloads for `make bench`, each pinned to one CPU with taskset and
run from namespace A to namespace B over the bench's veth pair."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from orb8_dev import netns

IPERF_PORT = 5201
UDP_PORT = 6000
RR_PORT = 6001
FLOW_PORT0 = 10000


def _pinned(ns: str, cpu: int, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, "taskset", "-c", str(cpu), *cmd]


def _json(out: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


class Load:
    """Servers in namespace B for the whole run; one method per workload."""

    def __init__(self, *, pair: netns.VethPair, gen: Path, cpu: int, seconds: float) -> None:
        self.pair, self.gen, self.cpu, self.seconds = pair, gen, cpu, seconds
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Load:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        b = self.pair.ns_b
        self._procs.append(
            subprocess.Popen(
                _pinned(
                    b, self.cpu, ["iperf3", "-s", "-B", self.pair.ip4_b, "-p", str(IPERF_PORT)]
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        script = (
            "table inet orb8sink {\n chain in {\n  type filter hook input priority 0;\n"
            f"  udp dport {UDP_PORT} drop\n  udp dport {FLOW_PORT0}-65535 drop\n }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", b, "nft", "-f", "-"], input=script.encode(), check=True
        )

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            p.kill()
            p.wait()

    def _iperf(self) -> float:
        secs = max(1, round(self.seconds))
        for _attempt in range(20):
            done = subprocess.run(
                _pinned(
                    self.pair.ns_a,
                    self.cpu,
                    ["iperf3", "-c", self.pair.ip4_b, "-p", str(IPERF_PORT), "-t", str(secs), "-J"],
                ),
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"])
            if "busy" not in done.stdout and "connect" not in done.stdout:
                break
        raise RuntimeError(f"iperf3 failed: {done.stdout[-300:]} {done.stderr[-300:]}")

    def tcp(self) -> dict[str, float]:
        return {"tcp_gbps": self._iperf() / 1e9}

    def tcp_no_offload(self) -> dict[str, float]:
        sides = ((self.pair.ns_a, self.pair.if_a), (self.pair.ns_b, self.pair.if_b))
        for ns, ifname in sides:
            netns.run(["ethtool", "-K", ifname, "gso", "off", "tso", "off", "gro", "off"], netns=ns)
        try:
            return {"tcp_no_offload_gbps": self._iperf() / 1e9}
        finally:
            for ns, ifname in sides:
                netns.run(
                    ["ethtool", "-K", ifname, "gso", "on", "tso", "on", "gro", "on"], netns=ns
                )

    def udp(self) -> dict[str, float]:
        # 22 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet = 64-byte frames
        out = netns.run(
            _pinned(
                self.pair.ns_a,
                self.cpu,
                [str(self.gen), "udp", self.pair.ip4_b, str(UDP_PORT), str(self.seconds), "22"],
            )
        )
        res = _json(out)
        return {
            "udp64_mpps": float(res["packets_per_second"]) / 1e6,
            "udp64_mpps_per_cpu": float(res["packets_per_cpu_second"]) / 1e6,
        }

    def flows(self, n: int) -> dict[str, float]:
        out = netns.run(
            _pinned(
                self.pair.ns_a,
                self.cpu,
                [
                    str(self.gen),
                    "flows",
                    self.pair.ip4_b,
                    str(FLOW_PORT0),
                    str(self.seconds),
                    str(n),
                ],
            )
        )
        res = _json(out)
        return {
            f"flows{n // 1000}k_mpps": float(res["packets_per_second"]) / 1e6,
            f"flows{n // 1000}k_mpps_per_cpu": float(res["packets_per_cpu_second"]) / 1e6,
        }

    def rr(self) -> dict[str, float]:
        server = subprocess.Popen(
            _pinned(self.pair.ns_b, self.cpu, [str(self.gen), "rr-server", str(RR_PORT)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        server.stdout.readline()  # {"listening": true}
        try:
            out = netns.run(
                _pinned(
                    self.pair.ns_a,
                    self.cpu,
                    [str(self.gen), "rr", self.pair.ip4_b, str(RR_PORT), str(self.seconds)],
                )
            )
        finally:
            server.wait(timeout=60)
        res = _json(out)
        return {"rr_p50_us": float(res["p50_us"]), "rr_p99_us": float(res["p99_us"])}

    def all(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for step in (self.tcp, self.tcp_no_offload, self.udp, self.rr):
            out.update(step())
        for n in (10_000, 100_000):
            out.update(self.flows(n))
        return out


# higher is better for these; the rest (latencies) lower is better
# *_per_cpu: packets per CPU-second of the sending thread, where egress
# programs run; far less sensitive to other load than packets per second
THROUGHPUT = (
    "tcp_gbps",
    "tcp_no_offload_gbps",
    "udp64_mpps",
    "udp64_mpps_per_cpu",
    "flows10k_mpps",
    "flows10k_mpps_per_cpu",
    "flows100k_mpps",
    "flows100k_mpps_per_cpu",
)
LATENCY = ("rr_p50_us", "rr_p99_us")
