#!/usr/bin/env bash
# The one command that runs every test: installs what the tests need (idempotent: a second run
# installs nothing), then `cargo test --workspace`. README's "Tests" section and .ci/run both
# call exactly this.
#
# Usage: bash ci/test.sh              (everything: cargo test --workspace)
#        bash ci/test.sh -p monasca-e2e --test monasca_agent   (these cargo test arguments instead)
# Environment: MONASCA_CACHE (default ~/.cache/monasca-sidecar) for what is installed outside
# the clone (monasca-agent's virtualenv); it survives between runs and into CI.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MONASCA_CACHE:-${HOME:-/root}/.cache/monasca-sidecar}"
export MONASCA_CACHE="$CACHE"
PIP=(--quiet --disable-pip-version-check --root-user-action=ignore)

apt_install() { # PACKAGE...: Debian packages, installed only when missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "   apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

venv_install() { # VENV REQUIREMENTS: a virtualenv of its own, reinstalled only when REQUIREMENTS change
  local venv="$1" req="$2" want
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
    echo "   pip install -r $req into $venv"
    "$venv/bin/python" -m pip install "${PIP[@]}" -r "$req"
    echo "$want" >"$venv/.requirements.sha256"
  fi
}

echo "== installing test dependencies"
# ---- install section: every package the tests need, in one place --------------------------
# Debian: the real Prometheus server and promtool (e2e PromQL checks, `promtool check/test rules`).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi
# Debian: Prometheus Pushgateway, the side-by-side baseline of `python3 bench/run.py`.
if ! command -v prometheus-pushgateway >/dev/null 2>&1; then
  apt_install prometheus-pushgateway
fi
# util-linux: setpriv and unshare run the sidecar under its pod uid and in a pid namespace of
# its own (sidecar/tests/multiprocess_pod.rs; those tests need root, as CI has).
if ! command -v setpriv >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
  apt_install util-linux
fi
# Python with venv support (monasca-agent gets a virtualenv of its own).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3 python3-venv python3-pip
fi
# PyPI: the real clients the tests talk to (prometheus_client, gunicorn, monasca-statsd, statsd).
python3 -m pip install "${PIP[@]}" -r sidecar/tests/requirements.txt
# PyPI, own virtualenv: monasca-agent 10.x for e2e/tests/monasca_agent.rs (its oslo/openstack
# dependency tree must not touch the system's packages).
mkdir -p "$CACHE"
venv_install "$CACHE/monasca-agent-venv" e2e/py/requirements-monasca-agent.txt
# PyPI, own virtualenv: prometheus_client 0.16 (Debian bookworm's), whose multiprocess files
# have no timestamps; sidecar/tests/multiprocess.rs reads them beside its own collector.
venv_install "$CACHE/prometheus-client-0.16-venv" sidecar/tests/requirements-prometheus-client-0.16.txt
# Go and Java clients (e2e/tests/clients.rs): Maven and a JDK from Debian when missing. Go 1.23+
# is preinstalled on this machine kind; where it is missing (Debian's Go 1.19 is too old), that
# Go fetches the pinned toolchain module golang.org/toolchain from the Go module proxy, as
# GOTOOLCHAIN would, into a cache outside the clone.
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  apt_install maven default-jdk-headless
fi
if [ -x /usr/local/go/bin/go ]; then export PATH="$PATH:/usr/local/go/bin"; fi
if ! go version 2>/dev/null | grep -qE 'go1\.(2[3-9]|[3-9][0-9])'; then
  go_tc="$CACHE/go1.26.8"
  if [ ! -x "$go_tc/bin/go" ]; then
    apt_install golang-1.19-go
    rm -rf "$go_tc.mod" "$go_tc.tmp"
    go_dir="$(GOFLAGS= GOMODCACHE="$go_tc.mod" /usr/lib/go-1.19/bin/go mod download -json \
      "golang.org/toolchain@v0.0.1-go1.26.8.linux-$(dpkg --print-architecture)" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    cp -r "$go_dir" "$go_tc.tmp"
    chmod -R u+w "$go_tc.tmp" "$go_tc.mod"
    chmod +x "$go_tc.tmp"/bin/* "$go_tc.tmp"/pkg/tool/*/* # module zips keep no exec bits
    mv "$go_tc.tmp" "$go_tc"
    rm -rf "$go_tc.mod"
  fi
  export PATH="$go_tc/bin:$PATH"
fi
# Go module proxy: a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager) for the cluster e2e tests, at the versions in
# ci/control-plane/versions.env, cached outside the clone (under a second when cached; about
# 29 minutes cold on a busy 2-core machine).
bash ci/control-plane/install.sh
# The oldest supported Kubernetes too (K8S_OLDEST): DESIGN.md's contract is that CI tests the
# newest and the oldest against a real apiserver (matchConditions, ValidatingAdmissionPolicy).
bash ci/control-plane/install.sh "$(. ci/control-plane/versions.env && echo "$K8S_OLDEST")"
# Debian podman + runc + catatonit, debootstrap, musl-tools; local images (no registry) for the
# real-pod e2e test: the sidecar and operator FROM scratch from static release binaries, and a
# Debian app image (python3, prometheus_client, gunicorn) cached under $CACHE/images. A machine
# that cannot build or run them does not stop the other tests: the real-pod test reports why
# (ignored outside CI, failed under CI=true).
apt_install podman runc catatonit debootstrap musl-tools
bash ci/images.sh || echo "   ci/images.sh failed (above): the real-pod e2e test will report it"
# ---- end of install section ----------------------------------------------------------------

full=false
if [ "$#" -eq 0 ]; then set -- --workspace; full=true; fi
# The binaries the e2e tests start, built up to date before any test runs: the harness
# (e2e::workspace_binary) takes them from target/<profile>/ and never runs a nested cargo build.
echo "== cargo build --bins -p monasca-sidecar -p monasca-operator"
cargo build --bins -p monasca-sidecar -p monasca-operator
echo "== cargo test $*"
cargo test "$@"
if $full; then
  oldest="$(. ci/control-plane/versions.env && echo "$K8S_OLDEST")"
  echo "== cargo test -p monasca-e2e --test cluster, against the oldest supported Kubernetes ($oldest)"
  MONASCA_K8S_VERSION="$oldest" cargo test -p monasca-e2e --test cluster
fi
