#!/usr/bin/env bash
# Local demo in one command: a gunicorn app with 4 workers in prometheus_client multiprocess
# mode, the sidecar reading its directory, some traffic including a killed worker, and the
# aggregated output. Needs python3 with `pip install prometheus_client gunicorn` (done below).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus_client gunicorn
cargo build --release -q -p monasca-sidecar --bin monasca-sidecar

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export PROMETHEUS_MULTIPROC_DIR="$work/multiproc"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
cat > "$work/sidecar.yaml" <<YAML
listen: {metrics: "127.0.0.1:19102", ingest: "127.0.0.1:19091", statsd: "127.0.0.1:18125"}
multiprocessDir: $PROMETHEUS_MULTIPROC_DIR
YAML

echo "== starting gunicorn (4 workers) and monasca-sidecar"
(cd sidecar/tests/py && exec python3 -m gunicorn -w 4 -b 127.0.0.1:18000 --log-level warning gunicorn_app:app) &
"${CARGO_TARGET_DIR:-target}/release/monasca-sidecar" --config "$work/sidecar.yaml" 2>"$work/sidecar.log" &
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18000/pid && curl -sf -o /dev/null http://127.0.0.1:19102/healthz && break; sleep 0.2; done

echo "== 200 requests"
for _ in $(seq 200); do curl -sf -o /dev/null http://127.0.0.1:18000/hello; done
victim=$(curl -sf http://127.0.0.1:18000/pid)
echo "== SIGKILL worker $victim (gunicorn starts a new one), then 100 more requests"
kill -9 "$victim"
sleep 1
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:18000/hello; done

echo "== aggregated /metrics (one series per label set, no pid label; expect 300):"
curl -s http://127.0.0.1:19102/metrics | grep -E '^app_requests_total|^app_request_seconds_(count|sum)'
echo "== workers known to the sidecar:"
curl -s http://127.0.0.1:19102/v1/workers; echo
