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
        self.build_planned(labels, common, &mut KeyPlan::default())
    }

    /// [`build`](Self::build), reusing `plan` when `labels` have the names (in order) and
    /// `common` is the slice it was made for: the series of one family nearly always do, and
    /// then the filtering and sorting of names is skipped.
    pub(crate) fn build_planned<'l>(
        &self,
        labels: &[Label<'l>],
        common: &'l [(String, String)],
        plan: &mut KeyPlan<'l>,
    ) -> Result<(String, Option<GaugeMode>), String> {
        if !plan.fits(labels, common) {
            *plan = self.plan(labels, common);
        }
        let mut mode = None;
        if let Some(i) = plan.aggregate {
            let value = labels.get(i).map_or("", |l| &*l.value);
            mode = Some(GaugeMode::parse(value).ok_or_else(|| value.to_string())?);
        }
        if let Some(i) = plan.common_aggregate {
            let value = common.get(i).map_or("", |(_, v)| v.as_str());
            mode = Some(GaugeMode::parse(value).ok_or_else(|| value.to_string())?);
        }
        let part = |source: &Source| match *source {
            Source::Label(i) => labels.get(i).map(|l| (&*l.name, &*l.value)),
            Source::Common(i) => common.get(i).map(|(n, v)| (n.as_str(), v.as_str())),
        };
        let capacity = plan
            .order
            .iter()
            .filter_map(part)
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        let mut key = String::with_capacity(capacity);
        for (name, value) in plan.order.iter().filter_map(part) {
            // A series label's value varies per series: an empty one is absent.
            if !value.is_empty() {
                push_label(&mut key, name, value);
            }
        }
        Ok((key, mode))
    }

    /// Which labels make the key of series named like `labels`, in key order.
    fn plan<'l>(&self, labels: &[Label<'l>], common: &'l [(String, String)]) -> KeyPlan<'l> {
        let mut plan = KeyPlan {
            names: labels.iter().map(|l| l.name.clone()).collect(),
            common,
            ..KeyPlan::default()
        };
        let mut kept: SmallVec<[(&str, Source); 8]> = SmallVec::new();
        for (i, label) in labels.iter().enumerate() {
            let name = label.name.as_ref();
            if name == AGGREGATE_LABEL {
                plan.aggregate = Some(i);
            } else if !self.is_worker_label(name) && !common.iter().any(|(n, _)| n == name) {
                kept.push((name, Source::Label(i)));
            }
        }
        for (i, (name, value)) in common.iter().enumerate() {
            if name == AGGREGATE_LABEL {
                plan.common_aggregate = Some(i);
            } else if !value.is_empty() && !self.is_worker_label(name) {
                kept.push((name, Source::Common(i)));
            }
        }
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        plan.order = kept.into_iter().map(|(_, source)| source).collect();
        plan
    }
}

/// What [`SeriesKeyBuilder::build_planned`] worked out for one set of label names.
#[derive(Debug, Default)]
pub(crate) struct KeyPlan<'l> {
    /// The series' label names, in their order.
    names: SmallVec<[std::borrow::Cow<'l, str>; 8]>,
    /// The `common` slice the plan was made for, compared by address (a worker's grouping key
    /// is one slice for a whole update; the borrow keeps the address from being reused).
    common: &'l [(String, String)],
    /// The labels of the key, sorted by name.
    order: SmallVec<[Source; 8]>,
    /// The `_aggregate` label among the series' labels, and among `common`.
    aggregate: Option<usize>,
    common_aggregate: Option<usize>,
}

impl KeyPlan<'_> {
    fn fits(&self, labels: &[Label<'_>], common: &[(String, String)]) -> bool {
        std::ptr::eq(self.common, common)
            && self.names.len() == labels.len()
            && self.names.iter().zip(labels).all(|(n, l)| *n == l.name)
    }
}

/// Where one label of a key comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The series' label at this index.
    Label(usize),
    /// The common (grouping key) label at this index.
    Common(usize),
}

