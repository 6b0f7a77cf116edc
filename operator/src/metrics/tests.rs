use super::*;
use std::collections::BTreeMap;

/// The exposition read back: each sample's series (name and labels as written) and value,
/// and each `# TYPE` declared. Fails on a sample line whose value is not a number.
struct Parsed {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed {
        samples: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').expect("TYPE name kind");
            let previous = parsed.types.insert(name.into(), kind.into());
            assert!(previous.is_none(), "{name} declared twice");
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad sample line {line:?}"));
            let previous = parsed.samples.insert(series.into(), value);
            assert!(previous.is_none(), "{series} written twice");
        }
    }
    parsed
}

impl Parsed {
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series}"))
    }
}

#[test]
fn exposition_lists_every_fixed_label_and_a_cumulative_histogram() {
    let m = Metrics::default();
    m.review(Outcome::Injected, None, Duration::from_micros(300));
    m.review(
        Outcome::Skipped,
        Some(SkipReason::NotRequested),
        Duration::from_millis(3),
    );
    m.review(Outcome::Invalid, None, Duration::from_secs(5));
    let out = parse(&m.render());
    assert_eq!(
        out.value("monasca_operator_admission_reviews_total{outcome=\"injected\"}"),
        1.0
    );
    for outcome in Outcome::ALL {
        out.value(&format!(
            "monasca_operator_admission_reviews_total{{outcome=\"{}\"}}",
            outcome.label()
        ));
    }
    for reason in SkipReason::ALL {
        let expected = f64::from(u8::from(reason == SkipReason::NotRequested));
        let series = format!(
            "monasca_operator_admission_skips_total{{reason=\"{}\"}}",
            reason.label()
        );
        assert_eq!(out.value(&series), expected, "{series}");
    }
    let bucket = |le: &str| {
        out.value(&format!(
            "monasca_operator_admission_duration_seconds_bucket{{le=\"{le}\"}}"
        ))
    };
    assert_eq!(bucket("0.0001"), 0.0);
    assert_eq!(bucket("0.0005"), 1.0);
    assert_eq!(bucket("0.005"), 2.0);
    assert_eq!(bucket("1"), 2.0);
    assert_eq!(bucket("+Inf"), 3.0);
    assert_eq!(
        out.value("monasca_operator_admission_duration_seconds_count"),
        3.0
    );
    assert!((out.value("monasca_operator_admission_duration_seconds_sum") - 5.0033).abs() < 1e-9);
    assert_eq!(
        out.types["monasca_operator_admission_reviews_total"],
        "counter"
    );
    assert_eq!(
        out.types["monasca_operator_admission_duration_seconds"],
        "histogram"
    );
    // The store gauges are absent without the stores (render() is what tests use).
    assert!(!out.types.contains_key("monasca_operator_leader"));

    m.reconciled(ReconcileResult::Ok, Duration::from_millis(30));
    m.reconcile_error(ErrorReason::Conflict);
    m.in_flight_change(Listener::Webhook, true);
    m.in_flight_change(Listener::Admin, true);
    m.in_flight_change(Listener::Admin, false);
    m.set_malformed("ns/a".into(), true);
    m.set_malformed("ns/b".into(), true);
    m.set_malformed("ns/a".into(), false);
    m.set_webhook_configuration_missing(true);
    let out = parse(&m.render_with(Some(Gauges {
        injected_pods: 3,
        leader: true,
        cert_loaded: true,
        cert_expiry: Some(1_900_000_000),
        namespaces_annotation_without_label: 2,
    })));
    for (series, value) in [
        ("monasca_operator_reconciles_total{result=\"ok\"}", 1.0),
        ("monasca_operator_reconciles_total{result=\"error\"}", 0.0),
        (
            "monasca_operator_reconcile_errors_total{reason=\"conflict\"}",
            1.0,
        ),
        (
            "monasca_operator_reconcile_duration_seconds_bucket{le=\"0.05\"}",
            1.0,
        ),
        (
            "monasca_operator_requests_in_flight{listener=\"webhook\"}",
            1.0,
        ),
        (
            "monasca_operator_requests_in_flight{listener=\"admin\"}",
            0.0,
        ),
        (
            "monasca_operator_malformed_objects{kind=\"MetricsSidecar\"}",
            1.0,
        ),
        ("monasca_operator_webhook_configuration_missing", 1.0),
        ("monasca_operator_injected_pods", 3.0),
        ("monasca_operator_leader", 1.0),
        ("monasca_operator_tls_certificate_loaded", 1.0),
        ("monasca_operator_namespaces_annotation_without_label", 2.0),
        (
            "monasca_operator_certificate_expiry_timestamp_seconds",
            1_900_000_000.0,
        ),
        (
            "monasca_operator_admission_shed_total{reason=\"in_flight\"}",
            0.0,
        ),
        (
            "monasca_operator_tls_handshake_failures_total{reason=\"timeout\"}",
            0.0,
        ),
        ("monasca_operator_tls_reloads_total{result=\"failed\"}", 0.0),
    ] {
        assert_eq!(out.value(series), value, "{series}");
    }
}

