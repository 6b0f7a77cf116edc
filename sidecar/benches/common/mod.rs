//! Inputs shared by the benchmarks.

/// A realistic worker body: counters and gauges with 3 labels, `series` lines in total.
pub fn worker_body(series: usize, scale: u64) -> String {
    let mut out = String::with_capacity(series * 80);
    let per_family = 1000;
    for f in 0..series.div_ceil(per_family) {
        let kind = if f % 4 == 3 { "gauge" } else { "counter" };
        let name = format!("app_family_{f}_total");
        out.push_str(&format!(
            "# HELP {name} Family {f}.\n# TYPE {name} {kind}\n"
        ));
        for i in 0..per_family.min(series - f * per_family) {
            out.push_str(&format!(
                "{name}{{method=\"GET\",endpoint=\"/v2.0/metrics/{i}\",status=\"{}\"}} {}\n",
                200 + i % 5,
                scale * (i as u64 + 1)
            ));
        }
    }
    out
}
