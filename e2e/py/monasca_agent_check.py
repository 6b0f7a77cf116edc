"""Runs monasca-agent's own Prometheus check once against one /metrics endpoint, as the agent's
collector would with a static `prometheus.yaml` instance, and prints what it produced as JSON.

Usage (with the python of the monasca-agent virtualenv, see ci/test.sh):
    monasca_agent_check.py ENDPOINT_URL AGENT_DIMENSIONS_JSON INSTANCE_DIMENSIONS_JSON
    monasca_agent_check.py --discover PODS_JSON_FILE

The second form runs the check's Kubernetes pod autodetection (`auto_detect_endpoints: true`,
`detect_method: pod`) over the pods in PODS_JSON_FILE, served as the kubelet's `/pods` list by
a loopback HTTP server (the kubelet's read-only port, which the check reads), and prints the
endpoints and dimensions it derives: {"endpoints": [{"url": ..., "dimensions": {...}}]}.

AGENT_DIMENSIONS_JSON is agent.yaml's `Main: {dimensions: ...}` (written to a temporary
agent.yaml, which the agent requires), INSTANCE_DIMENSIONS_JSON the instance's
`default_dimensions` in conf.d/prometheus.yaml.

Output, one JSON object on stdout:
    measurements: the envelopes the check's real MetricsAggregator flushed (exactly what the
                  agent's forwarder would send to the Monasca API): name, dimensions, value
    rejected:     each sample the agent refused (name, labels, value) with the validator's
                  reason: the check logs these as "invalid metric" and drops them, nothing
                  else reports it
    nan_skipped:  samples the check skipped because their value is NaN (no log line)
    errors:       any other warning the check logged (a failed fetch, a parse error)
    samples:      how many samples the agent's parser (prometheus_client) read from the endpoint
    agent:        the monasca-agent version

Nothing is stubbed: the check class, its HTTP fetch, the text parser and the aggregator with
monasca-common's metric validation are the installed packages' own. Only the agent's process
loop (collector daemon, forwarder, Keystone) is not run: it has no part in turning a scrape into
measurements.
"""

import json
import logging
import os
import sys
import tempfile

import requests
from prometheus_client.parser import text_string_to_metric_families

import monasca_agent.version
from monasca_agent.collector.checks_d.prometheus import Prometheus
from monasca_agent.common.config import Config


class Rejections(logging.Handler):
    """Collects the check's "invalid metric" log records (each a refused sample)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.rejected = []
        self.other = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("invalid metric"):
            reason = message.split(":", 1)[1].strip() if ":" in message else message
            exc = record.exc_info[1] if record.exc_info else None
            self.rejected.append(
                {"reason": reason, "error": type(exc).__name__ if exc else None}
            )
        else:
            self.other.append(message)


def discover(pods_file):
    """Pod autodetection over the pods of PODS_FILE (see the module doc)."""
    import http.server
    import threading

    with open(pods_file, "rb") as f:
        body = f.read()

    class Kubelet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200 if self.path == "/pods" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if status == 200 else 0))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Kubelet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler = Rejections()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "agent.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"Main": {"hostname": "monasca-e2e"}}, f)
        agent_config = Config(configFile=path).get_config("Main")
    init_config = {"timeout": 5, "auto_detect_endpoints": True, "detect_method": "pod"}
    instance = {"kubernetes_labels": ["app"]}
    check = Prometheus("prometheus", init_config, agent_config, instances=[instance])
    # What check() does before detecting, minus the API lookup of the node's address, which
    # is replaced by the loopback kubelet.
    check.kubernetes_labels = instance["kubernetes_labels"]
    from monasca_agent.collector.checks import utils
    check.kubernetes_connector = utils.KubernetesConnector(check.connection_timeout)
    check.kubelet_url = "http://127.0.0.1:{}/pods".format(server.server_address[1])
    endpoints = check._get_metric_endpoints_by_pod({})
    server.shutdown()
    json.dump(
        {
            "endpoints": [
                {"url": e.scrape_endpoint, "dimensions": e.dimensions} for e in endpoints
            ],
            "errors": handler.other,
        },
        sys.stdout,
        indent=1,
    )
    print()


def main():
    if sys.argv[1] == "--discover":
        discover(sys.argv[2])
        return
    endpoint = sys.argv[1]
    agent_dimensions, dimensions = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    handler = Rejections()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)

    # The agent reads /etc/monasca/agent/agent.yaml (a singleton) before any check can run.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "agent.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"Main": {"hostname": "monasca-e2e", "dimensions": agent_dimensions}}, f)
        agent_config = Config(configFile=path).get_config("Main")

    # The static configuration of /etc/monasca/agent/conf.d/prometheus.yaml:
    #   init_config: {timeout: 5}
    #   instances: [{metric_endpoint: ..., default_dimensions: {...}}]
    instance = {"metric_endpoint": endpoint, "default_dimensions": dimensions}
    check = Prometheus("prometheus", {"timeout": 5}, agent_config, instances=[instance])
    check.run()
    envelopes = check.get_metrics()

    # What the agent's parser saw (the same fetch and parser the check used), to name the
    # samples the check refused: it logs only the validator's reason, in sample order.
    text = requests.get(endpoint, timeout=5).text
    # As the check builds them: the instance's default_dimensions, then the agent's.
    base = dict(dimensions)
    base.update(agent_dimensions)
    produced = {
        (e["measurement"]["name"], tuple(sorted(e["measurement"]["dimensions"].items())))
        for e in envelopes
    }
    samples, missing = 0, []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples += 1
            dims = dict(base)
            dims.update({k: v for k, v in sample.labels.items() if v})
            if (sample.name, tuple(sorted(dims.items()))) not in produced:
                missing.append({"name": sample.name, "labels": sample.labels,
                                "value": repr(sample.value)})
    # NaN samples are skipped by the check without a log line; the rest were refused.
    nan = [m for m in missing if m["value"] == "nan"]
    refused = [m for m in missing if m["value"] != "nan"]
    if len(refused) == len(handler.rejected):
        for sample, reason in zip(refused, handler.rejected):
            sample.update(reason)
    else:
        handler.other.append(
            f"{len(refused)} samples missing but {len(handler.rejected)} rejections logged"
        )

    measurements = [
        {
            "name": e["measurement"]["name"],
            "dimensions": e["measurement"]["dimensions"],
            "value": e["measurement"]["value"],
            "timestamp_ms": e["measurement"]["timestamp"],
        }
        for e in envelopes
    ]
    measurements.sort(key=lambda m: (m["name"], sorted(m["dimensions"].items())))
    json.dump(
        {
            "agent": monasca_agent.version.version_string,
            "measurements": measurements,
            "rejected": refused,
            "nan_skipped": nan,
            "errors": handler.other,
            "samples": samples,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
