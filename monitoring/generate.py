#!/usr/bin/env python3
"""Writes the generated monitoring files.

Usage: python3 monitoring/generate.py

- monitoring/prometheusrule.yaml from monitoring/rules.yaml (the source): the PrometheusRule
  (Prometheus Operator, monitoring.coreos.com/v1) carries the same groups, unchanged, so that
  clusters running prometheus-operator load exactly the rules promtool tested;
- monitoring/grafana-dashboard.json from the panel list below.
e2e/tests/monitoring.rs fails when prometheusrule.yaml disagrees with rules.yaml, and when a
dashboard query names a metric the binaries do not export.
"""

import json
import pathlib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
HEADER = """\
# Generated from monitoring/rules.yaml by `python3 monitoring/generate.py`. Do not edit: the
# test e2e/tests/monitoring.rs fails when this differs from rules.yaml. For clusters with the
# Prometheus Operator: kubectl apply -n monasca-system -f monitoring/prometheusrule.yaml
# (add the labels your Prometheus' ruleSelector expects).
"""


def main():
    rules = yaml.safe_load((HERE / "rules.yaml").read_text(encoding="utf-8"))
    prometheus_rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "monasca-sidecar",
            "labels": {
                "app.kubernetes.io/name": "monasca-operator",
                "app.kubernetes.io/part-of": "monasca-sidecar",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    text = HEADER + yaml.safe_dump(prometheus_rule, sort_keys=False, width=100)
    (HERE / "prometheusrule.yaml").write_text(text, encoding="utf-8")
    dashboard = build_dashboard()
    (HERE / "grafana-dashboard.json").write_text(
        json.dumps(dashboard, indent=2) + "\n", encoding="utf-8"
    )


SIDECAR = '{namespace=~"$namespace", pod=~"$pod"}'
# (title, unit, [(query, legend)]) per row; each panel is a time series, 8 wide.
ROWS = [
    ("Sidecars", [
        ("Scrape up", "none", [(f'up{{job=~".*monasca-sidecar.*", namespace=~"$namespace", pod=~"$pod"}}', "{{namespace}}/{{pod}}")]),
        ("Workers", "none", [(f"sum by (namespace, pod) (monasca_sidecar_workers{SIDECAR})", "{{namespace}}/{{pod}}")]),
        ("Aggregated series", "none", [(f"sum by (namespace, pod) (monasca_sidecar_series{SIDECAR})", "{{namespace}}/{{pod}}")]),
    ]),
    ("Ingest", [
        ("Pushed samples /s", "ops", [("sum by (namespace, pod) (monasca_sidecar:push_samples:rate5m{namespace=~\"$namespace\", pod=~\"$pod\"})", "{{namespace}}/{{pod}}")]),
        ("Refused inputs /s by reason", "ops", [("sum by (api, reason) (monasca_sidecar:ingest_errors:rate5m{namespace=~\"$namespace\", pod=~\"$pod\"})", "{{api}} {{reason}}")]),
        ("Histogram layout mismatches (15m)", "none", [(f"sum by (namespace, pod) (increase(monasca_sidecar_histogram_layout_mismatches_total{SIDECAR}[15m]))", "{{namespace}}/{{pod}}")]),
    ]),
    ("StatsD", [
        ("StatsD lines /s", "ops", [(f"sum by (namespace, pod) (rate(monasca_sidecar_statsd_lines_total{SIDECAR}[5m]))", "{{namespace}}/{{pod}}")]),
        ("StatsD errors and drops /s", "ops", [
            (f"sum by (reason) (rate(monasca_sidecar_statsd_errors_total{SIDECAR}[5m]))", "error {{reason}}"),
            (f"sum by (reason) (rate(monasca_sidecar_statsd_dropped_total{SIDECAR}[5m]))", "dropped {{reason}}"),
            (f"sum by (namespace, pod) (rate(monasca_sidecar_statsd_datagrams_dropped_total{SIDECAR}[5m]))",
             "datagrams dropped by the kernel (socket buffer full) {{namespace}}/{{pod}}"),
        ]),
        ("Counter resets absorbed /s", "ops", [
            (f"sum by (namespace, pod) (rate(monasca_sidecar_counter_resets_total{SIDECAR}[5m]))", "{{namespace}}/{{pod}}"),
            (f"sum by (namespace, pod) (rate(monasca_sidecar_worker_restarts_total{SIDECAR}[5m]))", "pushing workers restarted {{namespace}}/{{pod}}"),
            (f"sum by (namespace, pod) (rate(monasca_sidecar_worker_start_time_regressions_total{SIDECAR}[5m]))", "start time went back (two processes under one key?) {{namespace}}/{{pod}}"),
        ]),
    ]),
    ("Multiprocess", [
        ("Multiprocess files and workers", "none", [
            (f"sum by (namespace, pod) (monasca_sidecar_multiprocess_files{SIDECAR})", "files {{namespace}}/{{pod}}"),
            (f"sum by (namespace, pod) (monasca_sidecar_multiprocess_workers{SIDECAR})", "workers {{namespace}}/{{pod}}"),
        ]),
        ("Dead workers folded /s", "ops", [(f"sum by (namespace, pod) (rate(monasca_sidecar_multiprocess_folded_workers_total{SIDECAR}[5m]))", "{{namespace}}/{{pod}}")]),
        ("Liveness by file age (cannot compact)", "none", [(f'max by (namespace, pod) (monasca_sidecar_multiprocess_liveness{{method="mtime", namespace=~"$namespace", pod=~"$pod"}})', "{{namespace}}/{{pod}}")]),
    ]),
    ("Exposition and configuration", [
        ("/metrics render time (last)", "s", [(f"max by (namespace, pod) (monasca_sidecar_metrics_render_last_seconds{SIDECAR})", "{{namespace}}/{{pod}}")]),
        ("Config accepted", "none", [(f"min by (namespace, pod) (monasca_sidecar_config_last_reload_successful{SIDECAR})", "{{namespace}}/{{pod}}")]),
        ("Worker scrape targets up", "none", [(f"sum by (namespace, pod) (monasca_sidecar_scrape_up{SIDECAR})", "{{namespace}}/{{pod}}")]),
    ]),
    ("Operator", [
        ("Admission reviews /s by outcome", "ops", [("monasca_operator:admission_reviews:rate5m", "{{outcome}}")]),
        ("Admission latency p99", "s", [("monasca_operator:admission_duration_seconds:p99_5m", "p99")]),
        ("Skipped pods /s by reason", "ops", [("sum by (reason) (rate(monasca_operator_admission_skips_total[5m]))", "{{reason}}")]),
    ]),
    ("Operator state", [
        ("Leader (replicas holding the Lease)", "none", [("sum(monasca_operator_leader)", "leaders")]),
        ("Injected pods", "none", [("max(monasca_operator_injected_pods)", "injected")]),
        ("Reconciles and errors /s", "ops", [
            ("sum by (result) (rate(monasca_operator_reconciles_total[5m]))", "{{result}}"),
            ("monasca_operator:reconcile_errors:rate5m", "error {{reason}}"),
        ]),
        ("Certificate loaded / reloads", "none", [
            ("min(monasca_operator_tls_certificate_loaded)", "loaded"),
            ("sum by (result) (increase(monasca_operator_tls_reloads_total[1h]))", "reloads {{result}} (1h)"),
        ]),
    ]),
]


def build_dashboard():
    panels, y, pid = [], 0, 1
    for row_title, row in ROWS:
        panels.append({"type": "row", "title": row_title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        width = 24 // len(row)
        for i, (title, unit, queries) in enumerate(row):
            panels.append({
                "type": "timeseries",
                "title": title,
                "id": pid,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + n), "expr": q, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for n, (q, legend) in enumerate(queries)
                ],
            })
            pid += 1
        y += 8
    return {
        "title": "monasca-sidecar and monasca-operator",
        "uid": "monasca-sidecar",
        "description": "Self-metrics of monasca-sidecar (per pod) and monasca-operator. Generated by monitoring/generate.py.",
        "tags": ["monasca", "prometheus"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "namespace", "type": "query", "label": "Namespace", "multi": True, "includeAll": True,
             "allValue": ".*", "refresh": 2,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(monasca_sidecar_workers, namespace)", "refId": "namespace"},
             "definition": "label_values(monasca_sidecar_workers, namespace)"},
            {"name": "pod", "type": "query", "label": "Pod", "multi": True, "includeAll": True,
             "allValue": ".*", "refresh": 2,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(monasca_sidecar_workers{namespace=~\"$namespace\"}, pod)", "refId": "pod"},
             "definition": "label_values(monasca_sidecar_workers{namespace=~\"$namespace\"}, pod)"},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    main()
