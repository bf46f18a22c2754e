#!/usr/bin/env bash
# Real-GPU check of orb8's GPU sources. Needs an NVIDIA GPU and its driver;
# finishes in well under 3 minutes.
#
#   bench/gpu_check.sh                 NVML only (installs nvidia-ml-py if needed)
#   DCGM_EXPORTER_URL=http://127.0.0.1:9400/metrics bench/gpu_check.sh
#                                      also scrape a running dcgm-exporter
#
# When a dcgm-exporter binary is on PATH and no URL is given, the script starts
# it on a free port for the check and stops it afterwards.
# Exit: 0 all good; 2 no GPU or NVML unusable; 3 dcgm-exporter failed.
set -euo pipefail
cd "$(dirname "$0")/.."

py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi

if [ ! -e /dev/nvidia0 ] && [ ! -e /dev/nvidiactl ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU on this machine (no /dev/nvidia*, no nvidia-smi); nothing to check" >&2
  exit 2
fi

if ! "$py" -c 'import pynvml' 2>/dev/null; then
  echo "gpu_check: installing nvidia-ml-py" >&2
  timeout 120 "$py" -m pip install -q 'nvidia-ml-py>=12' || {
    echo "gpu_check: could not install nvidia-ml-py" >&2
    exit 2
  }
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 20 nvidia-smi -L || true
fi

exporter_pid=""
cleanup() { if [ -n "$exporter_pid" ]; then kill "$exporter_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

url="${DCGM_EXPORTER_URL:-}"
if [ -z "$url" ] && command -v dcgm-exporter >/dev/null 2>&1; then
  port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  dcgm-exporter -a "127.0.0.1:$port" >/tmp/orb8-gpu-check-exporter.log 2>&1 &
  exporter_pid=$!
  url="http://127.0.0.1:$port/metrics"
  for _ in $(seq 1 40); do
    if "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
fi

args=(--samples 3)
if [ -n "$url" ]; then args+=(--exporter "$url"); else echo "gpu_check: no dcgm-exporter; NVML only" >&2; fi
timeout 90 "$py" -m orb8_agent.gpu.check "${args[@]}"
