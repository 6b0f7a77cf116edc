//! Rendering from the store's read-only view, fed by values: two workers' series come out as
//! one, in both negotiated formats, with label values escaped the one way both formats
//! define, and the sidecar's own families sorted in among the aggregated ones.

use super::*;
use crate::store::{Now, Scope, Source, StoreSettings, WorkerKey};

fn worker(id: &str) -> WorkerKey {
    WorkerKey::new(
        Source::Push,
        format!("push:job=api,instance={id}"),
        vec![("instance".into(), id.into())],
    )
}

/// A store where workers `a` and `b` each pushed `text_of(worker)`.
fn store_with(a: &str, b: &str, now: Now) -> Store {
    let mut store = Store::new(StoreSettings::default());
    for (id, text) in [("a", a), ("b", b)] {
        let families = crate::sources::parse::text::parse(text, false).expect("test input parses");
        store
            .apply(&worker(id), &families, Scope::Worker, now)
            .expect("applied");
    }
    store
}

fn rendered(store: &Store, format: Format, own: &[SelfFamily], now: Now) -> String {
    let mut out = Vec::new();
    render(store, format, now.mono, own, &mut out);
    String::from_utf8(out).expect("utf-8 exposition")
}

#[test]
fn counters_of_two_workers_render_as_one_sum_in_both_formats() {
    let now = Now::now();
    let store = store_with(
        "# HELP rq_total Requests.\n# TYPE rq_total counter\nrq_total{path=\"/x\"} 10\n",
        "# HELP rq_total Requests.\n# TYPE rq_total counter\nrq_total{path=\"/x\"} 5\n",
        now,
    );
    let text = rendered(&store, Format::Text, &[], now);
    assert_eq!(
        text,
        "# HELP rq_total Requests.\n# TYPE rq_total counter\nrq_total{path=\"/x\"} 15\n"
    );
    let open = rendered(&store, Format::OpenMetrics, &[], now);
    assert_eq!(
        open,
        "# HELP rq Requests.\n# TYPE rq counter\nrq_total{path=\"/x\"} 15\n# EOF\n"
    );
}

#[test]
fn label_values_are_escaped_on_the_way_out() {
    let now = Now::now();
    let input = "# TYPE g gauge\ng{v=\"a\\\\b\\\"c\\nd\",_aggregate=\"max\"} 1\n";
    let store = store_with(input, input, now);
    let escaped = "g{v=\"a\\\\b\\\"c\\nd\"} 1\n";
    for format in [Format::Text, Format::OpenMetrics] {
        let out = rendered(&store, format, &[], now);
        assert!(out.contains(escaped), "{format:?}:\n{out}");
    }
}

#[test]
fn own_families_are_sorted_in_and_their_labels_escaped() {
    let now = Now::now();
    let store = store_with(
        "# TYPE a_gauge gauge\na_gauge{_aggregate=\"max\"} 1\n# TYPE z_gauge gauge\nz_gauge{_aggregate=\"max\"} 2\n",
        "",
        now,
    );
    let mut registry = crate::self_metrics::registry();
    let errors = crate::self_metrics::EnumCounters::new("reason", ["bad \"x\"\n"]);
    errors.register(&mut registry, "ingest_errors", "Refused");
    errors.child(0).inc_by(3);
    let own = crate::self_metrics::families(&registry);
    let text = rendered(&store, Format::Text, &own, now);
    let a = text.find("a_gauge 1").expect("a_gauge rendered");
    let own_at = text
        .find("monasca_sidecar_ingest_errors_total{reason=\"bad \\\"x\\\"\\n\"} 3\n")
        .unwrap_or_else(|| panic!("own family escaped:\n{text}"));
    let z = text.find("z_gauge 2").expect("z_gauge rendered");
    assert!(a < own_at && own_at < z, "not sorted by name:\n{text}");
}

#[test]
fn an_empty_store_renders_only_what_the_format_requires() {
    let now = Now::now();
    let store = Store::new(StoreSettings::default());
    assert_eq!(rendered(&store, Format::Text, &[], now), "");
    assert_eq!(rendered(&store, Format::OpenMetrics, &[], now), "# EOF\n");
}
