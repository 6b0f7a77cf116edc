//! The hasher of every map keyed by what a client sent (series keys, label pairs, StatsD
//! names): foldhash, seeded per process and per map. It is several times cheaper than std's
//! SipHash on these short keys (push ingest hashes each series key and each label pair), and
//! the seed is random, so a sender cannot precompute keys that collide; the hashes themselves
//! are never shown to a client.

/// The `BuildHasher` for maps and hashes of client-sent keys (see the module doc).
pub type HashState = foldhash::fast::RandomState;