/// Label value escaping and `name="value"` text: the runtime's, one escaper for every
/// exposition the binaries write.
pub use monasca_runtime::labels::{escape_label_value, push_label};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule written out directly, without plans: the oracle for the planned build.
    fn direct(
        worker_labels: &[String],
        labels: &[Label<'_>],
        common: &[(String, String)],
    ) -> Result<(String, Option<GaugeMode>), String> {
        let worker = |name: &str| worker_labels.iter().any(|w| w == name);
        let mut mode = None;
        let mut kept: Vec<(&str, &str)> = Vec::new();
        for l in labels {
            if l.name == AGGREGATE_LABEL {
                mode = Some(GaugeMode::parse(&l.value).ok_or_else(|| l.value.to_string())?);
            } else if !l.value.is_empty()
                && !worker(&l.name)
                && !common.iter().any(|c| c.0 == l.name)
            {
                kept.push((&l.name, &l.value));
            }
        }
        for (n, v) in common {
            if n == AGGREGATE_LABEL {
                mode = Some(GaugeMode::parse(v).ok_or_else(|| v.clone())?);
            } else if !v.is_empty() && !worker(n) {
                kept.push((n, v));
            }
        }
        kept.sort();
        let mut key = String::new();
        for (n, v) in kept {
            push_label(&mut key, n, v);
        }
        Ok((key, mode))
    }

    fn arb_labels() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        let names = [
            "a",
            "b",
            "job",
            "instance",
            "pid",
            AGGREGATE_LABEL,
            "zz",
            "a_b",
        ];
        let values = ["", "x", "sum", "MAX", "bogus", "q\"\\\n"];
        prop::collection::vec(
            (
                prop::sample::select(names.to_vec()),
                prop::sample::select(values.to_vec()),
            ),
            0..6,
        )
        .prop_map(|mut l| {
            // Label names are distinct within a series (every parser refuses repeats).
            let mut seen = std::collections::HashSet::new();
            l.retain(|(n, _)| seen.insert(*n));
            l
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A run of series through one plan (names repeating, changing, values empty or not,
        /// modes valid or not) builds exactly the keys and modes of the direct rule.
        #[test]
        fn planned_keys_are_the_direct_keys(
            series in prop::collection::vec(
                prop_oneof![arb_labels(), Just(vec![("a", "x"), ("job", "x")]), Just(vec![("a", ""), ("job", "y")])],
                1..10,
            ),
            common in arb_labels(),
        ) {
            let workers: Vec<String> = monasca_config::DEFAULT_WORKER_LABELS.iter().map(|s| s.to_string()).collect();
            let builder = SeriesKeyBuilder::new(&workers);
            let common: Vec<(String, String)> = common.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            let series: Vec<Vec<Label<'_>>> = series
                .iter()
                .map(|s| s.iter().map(|(n, v)| Label::new(*n, *v)).collect())
                .collect();
            let mut plan = KeyPlan::default();
            for labels in &series {
                prop_assert_eq!(
                    builder.build_planned(labels, &common, &mut plan),
                    direct(&workers, labels, &common),
                    "{:?} with {:?}", labels, common
                );
            }
        }
    }

    #[test]
    fn a_plan_is_not_reused_for_other_common_labels() {
        let builder = SeriesKeyBuilder::new(&["instance".to_string()]);
        let labels = [Label::new("a", "1"), Label::new("job", "j")];
        let first = vec![("job".to_string(), "api".to_string())];
        let second = vec![("zone".to_string(), "z".to_string())];
        let mut plan = KeyPlan::default();
        let key = builder.build_planned(&labels, &first, &mut plan);
        assert_eq!(key.unwrap().0, r#"a="1",job="api""#);
        let key = builder.build_planned(&labels, &second, &mut plan);
        assert_eq!(key.unwrap().0, r#"a="1",job="j",zone="z""#);
    }
}
