# orb8 developer entry points. `make test` and `make demo` set up everything
# they need on a fresh machine (Debian packages, the virtualenv, the Go-built
# control plane); later runs reuse what is cached.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
ORB8_CACHE ?= $(HOME)/.cache/orb8
export ORB8_CACHE
ORB8_STATE ?= /tmp/orb8-dev
export ORB8_STATE

.PHONY: help setup deps venv control-plane node-deps bpf lint test test-unit test-stress \
	cluster-up cluster-down crds-install demo images bench bench-dataplane bench-operator \
	bench-gpu bench-baseline clean reliability-doc gpu-deps soak

help:
	@echo "make demo             run orb8 end to end on a local control plane (DEMO_ARGS=--keep)"
	@echo "make test             set up everything and run the whole test suite"
	@echo "make test-unit        only tests that need neither the apiserver, a node nor root (nor images)"
	@echo "make soak             10k active flows + steady alerts, RSS and BPF maps must stay flat"
	@echo "                      (SOAK_SECONDS=600 as in make test; up to 28800 = 8 h)"
	@echo "make reliability-doc  render build/reliability.jsonl (written by the fault tests) into docs/reliability.md"
	@echo "make test-stress      tests/dataplane 5 times with every core busy (STRESS_RUNS, STRESS_PATHS)"
	@echo "make cluster-up       control plane + a real node (kubelet, containerd); prints the kubeconfig"
	@echo "                      (CLUSTER_ARGS=--sim: kube-apiserver + etcd only, for simulated nodes)"
	@echo "make cluster-down     stop it all and restore the host"
	@echo "make crds-install     apply crds/ to the running control plane"
	@echo "make lint             ruff + mypy"
	@echo "make images           build the orb8-agent and orb8-operator images into build/images/*.tar"
	@echo "                      (buildah, no Docker engine, no registry; content-cached)"
	@echo "make bench            orb8 against nft, conntrack, bpftrace, tcpdump, syscount, perf (root; BENCH_ARGS=--quick)"
	@echo "make bench-dataplane  probe overhead (flows, DNS, TCP health) and collector cost, as ratios"
	@echo "make bench-operator   500 sessions, 50 nodes, 5,000 pods, reporting agents; both layouts"
	@echo "make bench-gpu        GPU parse + join and collector CPU"
	@echo "make gpu-deps         pack Python deps for hack/gpu-device-check.sh (real-GPU check, no network)"
	@echo "make bench-baseline   false-positive rate of the learned syscall baseline (root, ~15 min)"

deps:
	@hack/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: deps $(VENV)/.stamp

control-plane:
	@hack/k8s/build.sh >/dev/null
	@hack/helm/build.sh >/dev/null

# A real local node: containerd, runc and CNI plugins from Debian; kubelet,
# kube-scheduler and kube-controller-manager built from the same Go module.
node-deps:
	@hack/install-node-deps.sh
	@hack/k8s/build.sh node >/dev/null

bpf: deps
	@$(MAKE) -s -C bpf

setup: deps venv control-plane node-deps bpf

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy orb8_common orb8_operator orb8_agent orb8_cli orb8_dev tests bench hack images

# The soak (tests/e2e/test_soak.py) holds its load SOAK_SECONDS after warm-up:
# 10 minutes in `make test` (CI); `make soak SOAK_SECONDS=28800` for 8 hours.
SOAK_SECONDS ?= 600

test: setup lint
	$(VENV)/bin/pytest -ra --soak-seconds $(SOAK_SECONDS) $(PYTEST_ARGS)

soak: setup
	$(VENV)/bin/pytest -ra -m soak --soak-seconds $(SOAK_SECONDS) tests/e2e/test_soak.py $(PYTEST_ARGS)

# The kernel data-plane tests (or STRESS_PATHS) STRESS_RUNS times in a row while
# busy loops hold every core: proof that no test needs a quiet machine.
STRESS_RUNS ?= 5
STRESS_PATHS ?= tests/dataplane
test-stress: setup
	@for i in $$(seq 1 $(STRESS_RUNS)); do \
	  echo "== stress run $$i/$(STRESS_RUNS): $(STRESS_PATHS) with $$(nproc) busy cores =="; \
	  start=$$(date +%s); \
	  $(VENV)/bin/pytest -q -p no:cacheprovider --busy-cores $$(nproc) $(STRESS_PATHS) $(PYTEST_ARGS) || exit 1; \
	  echo "== stress run $$i passed in $$(( $$(date +%s) - start )) s =="; \
	done

