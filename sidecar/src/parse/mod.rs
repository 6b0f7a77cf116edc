//! Exposition-format parsers: Prometheus text 0.0.4 / OpenMetrics 1.0 and delimited protobuf.
