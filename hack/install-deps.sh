#!/usr/bin/env bash
# Installs the Debian packages orb8 builds and tests with. Idempotent: it only
# calls apt-get when something is missing.
set -euo pipefail
packages=(clang llvm libbpf-dev libbpf1 bpftool iproute2 openssl procps ca-certificates make git)
# data plane: libc headers for bench/dataplane_gen.c, UAPI headers for the syscall table
packages+=(libc6-dev linux-libc-dev)
# docs/gitops.md: the Argo CD health check (Lua) is run against real sessions
packages+=(lua5.1 lua-cjson)
# tests/cli/test_top_tmux.py: `orb8 top` is driven in a real terminal
packages+=(tmux)
# the TCP health tests drop packets in their own namespaces with nft (no sch_netem module here)
packages+=(nftables)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
