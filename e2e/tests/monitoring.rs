//! The monitoring kit in `monitoring/` is checked against the real tools and the real binaries:
//! `promtool check rules` and `promtool test rules` (Debian `prometheus`), the generated
//! PrometheusRule against its source, and every metric the rules and the Grafana dashboard name
//! against what a running sidecar serves and what the operator's metrics registry renders.
//! Dashboard queries are also parsed by a real Prometheus server.

use monasca_e2e::prometheus::Prometheus;
use monasca_e2e::sidecar::Sidecar;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Metrics the rules use that the binaries do not export yet, with the work that adds them.
/// The test fails when one of them appears (then remove it here) so the list stays true.
const PENDING: &[(&str, &str)] = &[(
    "monasca_operator_uninjected_pods",
    "no issue yet: an operator gauge of the MetricsSidecars' status.uninjectedPods",
)];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> serde_json::Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn promtool(args: &[&str]) -> String {
    let binary = std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&binary)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {binary} ({e}); install it with `apt-get install prometheus` (bash ci/test.sh does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every rule of `rules.yaml` as (group, rule) JSON objects.
fn rules() -> Vec<serde_json::Value> {
    let file = yaml("monitoring/rules.yaml");
    let groups = file["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

fn recorded_names() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| r["record"].as_str().map(String::from))
        .collect()
}

/// The metric names a PromQL expression refers to: identifiers outside strings, label
/// matchers' values and range selectors, minus PromQL's own words and the label names inside
/// `{...}`, `by (...)` and `without (...)`. Good enough for our expressions, which the real
/// Prometheus parses too (see `dashboard_queries_parse_in_a_real_prometheus`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    const WORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "by",
        "without",
        "rate",
        "increase",
        "irate",
        "histogram_quantile",
        "or",
        "and",
        "unless",
        "time",
        "absent",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut braces, mut grouping) = (0, 0, false);
    let mut previous_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            braces += 1;
            i += 1;
        } else if c == '}' {
            braces -= 1;
            i += 1;
        } else if c == '(' {
            grouping = previous_word == "by" || previous_word == "without";
            previous_word.clear();
            i += 1;
        } else if c == ')' {
            grouping = false;
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if braces == 0 && !grouping && !WORDS.contains(&word.as_str()) {
                names.insert(word.clone());
            }
            previous_word = word;
        } else {
            i += 1;
        }
    }
    names
}

/// The families a sidecar with every source switched on serves (and their sample names).
fn sidecar_exports() -> BTreeSet<String> {
    let dir = monasca_e2e::scratch_dir("mp-empty");
    let sidecar = Sidecar::start(&format!(
        "multiprocessDir: {}\nscrape: {{targets: [\"127.0.0.1:{}\"], interval: 1s}}\n",
        dir.display(),
        monasca_e2e::free_port()
    ));
    // One scrape of the (absent) worker, so the scrape families have their per-target series.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = sidecar.metrics();
    let _ = std::fs::remove_dir_all(&dir);
    exposition_names(&text)
}

/// The metric names the operator serves on `/metrics`, from its real exposition (it needs an
/// apiserver to run, so the library's render is called with every store gauge present),
/// checked valid by promtool and client_python first.
fn operator_exports() -> BTreeSet<String> {
    use monasca_operator::metrics::{Gauges, Metrics};
    let text = Metrics::default().render_with(Some(Gauges {
        cert_expiry: Some(1_900_000_000),
        ..Gauges::default()
    }));
    monasca_e2e::exposition::assert_valid_exposition(text.as_bytes(), false);
    exposition_names(&text)
}

/// Every name a scraper sees in `text`: the families `# TYPE` declares (with the histogram and
/// summary sample suffixes) and each sample's name.
fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_string());
                let suffixes: &[&str] = match kind {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "summary" => &["_sum", "_count"],
                    _ => &[],
                };
                for s in suffixes {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn exported() -> BTreeSet<String> {
    let mut all = sidecar_exports();
    all.extend(operator_exports());
    all.insert("up".into());
    all
}

fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("monitoring/grafana-dashboard.json")).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(METRIC{...}, label) -> the metric selector.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(sel, _)| sel.to_string())
                .unwrap_or_else(|| q.to_string());
            queries.push(inner);
        }
    }
    queries
}

