#!/usr/bin/env bash
# Regenerates api_pb2.py, api_pb2.pyi and api_pb2_grpc.py from api.proto with
# grpcio-tools. Run from anywhere; `make proto` calls it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
"$python" -m grpc_tools.protoc -I. \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  orb8_agent/gpu/podresources/api.proto
