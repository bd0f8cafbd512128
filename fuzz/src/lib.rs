//! The bodies of the fuzz targets, shared with the stable corpus-replay
//! test (`scheduler/tests/fuzz_corpus.rs` includes `targets.rs` itself).

pub mod targets;
