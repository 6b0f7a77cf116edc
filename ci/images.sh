#!/usr/bin/env bash
# Local container images for the real-pod e2e test (e2e/tests/cluster/real_pods.rs), built with
# podman and no registry:
#   localhost/monasca-sidecar:ci, localhost/monasca-operator:ci
#       FROM scratch: the static (musl) release binary, the passwd/group entry of uid 65532 and a
#       CA bundle; the runtime content of Dockerfile.sidecar / Dockerfile.operator
#       (ci/images/*.Containerfile; e2e/tests/images.rs keeps them in step).
#   localhost/monasca-test-app:ci
#       a minimal Debian root from debootstrap (python3, python3-prometheus-client, gunicorn),
#       cached as a tarball under $MONASCA_IMAGE_CACHE, plus the tests' Python apps and clients
#       (APP_SCRIPTS) under /app and, from PyPI wheels at sidecar/tests/requirements.txt's
#       versions, the clients the real-pod variants run (APP_WHEELS) under /opt/site-packages.
# Each image carries the sha256 of its content as a label and is rebuilt only when that changes;
# the image it replaces is removed. Also makes this machine able to run containers (runc and
# ulimits in /etc/containers/containers.conf, written only when a probe container fails).
# Prints each step's time, each image's size and user.
#
# Usage: bash ci/images.sh     (called by ci/test.sh's install section, which installs the
#        Debian packages it needs: podman runc catatonit debootstrap musl-tools)
# A cold run (nothing cached) without touching the real caches, as measured for the README:
#   MONASCA_IMAGE_CACHE=/tmp/cold/images PIP_CACHE_DIR=/tmp/cold/pip \
#   CONTAINERS_STORAGE_CONF=/tmp/cold/storage.conf bash ci/images.sh
# (storage.conf: [storage] driver = "overlay", graphroot and runroot under /tmp/cold).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MONASCA_CACHE:-${HOME:-/root}/.cache/monasca-sidecar}"
IMAGES_CACHE="${MONASCA_IMAGE_CACHE:-$CACHE/images}"
TARGET=x86_64-unknown-linux-musl
HASH_LABEL=io.monasca.content-sha256
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
APP_PACKAGES=python3,python3-prometheus-client,gunicorn
# Into the app image's /app: the apps and clients the real-pod scenarios run inside the pod.
APP_SCRIPTS=(sidecar/tests/py/gunicorn_app.py sidecar/tests/py/otel_gunicorn_app.py
  sidecar/tests/py/otel_gunicorn_conf.py e2e/py/monasca_statsd_sender.py e2e/py/pod_pushes.py)
# From PyPI (with their dependencies), at the versions sidecar/tests/requirements.txt pins.
APP_WHEELS=(prometheus_client monasca-statsd opentelemetry-sdk opentelemetry-exporter-otlp-proto-http)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
started=$SECONDS
step_started=$SECONDS
step_name=""
timings=()

step() { # NAME: ends the running step (its time recorded) and starts NAME
  if [ -n "$step_name" ]; then
    timings+=("$(printf '%5d s  %s' "$((SECONDS - step_started))" "$step_name")")
  fi
  step_name="$1"
  step_started=$SECONDS
  [ -z "$1" ] || echo "== images: $1"
}

image_label() { # IMAGE: the content hash label of IMAGE, empty when IMAGE is absent
  podman image inspect --format "{{index .Labels \"$HASH_LABEL\"}}" "$1" 2>/dev/null || true
}

build_image() { # IMAGE CONTEXT CONTAINERFILE [BUILD-ARG...]: podman build unless the content is unchanged
  local image="$1" context="$2" file="$3" hash old
  shift 3
  hash="$( (cd "$context" && find . -type f -print0 | sort -z | xargs -0 sha256sum; cat "$OLDPWD/$file"; echo "$*") | sha256sum | cut -d' ' -f1)"
  if [ "$(image_label "$image")" = "$hash" ]; then
    echo "   $image: unchanged"
    return 0
  fi
  old="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  echo "   podman build $image"
  podman build --quiet --pull=never --label "$HASH_LABEL=$hash" "${@/#/--build-arg=}" \
    -f "$file" -t "$image" "$context" >/dev/null
  if [ -n "$old" ] && [ "$old" != "$(podman image inspect --format '{{.Id}}' "$image")" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true # the replaced image, unless something still uses it
  fi
}

step tools
for tool in podman runc catatonit debootstrap musl-gcc; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing (ci/test.sh installs it: podman runc catatonit debootstrap musl-tools)" >&2
    exit 1
  }
done
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi

