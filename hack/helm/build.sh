#!/usr/bin/env bash
# Builds the helm CLI from its Go module, once per version, and prints the
# directory that holds it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../k8s/versions.env"
cache_root="${ORB8_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orb8}"
out="$cache_root/helm/${HELM_VERSION}"

if [ -x "$out/helm" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { echo "build: Go is not installed (needed to build helm)" >&2; exit 1; }
# Serialise concurrent builds (parallel make, several worktrees): the second
# waits, then finds the binaries cached.
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9
if [ -x "$out/helm" ]; then
  echo "$out"
  exit 0
fi
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$here"
echo "build: compiling helm ${HELM_VERSION}" >&2
CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
mkdir -p "$(dirname "$out")" && rm -rf "$out" && mv "$tmp" "$out"
echo "$out"
