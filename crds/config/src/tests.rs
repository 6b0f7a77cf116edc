use super::*;

#[test]
fn empty_document_is_the_default_config() {
    assert_eq!(
        SidecarConfig::from_yaml("").unwrap(),
        SidecarConfig::default()
    );
    assert_eq!(
        SidecarConfig::from_yaml("{}").unwrap(),
        SidecarConfig::default()
    );
}

#[test]
fn design_example_parses() {
    let yaml = r#"
listen: {metrics: "0.0.0.0:9102", ingest: "127.0.0.1:9091", statsd: "127.0.0.1:8125"}
workerLabels: [instance, pid, worker, _id]
staleAfter: 60s
multiprocessDir: /path
scrape: {targets: ["127.0.0.1:8001-8004", "unix:/run/app/*.sock"], path: /metrics, interval: 10s}
aggregation: {defaultGaugeMode: sum, rules: [{match: "^app_inflight.*", mode: livesum}]}
limits: {maxBodyBytes: 8388608, maxSeriesPerWorker: 50000}
"#;
    let c = SidecarConfig::from_yaml(yaml).unwrap();
    assert_eq!(c.multiprocess_dir.as_deref(), Some("/path"));
    assert_eq!(c.stale_after, Duration::from_secs(60));
    assert_eq!(c.scrape.targets.len(), 2);
    assert_eq!(c.aggregation.rules[0].mode, GaugeMode::Livesum);
    assert_eq!(c.limits.max_series_per_worker, 50_000);
}

#[test]
fn yaml_round_trips() {
    let mut c = SidecarConfig {
        multiprocess_dir: Some("/tmp/x".into()),
        ..Default::default()
    };
    c.aggregation.rules.push(AggregationRule {
        pattern: "^a".into(),
        mode: GaugeMode::Max,
    });
    let text = c.to_yaml().unwrap();
    assert_eq!(SidecarConfig::from_yaml(&text).unwrap(), c);
}

#[test]
fn statsd_dialect_and_expiry() {
    let c = SidecarConfig::from_yaml("statsd: {dialect: monasca, expireAfter: 5m}").unwrap();
    assert_eq!(c.statsd.dialect, StatsdDialect::Monasca);
    assert_eq!(c.statsd.expire_after, Some(Duration::from_secs(300)));
    let d = SidecarConfig::default();
    assert_eq!(d.statsd.dialect, StatsdDialect::Auto);
    assert_eq!(d.statsd.expire_after, None);
    assert_eq!(SidecarConfig::from_yaml(&c.to_yaml().unwrap()).unwrap(), c);
}

#[test]
fn unknown_field_is_a_clear_error() {
    let err = SidecarConfig::from_yaml("staleAftr: 10s")
        .unwrap_err()
        .to_string();
    assert!(err.contains("staleAftr"), "{err}");
}

#[test]
fn invalid_values_name_the_field() {
    for (yaml, field) in [
        ("listen: {metrics: 'nope'}", "listen.metrics"),
        ("staleAfter: 0s", "staleAfter"),
        (
            "aggregation: {rules: [{match: '(', mode: sum}]}",
            "aggregation.rules[0].match",
        ),
        ("scrape: {targets: ['127.0.0.1:9-1']}", "scrape.targets[0]"),
        ("workerLabels: ['a-b']", "workerLabels[0]"),
        ("statsd: {buckets: [1, 0.5]}", "statsd.buckets"),
        ("statsd: {expireAfter: 0s}", "statsd.expireAfter"),
        ("statsd: {dialect: graphite}", "dialect"),
        ("stateDir: relative/state", "stateDir"),
        ("stateInterval: 0s", "stateInterval"),
    ] {
        let err = SidecarConfig::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains(field), "{yaml}: {err}");
    }
    let err = SidecarConfig::from_yaml("staleAfter: soon")
        .unwrap_err()
        .to_string();
    assert!(err.contains("soon"), "{err}");
}

#[test]
fn state_dir_is_off_by_default_and_parses() {
    let c = SidecarConfig::from_yaml("").unwrap();
    assert_eq!(c.state_dir, None);
    assert_eq!(c.state_interval, Duration::from_secs(5));
    let c = SidecarConfig::from_yaml("stateDir: /var/lib/monasca\nstateInterval: 2s").unwrap();
    assert_eq!(c.state_dir.as_deref(), Some("/var/lib/monasca"));
    assert_eq!(c.state_interval, Duration::from_secs(2));
}