step "static release binaries ($TARGET, cargo build --release)"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --quiet --release --locked --target "$TARGET" \
  -p monasca-sidecar -p monasca-operator --bin monasca-sidecar --bin monasca-operator

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for binary in monasca-sidecar monasca-operator; do
  step "image localhost/$binary:ci (FROM scratch)"
  context="$work/$binary"
  mkdir -p "$context"
  cp -r ci/images/rootfs "$context/"
  cp "$CA_BUNDLE" "$context/ca-certificates.crt"
  cp "target/$TARGET/release/$binary" "$context/$binary"
  build_image "localhost/$binary:ci" "$context" "ci/images/${binary#monasca-}.Containerfile"
done

step "the machine runs containers"
conf=/etc/containers/containers.conf
conf_set() { # SECTION LINE: adds LINE to [SECTION] of containers.conf (the section made if absent)
  mkdir -p "$(dirname "$conf")"
  if grep -q "^\[$1\]" "$conf" 2>/dev/null; then
    sed -i "/^\[$1\]/a $2" "$conf"
  else
    printf '%s\n' "# Written by monasca-sidecar's ci/images.sh: a probe container failed." "[$1]" "$2" >>"$conf"
  fi
}
probe() { podman run --rm --pull=never --network=none localhost/monasca-sidecar:ci --help >/dev/null 2>"$work/probe.err"; }
if ! probe; then
  echo "   a probe container failed: $(tr '\n' ' ' <"$work/probe.err")"
  if ! grep -q '^default_ulimits' "$conf" 2>/dev/null; then
    # containers.conf's default ulimits (nofile, nproc) are above the hard limits a container
    # may set here ("error setting rlimit ... operation not permitted").
    echo "   $conf: default_ulimits within this machine's hard limits"
    conf_set containers 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'
  fi
  if [ "$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null)" = crun ] &&
    [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && ! grep -q '^runtime = "runc"' "$conf"; then
    # crun refuses hybrid (v1 + unified) cgroups; runc runs there.
    echo "   $conf: runtime = runc (crun and cgroups v1/hybrid)"
    conf_set engine 'runtime = "runc"'
  fi
  if ! probe; then
    echo "containers cannot run on this machine: $(cat "$work/probe.err")" >&2
    exit 1
  fi
fi
echo "   a probe container ran"

step "test app root (debootstrap Debian $DEBIAN_SUITE: $APP_PACKAGES)"
mkdir -p "$IMAGES_CACHE"
rootfs_key="$(echo "$DEBIAN_SUITE $APP_PACKAGES" | sha256sum | cut -c1-16)"
rootfs_tar="$IMAGES_CACHE/app-rootfs-$rootfs_key.tar"
if [ ! -s "$rootfs_tar" ]; then
  echo "   debootstrap --variant=minbase $DEBIAN_SUITE (cached at $rootfs_tar)"
  root="$IMAGES_CACHE/app-rootfs.tmp"
  rm -rf "$root"
  debootstrap --variant=minbase --include="$APP_PACKAGES" "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" \
    >"$IMAGES_CACHE/debootstrap.log" 2>&1 || {
    tail -20 "$IMAGES_CACHE/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$root"
fi
base="localhost/monasca-test-app-base:$rootfs_key"
if ! podman image exists "$base"; then
  echo "   podman import $base"
  podman import --quiet "$rootfs_tar" "$base" >/dev/null
fi
step "image localhost/monasca-test-app:ci (PyPI wheels, apps)"
context="$work/app"
mkdir -p "$context/app"
cp "${APP_SCRIPTS[@]}" "$context/app/"
# The clients at the versions the other tests pin, as wheels for the image's Python (bookworm:
# CPython 3.11), pip's cache keeping them between runs: the pod tests run the same client
# versions as the other tests (Debian bookworm's prometheus_client 0.16, with its older
# multiprocess layout, is covered by sidecar/tests/multiprocess.rs).
pins=()
for wheel in "${APP_WHEELS[@]}"; do
  pin="$(grep -i "^$wheel==" sidecar/tests/requirements.txt)" || {
    echo "$wheel is not pinned in sidecar/tests/requirements.txt" >&2
    exit 1
  }
  pins+=("$pin")
done
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-compile \
  --only-binary=:all: --implementation cp --python-version 3.11 --platform manylinux2014_x86_64 \
  --target "$context/site-packages" "${pins[@]}"
build_image localhost/monasca-test-app:ci "$context" ci/images/app.Containerfile "BASE=$base"
step ""

echo "== images: sizes and users"
for image in localhost/monasca-sidecar:ci localhost/monasca-operator:ci localhost/monasca-test-app:ci; do
  podman image inspect --format "   $image {{.Size}} bytes, user {{if .Config.User}}{{.Config.User}}{{else}}root (the pod sets runAsUser){{end}}" "$image"
done
echo "== images: timings"
printf '   %s\n' "${timings[@]}"
echo "   image stage took $((SECONDS - started)) s"
