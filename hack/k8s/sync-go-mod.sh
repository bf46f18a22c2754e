#!/usr/bin/env bash
# Regenerates go.mod for the pinned Kubernetes release: every k8s.io staging
# module that k8s.io/kubernetes requires at v0.0.0 is replaced by its
# published v0.<minor>.<patch> tag. The list is read from kubernetes' own go.mod.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env
staging_version="v0.${K8S_VERSION#v1.}"

upstream_mod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$upstream_mod" ] || { echo "sync-go-mod: cannot read go.mod of k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }

rm -f go.mod go.sum
go mod init orb8.io/hack/k8s >/dev/null 2>&1
go mod edit -go=1.24.0
go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}" -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$upstream_mod" | sort -u | while read -r module; do
  go mod edit -replace="${module}=${module}@${staging_version}"
done
go mod tidy
echo "sync-go-mod: $(grep -c '=> k8s.io' go.mod) staging replaces at ${staging_version}"