#[test]
fn rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", "monitoring/rules.yaml"]);
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_passing_promtool_unit_test() {
    let tests = yaml("monitoring/rules.test.yaml");
    let mut tested = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            tested.insert(a["alertname"].as_str().expect("alertname").to_string());
        }
    }
    let alerts = alert_names();
    let untested: Vec<_> = alerts.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "alerts without a test in rules.test.yaml: {untested:?}"
    );
    let unknown: Vec<_> = tested.difference(&alerts).collect();
    assert!(unknown.is_empty(), "tests of unknown alerts: {unknown:?}");
    for required in [
        "MonascaSidecarDown",
        "MonascaSidecarIngestErrors",
        "MonascaSidecarHistogramLayoutMismatch",
        "MonascaSidecarMultiprocessNotCompactable",
        "MonascaOperatorUninjectedPods",
        "MonascaOperatorCertificateExpiringSoon",
        "MonascaOperatorNoLeader",
    ] {
        assert!(alerts.contains(required), "alert {required} is missing");
    }
    let out = promtool(&["test", "rules", "monitoring/rules.test.yaml"]);
    println!("{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    println!("{} alerts, each unit-tested", alerts.len());
}

#[test]
fn prometheusrule_carries_exactly_the_rules_file_groups() {
    let source = yaml("monitoring/rules.yaml");
    let generated = yaml("monitoring/prometheusrule.yaml");
    assert_eq!(generated["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(generated["kind"], "PrometheusRule");
    assert_eq!(
        generated["spec"]["groups"], source["groups"],
        "monitoring/prometheusrule.yaml is out of date: run `python3 monitoring/generate.py`"
    );
}

#[test]
fn rules_and_dashboard_name_only_exported_metrics() {
    let exported = exported();
    let recorded = recorded_names();
    println!(
        "{} metric names exported (sidecar scraped live, operator rendered by its library), {} recorded",
        exported.len(),
        recorded.len()
    );
    for (pending, by) in PENDING {
        assert!(
            !exported.contains(*pending),
            "{pending} is exported now: remove it from PENDING in e2e/tests/monitoring.rs"
        );
        println!("pending (rules written, metric not exported yet): {pending} — {by}");
    }
    // The rules: exported metrics, recorded series, or a pending metric.
    for rule in rules() {
        let expr = rule["expr"].as_str().expect("expr");
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name)
                    || recorded.contains(&name)
                    || PENDING.iter().any(|(p, _)| *p == name),
                "rules.yaml names `{name}`, which no binary exports (in: {expr})"
            );
        }
    }
    // The dashboard: exported metrics or recorded series only, nothing pending.
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "dashboard has {} queries",
        queries.len()
    );
    let mut seen = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "no metric found in dashboard query {q}");
        for name in names {
            assert!(
                exported.contains(&name) || recorded.contains(&name),
                "the dashboard queries `{name}`, which no binary exports (in: {q})"
            );
            seen.insert(name);
        }
    }
    println!(
        "{} dashboard queries, {} distinct metrics, all exported or recorded",
        queries.len(),
        seen.len()
    );
}

#[test]
fn metric_name_extraction_skips_labels_strings_and_functions() {
    let names = metric_names(
        r#"sum by (namespace, pod) (rate(monasca_sidecar_x_total{api="push", pod=~"a.*"}[5m])) or max(up{job=~".*monasca-sidecar.*"}) - time() < 14 * 86400"#,
    );
    let expected: BTreeSet<String> = ["monasca_sidecar_x_total", "up"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn dashboard_queries_parse_in_a_real_prometheus() {
    let sidecar = Sidecar::start("");
    let prom = Prometheus::start(&[sidecar.metrics_addr()]);
    let queries = dashboard_queries();
    for q in &queries {
        let q = q.replace("$namespace", ".*").replace("$pod", ".*");
        // query_at asserts that Prometheus answered "success" (a parse error is an "error").
        prom.query(&q);
    }
    prom.wait_for_scrapes(1);
    let workers = prom.query("monasca_sidecar_workers");
    assert!(
        !workers.is_empty(),
        "Prometheus scraped no monasca_sidecar_workers"
    );
    println!("{} dashboard queries accepted by Prometheus", queries.len());
}