#[test]
fn help_and_type_lines_keep_the_names_prometheus_knows() {
    let text = Metrics::default().render_with(Some(Gauges::default()));
    assert!(text.contains(
        "# HELP monasca_operator_admission_reviews_total AdmissionReviews answered, by outcome.\n\
         # TYPE monasca_operator_admission_reviews_total counter\n"
    ));
    assert!(text.contains("# TYPE monasca_operator_webhook_configuration_missing gauge\n"));
    // Without a loaded certificate there is no expiry to report.
    assert!(!text.contains("monasca_operator_certificate_expiry_timestamp_seconds"));
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(line.ends_with('.'), "{line}");
        assert!(!line.ends_with(".."), "{line}");
    }
}

/// Label values go through the library's escaping writer: a value with a quote, a
/// backslash and a newline cannot break the line or the label set.
#[test]
fn label_values_are_escaped_by_the_encoder() {
    #[derive(Clone, Copy, Debug)]
    struct Awkward;
    impl FixedLabel for Awkward {
        const NAME: &'static str = "value";
        fn all() -> &'static [Self] {
            &[Awkward]
        }
        fn index(self) -> usize {
            0
        }
        fn value(self) -> &'static str {
            "a \"quoted\" \\path\\\nnext"
        }
    }
    let counters: ByLabel<Awkward, Counter> = ByLabel::default();
    counters.get(Awkward).inc();
    let mut registry = Registry::default();
    registry.register("awkward", "Awkward label values", counters);
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).expect("encodes");
    assert!(
        text.contains("awkward_total{value=\"a \\\"quoted\\\" \\\\path\\\\\\nnext\"} 1\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn counts_are_shared_with_the_registered_clones() {
    let m = Metrics::default();
    m.shed(Shed::Connections);
    m.handshake_failed(HandshakeFailure::CertificateRejected);
    assert_eq!(m.sheds(Shed::Connections), 1);
    assert_eq!(
        m.handshake_failures(HandshakeFailure::CertificateRejected),
        1
    );
    let out = parse(&m.render());
    assert_eq!(
        out.value("monasca_operator_admission_shed_total{reason=\"connections\"}"),
        1.0
    );
    assert_eq!(
        out.value("monasca_operator_tls_handshake_failures_total{reason=\"certificate_rejected\"}"),
        1.0
    );
}

/// `ByLabel` indexes by `self as usize`: each enum's `ALL` must list the variants in
/// declaration order, or a count would land on another label's series.
#[test]
fn every_fixed_label_indexes_its_position_in_all() {
    fn check<L: FixedLabel>() {
        for (position, label) in L::all().iter().enumerate() {
            assert_eq!(label.index(), position, "{} {label:?}", L::NAME);
        }
        let values: BTreeSet<_> = L::all().iter().map(|l| l.value()).collect();
        assert_eq!(
            values.len(),
            L::all().len(),
            "{} values are distinct",
            L::NAME
        );
    }
    check::<Outcome>();
    check::<SkipReason>();
    check::<Shed>();
    check::<Listener>();
    check::<HandshakeFailure>();
    check::<ReloadResult>();
    check::<ReconcileResult>();
    check::<ErrorReason>();
}
