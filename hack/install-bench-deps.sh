#!/usr/bin/env bash
# Installs the tools `make bench` measures orb8 against (its peers), from
# Debian packages. Idempotent: it only calls apt-get when something is missing.
# A package that fails to install is reported here and later by the bench as
# a skipped peer with the reason; it does not stop the run.
set -uo pipefail
packages=(bpftrace libbpf-tools nftables conntrack iperf3 tcpdump linux-perf ethtool)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-bench-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 0
fi
echo "install-bench-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || echo "install-bench-deps: apt-get update failed" >&2
for pkg in "${missing[@]}"; do
  # one at a time, so one unavailable peer does not block the others
  apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
    || echo "install-bench-deps: could not install $pkg; the bench will skip it" >&2
done
exit 0