test-unit: venv
	$(VENV)/bin/pytest -ra -m "not cluster and not kernel and not node and not images" $(PYTEST_ARGS)

cluster-up: venv control-plane node-deps
	@$(PY) -m orb8_dev.cluster up --state-dir $(ORB8_STATE) $(CLUSTER_ARGS)

cluster-down: venv
	@$(PY) -m orb8_dev.cluster down --state-dir $(ORB8_STATE)

crds-install: venv
	@$(PY) -m orb8_dev.cluster apply-crds --state-dir $(ORB8_STATE)

.PHONY: crds sync-crds
# Regenerate crds/*.yaml from orb8_dev/gen_crds.py, then copy them into the chart.
crds: venv
	@$(PY) -m orb8_dev.gen_crds
	@$(MAKE) -s sync-crds

# The chart carries byte-identical copies of crds/*.yaml and of the
# cross-namespace admission policy (tests/crds and tests/chart check this).
sync-crds:
	@mkdir -p charts/orb8/crds charts/orb8/files
	@rm -f charts/orb8/crds/*.yaml
	@cp crds/*.yaml charts/orb8/crds/
	@cp deploy/cross-namespace-policy.yaml charts/orb8/files/

# Both images from images/Dockerfile; the base is made from Debian packages, so
# nothing is pulled from an image registry. See docs/install.md.
images:
	@hack/install-image-deps.sh
	@hack/build-images.sh

demo: setup
	@$(PY) hack/demo.py --state-dir $(ORB8_STATE) $(DEMO_ARGS)

bench-gpu: venv
	$(PY) -m bench.gpu_bench

# The learned syscall baseline's false-positive rate on benign workloads (web server
# under load, package installs, a test run) with the real probe; needs root.
# Results go in docs/syscall-baseline.md. BENCH_ARGS="--replay build/baseline_fp_samples.json".
bench-baseline: venv bpf
	$(PY) -m bench.baseline_fp $(BENCH_ARGS)

# Regenerates the kubelet pod-resources v1 Python stubs from their .proto.
.PHONY: proto
proto: venv
	PYTHON=$(PY) orb8_agent/gpu/podresources/generate.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
	-@$(MAKE) -s -C bpf clean

# Data-plane cost side by side (flow probe vs none vs empty tc program, syscall
# probe hooks, collector CPU/RSS, and all probes together: flows + DNS + TCP
# health); needs root. Results go in docs/performance.md.
# BENCH_ARGS="--quick" for a smoke run, "--all-probes-only" for the last part alone.
bench-dataplane: venv bpf
	$(PY) -m bench.dataplane $(BENCH_ARGS)

# orb8 against the tools people use instead (installs them first); results and
# plots in bench/results/, write-up in docs/performance.md. BENCH_ARGS=--quick.
$(VENV)/.bench-stamp: $(VENV)/.stamp
	@$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $@

bench: venv bpf $(VENV)/.bench-stamp
	@hack/install-bench-deps.sh
	$(PY) -m bench.compare $(BENCH_ARGS)

bench-operator: setup
	$(PY) bench/operator_bench.py $(BENCH_ARGS)

# The Python packages hack/gpu-device-check.sh needs on a GPU machine with no
# network, one tree per Python minor version, packed into one archive.
gpu-deps: venv
	@rm -rf build/gpudeps && mkdir -p build
	@for v in 3.10 3.11 3.12 3.13; do \
	  $(PY) -m pip install -q --target build/gpudeps/py$$v --python-version $$v \
	    --only-binary=:all: --implementation cp --platform manylinux2014_x86_64 \
	    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	    'pydantic>=2' prometheus_client grpcio protobuf 'nvidia-ml-py>=12' || exit 1; \
	done
	@find build/gpudeps -name __pycache__ -prune -exec rm -rf {} +
	@tar -C build -cJf build/gpudeps.tar.xz gpudeps && echo build/gpudeps.tar.xz

reliability-doc: venv
	$(PY) -m orb8_dev.reliability
