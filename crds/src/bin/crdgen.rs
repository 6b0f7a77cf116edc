//! Prints the `MetricsSidecar` CRD as YAML, or writes it where the manifests expect it.
//!
//! ```text
//! cargo run -p monasca-crds --bin crdgen            # print to stdout
//! cargo run -p monasca-crds --bin crdgen -- --write # update manifests/crds/metricssidecars.yaml
//! cargo run -p monasca-crds --bin crdgen -- --write other.yaml
//! ```
//!
//! The committed file is guarded by the drift test in `crds/tests/crd_drift.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let yaml = match monasca_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.next().as_deref() {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some("--write") => {
            let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../manifests/crds/metricssidecars.yaml")
            });
            match std::fs::write(&path, yaml) {
                Ok(()) => {
                    eprintln!("crdgen: wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crdgen: {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some(other) => {
            eprintln!("crdgen: unknown argument {other:?}; usage: crdgen [--write [PATH]]");
            ExitCode::from(2)
        }
    }
}
