#!/usr/bin/env bash
# The prepared real-GPU check (run on a machine with an NVIDIA GPU and no
# network): NVML devices and processes tied to pod-shaped cgroups, and the
# agent's collector rows in NVML mode, by orb8_dev.gpu_device_check.
# Python packages come from build/gpudeps.tar.xz (made by `make gpu-deps`,
# one tree per Python minor version) because the GPU machine reaches no index.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-check}"
mkdir -p "$out"
{
  echo "== host"; uname -r; id -u; python3 --version
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,mig.mode.current --format=csv
} 2>&1 | tee "$out/host.txt"
minor="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
deps="$(mktemp -d)"
trap 'rm -rf "$deps"' EXIT
tar -xJf build/gpudeps.tar.xz -C "$deps"
[ -d "$deps/gpudeps/py$minor" ] || { echo "gpu-device-check: no packages for Python $minor" >&2; exit 2; }
export PYTHONPATH="$deps/gpudeps/py$minor:$PWD"
python3 -m orb8_dev.gpu_device_check --out "$out"; rc=$?
timeout 60 python3 -m orb8_agent.gpu.check --samples 2 2>&1 | tee "$out/check.txt"
exit $rc
