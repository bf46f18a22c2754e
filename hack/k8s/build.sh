#!/usr/bin/env bash
# Builds Kubernetes binaries from their Go modules, once per version.
#
#   build.sh          kube-apiserver, etcd and a matching kubectl (the control plane)
#   build.sh node     kubelet, kube-scheduler, kube-controller-manager and kube-proxy
#                     (a real node)
#
# Prints the directory that holds the binaries. Concurrent builds (parallel
# make, several worktrees) are serialised by a flock: the second waits, then
# finds the binaries cached.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/versions.env"
cache_root="${ORB8_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orb8}"
set_name="${1:-control-plane}"
case "$set_name" in
  control-plane)
    out="$cache_root/k8s/${K8S_VERSION}-etcd-${ETCD_VERSION}"
    binaries=(etcd kube-apiserver kubectl) ;;
  node)
    out="$cache_root/k8s/${K8S_VERSION}-node"
    binaries=(kube-scheduler kube-controller-manager kubelet kube-proxy) ;;
  *) echo "build: unknown set '$set_name' (control-plane or node)" >&2; exit 2 ;;
esac

complete() {
  local bin
  for bin in "${binaries[@]}"; do [ -x "$out/$bin" ] || return 1; done
}
if complete; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build: Go is not installed (needed to build ${binaries[*]})" >&2; exit 1; }
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9
if complete; then
  echo "$out"
  exit 0
fi
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

cd "$here"
for bin in "${binaries[@]}"; do
  # a set that grew (kube-proxy joined the node set) only builds what it lacks
  [ -x "$out/$bin" ] && continue
  case "$bin" in
    etcd)
      echo "build: compiling etcd ${ETCD_VERSION} (cold builds take a few minutes)" >&2
      CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" ./etcd ;;
    kube-apiserver)
      echo "build: compiling kube-apiserver ${K8S_VERSION} (cold builds take 10-20 minutes on 2 cores)" >&2
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$bin" "k8s.io/kubernetes/cmd/$bin" ;;
    *)
      echo "build: compiling $bin ${K8S_VERSION}" >&2
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$bin" "k8s.io/kubernetes/cmd/$bin" ;;
  esac
done
if [ -d "$out" ]; then
  # running binaries of the cached set stay where they are; only new ones move in
  for bin in "$tmp"/*; do mv "$bin" "$out/"; done
else
  mkdir -p "$(dirname "$out")" && mv "$tmp" "$out"
fi
echo "$out"
