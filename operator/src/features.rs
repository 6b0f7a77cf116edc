//! Native sidecar detection: what the apiserver does, not what its version suggests.
//!
//! A 1.29+ apiserver can run with the `SidecarContainers` feature gate off; then it silently
//! drops `restartPolicy: Always` from init containers and refuses the pod. The operator reads
//! the gate from the apiserver's own `/metrics` (`kubernetes_feature_enabled{name=
//! "SidecarContainers"}`, Kubernetes 1.26+), which needs only `get` on the non-resource URL
//! `/metrics`: read only, nothing written. The alternative, a server-side dry-run create of a
//! probe Pod, would need `create` on pods, a write permission the shipped RBAC deliberately
//! refuses the operator (and a dry-run PodTemplate would still need a write verb). Once the
//! feature is GA its gate disappears from the list (Kubernetes 1.36+): a readable `/metrics`
//! without the gate means native sidecars are on.
//!
//! [`GateScan`] is the pure part (fed the exposition line by line, it stops reading once past the
//! family); [`detect`] and [`run`] are the I/O: once at start, then every
//! [`RECHECK`] (an apiserver upgrade or restart can flip the gate), sooner after a failure.

use crate::inject::{NativeSidecars, NativeSupport};
use futures::{AsyncBufReadExt, StreamExt};
use kube::Client;
use std::time::Duration;

/// The gate's name in `kubernetes_feature_enabled`.
pub const SIDECAR_GATE: &str = "SidecarContainers";
/// The family that lists every feature gate of the apiserver.
const FAMILY: &str = "kubernetes_feature_enabled";
/// How often the detection is repeated while it works.
pub const RECHECK: Duration = Duration::from_secs(300);
/// How soon it is retried after a failure.
pub const RETRY: Duration = Duration::from_secs(30);

/// What the exposition says about the gate, fed one line at a time.
#[derive(Debug, Default)]
pub struct GateScan {
    in_family: bool,
    passed_family: bool,
    found: Option<NativeSidecars>,
}

impl GateScan {
    /// Feeds one line. Returns false once the answer is known (the gate's sample was read, or the
    /// family is over): the rest need not be read.
    pub fn line(&mut self, line: &str) -> bool {
        let line = line.trim();
        let family_line = match line.strip_prefix('#') {
            // `# HELP name ...` / `# TYPE name ...`
            Some(comment) => comment.split_whitespace().nth(1) == Some(FAMILY),
            None => line.starts_with(FAMILY) && line[FAMILY.len()..].starts_with(['{', ' ']),
        };
        if family_line {
            self.in_family = true;
        } else if self.in_family && !line.is_empty() {
            // Families are written whole, one after another: this one is done.
            self.passed_family = true;
            return false;
        }
        if !line.starts_with('#')
            && family_line
            && let Some(enabled) = gate_sample(line)
        {
            self.found = Some(if enabled {
                NativeSidecars::Available
            } else {
                NativeSidecars::Unavailable
            });
            return false;
        }
        true
    }

    /// The answer once the input ended or [`GateScan::line`] said stop. The family without the
    /// gate means GA (its gate removed, Kubernetes 1.36+): on. No family at all (Kubernetes
    /// before 1.26, or not an apiserver's exposition): unknown.
    pub fn finish(self) -> NativeSidecars {
        match (self.found, self.in_family) {
            (Some(found), _) => found,
            (None, true) => NativeSidecars::Available,
            (None, false) => NativeSidecars::Unknown,
        }
    }
}

/// Whether `line`, a sample of [`FAMILY`], is the `SidecarContainers` gate, and if so its value
/// (`1` on, `0` off). Labels may come in any order; a value that is not a number is no answer.
fn gate_sample(line: &str) -> Option<bool> {
    let rest = line.strip_prefix(FAMILY)?.strip_prefix('{')?;
    let (labels, value) = rest.rsplit_once('}')?;
    let named = labels.split(',').any(|pair| {
        pair.split_once('=')
            .is_some_and(|(k, v)| k.trim() == "name" && v.trim() == format!("\"{SIDECAR_GATE}\""))
    });
    if !named {
        return None;
    }
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    Some(value != 0.0)
}

/// Reads the apiserver's `/metrics` until the gate is known.
pub async fn detect(client: &Client) -> Result<NativeSidecars, kube::Error> {
    let request = http::Request::get("/metrics")
        .header(http::header::ACCEPT, "text/plain")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    let body = client.request_stream(request).await?;
    let mut lines = std::pin::pin!(body.lines());
    let mut scan = GateScan::default();
    while let Some(line) = lines.next().await {
        if !scan.line(&line.map_err(kube::Error::ReadEvents)?) {
            break;
        }
    }
    Ok(scan.finish())
}