#[test]
fn durations_parse_like_prometheus() {
    for (text, ms) in [
        ("60s", 60_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("2h", 7_200_000),
        ("1.5s", 1_500),
        ("45", 45_000),
    ] {
        assert_eq!(
            Duration::parse(text).unwrap().as_std().as_millis(),
            ms,
            "{text}"
        );
    }
    for bad in ["", "s", "10x", "-1s", "1e400s"] {
        assert!(Duration::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(Duration::from_secs(90).to_string(), "90s");
    assert_eq!(Duration::from_secs(600).to_string(), "10m");
    assert_eq!(Duration::from_millis(250).to_string(), "250ms");
    // Sub-millisecond precision survives writing and reading back.
    for text in ["1500us", ".6399s", "1ms1ns", "2h0.5ms"] {
        let d = Duration::parse(text).unwrap();
        assert_eq!(Duration::parse(&d.to_string()), Ok(d), "{text} -> {d}");
    }
    assert_eq!(Duration::parse("1500us").unwrap().to_string(), "1500us");
}

#[test]
fn scrape_targets() {
    assert_eq!(
        ScrapeTarget::parse("127.0.0.1:8001-8004").unwrap(),
        ScrapeTarget::Tcp {
            host: "127.0.0.1".into(),
            first: 8001,
            last: 8004
        }
    );
    assert_eq!(
        ScrapeTarget::parse("[::1]:9000").unwrap(),
        ScrapeTarget::Tcp {
            host: "[::1]".into(),
            first: 9000,
            last: 9000
        }
    );
    assert!(matches!(
        ScrapeTarget::parse("unix:/run/*.sock"),
        Ok(ScrapeTarget::Unix { .. })
    ));
    for bad in [
        "unix:rel.sock",
        "nohost",
        ":80",
        "h:0",
        "h:70000",
        "h:1-5000",
    ] {
        assert!(ScrapeTarget::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn gauge_modes_parse_and_classify() {
    for m in GaugeMode::ALL {
        assert_eq!(GaugeMode::parse(m.as_str()), Some(m));
        assert_eq!(m.is_live(), m.as_str().starts_with("live"));
        assert!(!m.base().is_live());
    }
    assert_eq!(GaugeMode::parse("LiveSum"), Some(GaugeMode::Livesum));
    assert_eq!(GaugeMode::parse("median"), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_yaml_never_panics(s in "\\PC{0,200}") {
        let _ = SidecarConfig::from_yaml(&s);
    }
}

#[test]
fn listeners_sharing_a_port_on_overlapping_addresses_are_refused() {
    let refused = |metrics: &str, ingest: &str| {
        let mut c = SidecarConfig::default();
        c.listen.metrics = metrics.into();
        c.listen.ingest = ingest.into();
        match c.validate() {
            Err(ConfigError::Invalid { field, reason }) => {
                assert_eq!(field, "listen.ingest", "{reason}");
                assert!(reason.contains("both cannot bind"), "{reason}");
                true
            }
            Ok(()) => false,
            Err(e) => panic!("unexpected error {e}"),
        }
    };
    // The issue's case: same port, the wildcard covers the other address.
    assert!(refused("0.0.0.0:9102", "127.0.0.1:9102"));
    assert!(refused("127.0.0.1:9300", "127.0.0.1:9300"));
    assert!(refused("[::]:9102", "127.0.0.1:9102"));
    // Apart: other ports, two distinct addresses, or any free port.
    assert!(!refused("0.0.0.0:9102", "127.0.0.1:9091"));
    assert!(!refused("127.0.0.1:9102", "127.0.0.2:9102"));
    assert!(!refused("127.0.0.1:0", "127.0.0.1:0"));
    assert!(!refused("0.0.0.0:9102", "[::1]:9102"));
}

#[test]
fn disabled_listeners_do_not_collide() {
    let mut c = SidecarConfig::default();
    c.listen.otlp = "0.0.0.0:9102".into();
    assert!(c.validate().is_err(), "OTLP on the metrics port");
    c.otlp.enabled = false;
    c.validate()
        .expect("a disabled OTLP receiver binds nothing");
    c.listen.statsd = "0.0.0.0:9102".into();
    assert!(c.validate().is_err(), "StatsD over TCP on the metrics port");
    c.statsd.tcp = false;
    c.validate()
        .expect("StatsD over UDP only does not collide with TCP");
}

#[test]
fn very_long_durations_parse_up_to_the_std_range() {
    let d = Duration::parse("300000d").expect("300000 days parse");
    assert_eq!(d.as_std().as_secs(), 300_000 * 86_400);
    let back = Duration::parse(&d.to_string()).expect("written back");
    assert_eq!(back, d);
    assert!(Duration::parse("99999999999999999999999999999d").is_err());
}
