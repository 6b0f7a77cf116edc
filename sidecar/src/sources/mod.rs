//! Ingest APIs on the ingest listener: the Pushgateway API and the original JSON API.

pub mod json;
pub mod push;