/// Detects once and records the answer (an error keeps the last answer and is returned).
pub async fn refresh(client: &Client, support: &NativeSupport) -> Result<(), kube::Error> {
    let detected = detect(client).await?;
    let before = support.get();
    if support.set(detected) {
        match detected {
            NativeSidecars::Unavailable => tracing::warn!(
                ?before,
                "native sidecars are off on this apiserver (feature gate {SIDECAR_GATE}=false): \
                 nativeSidecar: always falls back to a regular container"
            ),
            _ => tracing::info!(?before, now = ?detected, "native sidecar support detected"),
        }
    }
    Ok(())
}

/// Repeats the detection every [`RECHECK`] (every [`RETRY`] after a failure) for the life of
/// the process.
pub async fn run(client: Client, support: NativeSupport) {
    loop {
        let wait = match refresh(&client, &support).await {
            Ok(()) => RECHECK,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    state = ?support.get(),
                    "cannot read the apiserver's /metrics to detect native sidecars (RBAC: get on \
                     the non-resource URL /metrics); keeping the last answer"
                );
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> (NativeSidecars, usize) {
        let mut scan = GateScan::default();
        let mut read = 0;
        for line in text.lines() {
            read += 1;
            if !scan.line(line) {
                break;
            }
        }
        (scan.finish(), read)
    }

    /// The family as a 1.30 apiserver started with `--feature-gates=SidecarContainers=false`
    /// writes it (abridged), between its neighbours.
    const GATE_OFF: &str = r#"# HELP etcd_request_duration_seconds [ALPHA] Etcd request latency in seconds for each operation and object type.
# TYPE etcd_request_duration_seconds histogram
etcd_request_duration_seconds_bucket{operation="get",type="leases",le="0.005"} 3
# HELP kubernetes_feature_enabled [BETA] This metric records the data about the stage and enablement of a k8s feature.
# TYPE kubernetes_feature_enabled gauge
kubernetes_feature_enabled{name="SchedulerQueueingHints",stage="BETA"} 0
kubernetes_feature_enabled{name="SidecarContainers",stage="BETA"} 0
kubernetes_feature_enabled{name="StorageVersionAPI",stage="ALPHA"} 0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
process_cpu_seconds_total 12.5
"#;

    #[test]
    fn the_gate_off_is_unavailable_and_reading_stops_at_its_sample() {
        assert_eq!(scan(GATE_OFF), (NativeSidecars::Unavailable, 7));
    }

    #[test]
    fn the_gate_on_is_available_whatever_the_label_order() {
        let on = GATE_OFF.replace(
            r#"{name="SidecarContainers",stage="BETA"} 0"#,
            r#"{stage="BETA", name="SidecarContainers"} 1"#,
        );
        assert_eq!(scan(&on).0, NativeSidecars::Available);
    }

    #[test]
    fn a_family_without_the_gate_is_ga_and_reading_stops_after_the_family() {
        // Kubernetes 1.36+: the gate is removed once the feature is GA.
        let ga: String = GATE_OFF
            .lines()
            .filter(|l| !l.contains("SidecarContainers"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(scan(&ga), (NativeSidecars::Available, 8));
    }

    #[test]
    fn look_alike_names_and_bad_values_are_not_the_gate() {
        for line in [
            r#"kubernetes_feature_enabled{name="SidecarContainersX",stage="BETA"} 0"#,
            r#"kubernetes_feature_enabled{name="NotSidecarContainers"} 0"#,
            r#"kubernetes_feature_enabled_total{name="SidecarContainers"} 0"#,
            r#"kubernetes_feature_enabled{name="SidecarContainers"} off"#,
            r#"kubernetes_feature_enabled{name="SidecarContainers" 0"#,
            "kubernetes_feature_enabled",
            "",
        ] {
            assert_eq!(gate_sample(line), None, "{line}");
        }
        assert_eq!(
            gate_sample(r#"kubernetes_feature_enabled{name="SidecarContainers"} 1 1700000000"#),
            Some(true)
        );
    }

    #[test]
    fn arbitrary_input_never_panics_and_no_family_is_unknown() {
        assert_eq!(scan("").0, NativeSidecars::Unknown);
        assert_eq!(
            scan("# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 1\n").0,
            NativeSidecars::Unknown
        );
        let mut seed = 0x2545_f491_u64;
        let alphabet: Vec<char> = "kubernetes_feature_enabled{}=\",# \n01SidecarContainers\u{e9}"
            .chars()
            .collect();
        for _ in 0..2000 {
            let text: String = (0..seed % 200)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = scan(&text);
        }
    }
}
