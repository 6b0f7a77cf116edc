//! Every way values reach the store, one folder each: the Pushgateway API ([`push`]), the
//! original JSON API ([`json`]), StatsD ([`statsd`]), prometheus_client multiprocess files
//! ([`multiprocess`]), scrape mode ([`scrape`]) and OTLP/HTTP ([`otlp`]). [`parse`] holds the
//! exposition parsers that push, JSON and scrape share. Each source turns its input into
//! [`crate::model::Family`] values for one worker and applies them to the store.

pub mod json;
pub mod multiprocess;
pub mod otlp;
pub mod parse;
pub mod push;
pub mod scrape;
pub mod statsd;
