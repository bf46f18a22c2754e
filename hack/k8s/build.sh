#!/usr/bin/env bash
# Builds kube-apiserver, etcd and a matching kubectl from their Go modules,
# once per version.
# Prints the directory that holds the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/versions.env"
cache_root="${ORB8_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orb8}"
out="$cache_root/k8s/${K8S_VERSION}-etcd-${ETCD_VERSION}"

if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ -x "$out/kubectl" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build: Go is not installed (needed to build kube-apiserver)" >&2; exit 1; }
# Serialise concurrent builds (parallel make, several worktrees): the second
# waits, then finds the binaries cached.
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9
if [ -x "$out/kubectl" ]; then
  echo "$out"
  exit 0
fi
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

cd "$here"
echo "build: compiling etcd ${ETCD_VERSION} (cold builds take a few minutes)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" ./etcd
echo "build: compiling kube-apiserver ${K8S_VERSION} (cold builds take 10-20 minutes on 2 cores)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "build: compiling kubectl ${K8S_VERSION}" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
mkdir -p "$(dirname "$out")" && rm -rf "$out" && mv "$tmp" "$out"
echo "$out"
