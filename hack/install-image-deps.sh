#!/usr/bin/env bash
# Installs the Debian packages `make images` builds with: mmdebstrap (the base
# root filesystem from Debian packages) and buildah (builds the Dockerfile
# without a Docker engine or a registry). Idempotent: apt-get runs only when
# something is missing. `make test` does not need these.
set -euo pipefail
packages=(mmdebstrap buildah ca-certificates)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-image-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "install-image-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
