"""Build-time guard: the orb8 wheel carries the BPF objects and no dev tooling."""

from __future__ import annotations

import sys
import zipfile

REQUIRED = (
    "orb8_agent/bpf/flows.bpf.o",
    "orb8_agent/bpf/syscalls.bpf.o",
    "orb8_agent/bpf/tcphealth.bpf.o",
    "orb8_agent/bpf/dns.bpf.o",
    "orb8_agent/bpf/hostflows.bpf.o",
)


def main(path: str) -> int:
    names = set(zipfile.ZipFile(path).namelist())
    missing = [name for name in REQUIRED if name not in names]
    dev = sorted(name for name in names if name.startswith(("orb8_dev/", "tests/", "hack/")))
    if missing or dev:
        print(f"check-wheel: {path}: missing {missing}, unexpected {dev[:5]}", file=sys.stderr)
        return 1
    print(f"check-wheel: {path}: {len(names)} files, BPF objects present, no dev tooling")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
