#!/usr/bin/env bash
# Installs the Debian packages a real local Kubernetes node needs: the
# container runtime (containerd + runc), the CNI plugins (bridge, host-local,
# loopback, portmap in /usr/lib/cni) and busybox-static (the test app image).
# Idempotent: it only calls apt-get when something is missing. The packages'
# own services are never used: orb8_dev/node.py runs its own containerd with
# its own config, root, state and socket.
set -euo pipefail
# nftables: kube-proxy's nftables mode drives `nft`; conntrack: inspecting its NAT
packages=(containerd runc containernetworking-plugins busybox-static nftables conntrack)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-node-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "install-node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt-get (a parallel set-up) may hold the dpkg lock: wait for it.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
