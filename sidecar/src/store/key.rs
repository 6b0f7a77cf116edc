//! Canonical series identity: labels minus worker and control labels, sorted by name, rendered
//! as exposition text (`a="1",b="x\"y"`). The text is both the hash key and what `/metrics`
//! prints, so rendering never re-escapes.

use super::AGGREGATE_LABEL;
use crate::model::Label;
use monasca_config::GaugeMode;
use smallvec::SmallVec;

/// Builds canonical keys; holds the worker label names.
#[derive(Clone, Debug)]
pub struct SeriesKeyBuilder {
    worker_labels: Vec<String>,
}

impl SeriesKeyBuilder {
    pub fn new(worker_labels: &[String]) -> Self {
        SeriesKeyBuilder {
            worker_labels: worker_labels.to_vec(),
        }
    }

    fn is_worker_label(&self, name: &str) -> bool {
        self.worker_labels.iter().any(|w| w == name)
    }

    /// The canonical key of a series and the gauge mode its `_aggregate` label asks for.
    /// `common` labels (a grouping key) override series labels of the same name. Labels with
    /// empty values are dropped: Prometheus treats them as absent.
    pub fn build(
        &self,
        labels: &[Label<'_>],
        common: &[(String, String)],
    ) -> Result<(String, Option<GaugeMode>), String> {
        let mut mode = None;
        let mut kept: SmallVec<[(&str, &str); 8]> = SmallVec::new();
        for label in labels {
            let name = label.name.as_ref();
            if name == AGGREGATE_LABEL {
                mode = Some(GaugeMode::parse(&label.value).ok_or_else(|| label.value.to_string())?);
                continue;
            }
            if label.value.is_empty()
                || self.is_worker_label(name)
                || common.iter().any(|(n, _)| n == name)
            {
                continue;
            }
            kept.push((name, label.value.as_ref()));
        }
        for (name, value) in common {
            if name == AGGREGATE_LABEL {
                mode = Some(GaugeMode::parse(value).ok_or_else(|| value.clone())?);
                continue;
            }
            if !value.is_empty() && !self.is_worker_label(name) {
                kept.push((name, value));
            }
        }
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut key = String::with_capacity(kept.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
        for (name, value) in &kept {
            push_label(&mut key, name, value);
        }
        Ok((key, mode))
    }
}

/// Label value escaping and `name="value"` text: the runtime's, one escaper for every
/// exposition the binaries write.
pub use monasca_runtime::labels::{escape_label_value, push_label};
