#!/usr/bin/env bash
# `make images`: builds the orb8-agent and orb8-operator images from
# images/Dockerfile with buildah (as root, chroot isolation, overlay storage),
# without a Docker engine and without pulling
# any image. The Dockerfile's base, debian:bookworm-slim, is made here from
# Debian packages (mmdebstrap, the machine's Debian mirror) and tagged with the
# public name, so the very same Dockerfile builds with `docker build` elsewhere.
#
# Output: build/images/orb8-{agent,operator}-<version>.tar (docker-archive;
# `ctr -n k8s.io images import` and `docker load` take them), named like the
# chart's default images. Each archive is rebuilt only when its inputs (the
# sources that go into the image, the Dockerfile, this script, the base) change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${IMAGES_OUT:-$ROOT/build/images}
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/orb8}
TARGETS=${IMAGE_TARGETS:-agent operator}
BASE_IMAGE=docker.io/library/debian:bookworm-slim
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

if [ "$(id -u)" -ne 0 ]; then
  echo "build-images: run as root (buildah with chroot isolation and its own storage)" >&2
  exit 1
fi
# orb8's own image store (layer cache), shared by every checkout on this
# machine and apart from any other buildah/podman user's. overlay is fast;
# IMAGES_STORAGE_DRIVER=vfs works where overlayfs cannot be mounted (slow:
# every layer is a full copy).
DRIVER=${IMAGES_STORAGE_DRIVER:-overlay}
STORE=${IMAGES_STORE:-${ORB8_CACHE:-$HOME/.cache/orb8}/buildah}/$DRIVER
mkdir -p "$OUT" "$STORE/base"
BUILDAH=(buildah --storage-driver "$DRIVER" --root "$STORE/storage" --runroot "$STORE/run")
export BUILDAH_ISOLATION=chroot
now() { date +%s; }
t0=$(now)

# --- the base: bookworm-slim, from Debian packages --------------------------
# Like the public slim image: apt only, no docs/man pages/locales, bookworm +
# updates + security sources.
MMDEBSTRAP_ARGS=(
  --variant=apt --format=tar
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --aptopt='APT::Install-Recommends "false"'
  bookworm
)
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
base_key=$(printf '%s\n' "${MMDEBSTRAP_ARGS[@]}" "${MIRRORS[@]}" "$BASE_IMAGE" | sha256sum | cut -c1-16)
if [ "$(cat "$STORE/base/imported.key" 2>/dev/null)" != "$base_key" ] \
   || ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "build-images: base $BASE_IMAGE from Debian packages (mmdebstrap)" >&2
  rm -f "$STORE/base/rootfs.tar" "$STORE/base/imported.key"
  mmdebstrap --quiet "${MMDEBSTRAP_ARGS[@]}" "$STORE/base/rootfs.tar" "${MIRRORS[@]}"
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' > "$STORE/base/Containerfile"
  "${BUILDAH[@]}" bud --quiet --isolation chroot -f "$STORE/base/Containerfile" \
    -t "$BASE_IMAGE" "$STORE/base" >/dev/null
  rm -f "$STORE/base/rootfs.tar"
  echo "$base_key" > "$STORE/base/imported.key"
  echo "build-images: base ready in $(( $(now) - t0 )) s" >&2
fi

# --- the inputs of the orb8 images -----------------------------------------
mapfile -t inputs < <(git ls-files -co --exclude-standard -- \
  bpf orb8_common orb8_operator orb8_agent orb8_cli pyproject.toml README.md \
  images .dockerignore hack/build-images.sh | sort)
inputs_key=$( (echo "$base_key $REGISTRY $VERSION"; sha256sum "${inputs[@]}") | sha256sum | cut -c1-16)

# pip in the build trusts what this machine trusts (a TLS-intercepting proxy's
# CA, say), through a build secret that stays out of the image layers.
SECRETS=()
CA_BUNDLE=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$CA_BUNDLE" ] && SECRETS=(--secret "id=ca,src=$CA_BUNDLE")

for target in $TARGETS; do
  image="$REGISTRY/orb8-$target:$VERSION"
  archive="$OUT/orb8-$target-$VERSION.tar"
  if [ -f "$archive" ] && [ "$(cat "$archive.key" 2>/dev/null)" = "$inputs_key" ]; then
    echo "build-images: $image up to date ($archive)" >&2
    continue
  fi
  start=$(now)
  echo "build-images: building $image" >&2
  "${BUILDAH[@]}" bud --layers --pull=never --isolation chroot "${SECRETS[@]}" \
    -f images/Dockerfile --target "$target" --build-arg "VERSION=$VERSION" \
    -t "$image" "$ROOT"
  # Smoke check: the entrypoint starts inside the image (it prints its help).
  ctr=$("${BUILDAH[@]}" from --pull=never "$image")
  if ! "${BUILDAH[@]}" run --isolation chroot "$ctr" -- "orb8-$target" --help >/dev/null; then
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    echo "build-images: orb8-$target --help failed inside $image" >&2
    exit 1
  fi
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  rm -f "$archive" "$archive.key"
  "${BUILDAH[@]}" push --quiet "$image" "docker-archive:$archive.tmp:$image"
  mv "$archive.tmp" "$archive"
  echo "$inputs_key" > "$archive.key"
  echo "build-images: $image -> $archive ($(du -m "$archive" | cut -f1) MiB, $(( $(now) - start )) s)" >&2
done
echo "build-images: done in $(( $(now) - t0 )) s" >&2
