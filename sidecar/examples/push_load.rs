//! Push load generator for benchmarks: N concurrent pushers, each PUTting its own group of
//! series over a keep-alive HTTP/1.1 connection, to any Pushgateway-compatible server (the
//! sidecar or Prometheus Pushgateway). Prints one JSON line with the figures.
//!
//! ```text
//! cargo run --release -p monasca-sidecar --example push_load -- ADDR PUSHERS SERIES_PER_PUSHER SECONDS text|protobuf [shared]
//! ```
//! Each pusher's series carry a `shard` label of their own, so PUSHERS x SERIES distinct
//! series exist at the end (the same count in both servers). With `shared`, every pusher sends
//! the same series (a pod's workers): SERIES aggregated series of PUSHERS workers each.

use monasca_sidecar::sources::parse::protobuf::proto;
use prost::Message as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// True when `shared` was asked for: every pusher then sends the same label sets.
static SHARED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn shard_label(shard: usize) -> String {
    if SHARED.get().copied().unwrap_or(false) {
        "all".into()
    } else {
        shard.to_string()
    }
}

fn text_body(shard: usize, series: usize) -> Vec<u8> {
    let mut out = String::with_capacity(series * 90);
    let per_family = 1000;
    for f in 0..series.div_ceil(per_family) {
        out.push_str(&format!(
            "# HELP bench_family_{f}_total Bench family.\n# TYPE bench_family_{f}_total counter\n"
        ));
        for i in 0..per_family.min(series - f * per_family) {
            out.push_str(&format!(
                "bench_family_{f}_total{{shard=\"{}\",endpoint=\"/v2.0/metrics/{i}\",status=\"{}\"}} {}\n",
                shard_label(shard),
                200 + i % 5,
                i + 1
            ));
        }
    }
    out.into_bytes()
}

fn protobuf_body(shard: usize, series: usize) -> Vec<u8> {
    let per_family = 1000;
    let mut out = Vec::with_capacity(series * 80);
    let label = |n: &str, v: String| proto::LabelPair {
        name: Some(n.into()),
        value: Some(v),
    };
    for f in 0..series.div_ceil(per_family) {
        let metric = (0..per_family.min(series - f * per_family))
            .map(|i| proto::Metric {
                label: vec![
                    label("shard", shard_label(shard)),
                    label("endpoint", format!("/v2.0/metrics/{i}")),
                    label("status", (200 + i % 5).to_string()),
                ],
                counter: Some(proto::Counter {
                    value: Some((i + 1) as f64),
                }),
                ..Default::default()
            })
            .collect();
        let family = proto::MetricFamily {
            name: Some(format!("bench_family_{f}_total")),
            help: Some("Bench family.".into()),
            r#type: Some(proto::MetricType::Counter as i32),
            metric,
            ..Default::default()
        };
        family
            .encode_length_delimited(&mut out)
            .expect("encode into a Vec cannot fail");
    }
    out
}

/// Sends one request and reads the response; returns the status.
fn put(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<u16> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut sink = vec![0u8; length];
    reader.read_exact(&mut sink)?;
    Ok(status)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9091".into());
    let pushers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let series: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(31_250);
    let seconds: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5);
    let format = args.get(5).cloned().unwrap_or_else(|| "text".into());
    let _ = SHARED.set(args.get(6).is_some_and(|a| a == "shared"));
    let content_type = if format == "protobuf" {
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    } else {
        "text/plain; version=0.0.4"
    };
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(pushers + 1));
    let deadline_after = Duration::from_secs(seconds);
    let mut threads = Vec::new();
    for shard in 0..pushers {
        let (addr, requests, errors, barrier) = (
            addr.clone(),
            requests.clone(),
            errors.clone(),
            barrier.clone(),
        );
        let body = if format == "protobuf" {
            protobuf_body(shard, series)
        } else {
            text_body(shard, series)
        };
        let head = format!(
            "PUT /metrics/job/bench/instance/pusher-{shard} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        threads.push(std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&addr).expect("connect");
            stream.set_nodelay(true).ok();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            barrier.wait();
            let start = Instant::now();
            while start.elapsed() < deadline_after {
                match put(&mut stream, &mut reader, &head, &body) {
                    Ok(200..=202) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(s) = TcpStream::connect(&addr) {
                            stream = s;
                            reader = BufReader::new(stream.try_clone().expect("clone"));
                        }
                    }
                }
            }
        }));
    }
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = requests.load(Ordering::Relaxed);
    println!(
        "{{\"requests\": {done}, \"errors\": {}, \"seconds\": {elapsed:.3}, \"samples_per_second\": {:.0}, \"series\": {}}}",
        errors.load(Ordering::Relaxed),
        (done as f64 * series as f64) / elapsed,
        if SHARED.get().copied().unwrap_or(false) {
            series
        } else {
            pushers * series
        }
    );
}
