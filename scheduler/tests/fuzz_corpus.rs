//! The fuzz targets (`fuzz/`) on stable Rust: every seed of each target's
//! corpus, then seeded random mutations of them, through the same target
//! functions libFuzzer runs. A panic names the input (hex) that caused it.
//!
//! `FUZZ_ITERATIONS` (default 20000 per target) and `FUZZ_SEED` change the
//! run; the defaults keep it to seconds in a release build.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/targets.rs"]
mod targets;

mod common;

use std::path::Path;

/// A small, fast, seeded generator (SplitMix64): the same seed gives the
/// same mutations on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Fragments that steer mutations toward the parsers' edges.
const DICTIONARY: &[&[u8]] = &[
    b"-1",
    b"0",
    b"1e400",
    b"1e39",
    b"-0.0",
    b"NaN",
    b"18446744073709551615",
    b"18446744073709551616",
    b"4294967296",
    b"9223372036854775807",
    b"\"binary_data_size\":",
    b"\"parameters\":{",
    b"\"shape\":[",
    b"\"data\":[",
    b"\"datatype\":\"BOOL\"",
    b"\"datatype\":\"FP32\"",
    b"\"datatype\":\"FP16\"",
    b"\"datatype\":\"BYTES\"",
    b"\"timeout\":",
    b"\"binary_data_output\":true",
    b"[[[[",
    b"]]]]",
    b"{}",
    b"null",
    b"true",
    b"\xff\xfe",
    b"\\u0000",
    b"\n[server.auth]\n",
    b"\n[placement.default]\npolicy = \"adaptive\"\n",
    b"\n[backends.container]\n",
    b"\n[backends.lambda]\n",
    b" = ",
    b"\"\"\"",
];

fn mutate(input: &[u8], seeds: &[Vec<u8>], rng: &mut SplitMix) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 0xff, b'"', b'[', b']', b'{', b'}', b',', b'-', b'9'][rng.below(10)];
            }
            2 => out.insert(at, rng.next() as u8),
            3 if !out.is_empty() => {
                let end = (at + rng.below(16) + 1).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())];
                out.splice(at..at, word.iter().copied());
            }
            5 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.below(64) + 1).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// The seeds of one target: its committed corpus, plus `extra` files.
fn seeds(target: &str, extra: &[&Path]) -> Vec<Vec<u8>> {
    let dir = common::workspace().join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.extend(extra.iter().map(|p| p.to_path_buf()));
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("seed"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `target` on every seed and then on `1/share` of the mutations;
/// returns the number of executions.
fn replay(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>], share: u64) -> u64 {
    let iterations = env_number("FUZZ_ITERATIONS", 20_000) / share;
    let mut rng = SplitMix(env_number("FUZZ_SEED", 0x5eed) ^ name.len() as u64);
    let run = |input: &[u8]| {
        if std::panic::catch_unwind(|| target(input)).is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("fuzz target {name} panicked on input (hex) {hex}");
        }
    };
    for seed in seeds {
        run(seed);
    }
    let mut current = seeds[0].clone();
    for i in 0..iterations {
        // Mostly mutate a fresh seed; sometimes keep mutating the last input.
        if i % 4 != 0 {
            current = seeds[rng.below(seeds.len())].clone();
        }
        current = mutate(&current, seeds, &mut rng);
        run(&current);
    }
    seeds.len() as u64 + iterations
}

#[test]
fn v2_json_target_survives_its_corpus_and_mutations() {
    let seeds = seeds("v2_json", &[]);
    let runs = replay("v2_json", targets::v2_json, &seeds, 1);
    assert!(runs > seeds.len() as u64);
}

#[test]
fn binary_tensor_target_survives_its_corpus_and_mutations() {
    let seeds = seeds("binary_tensor", &[]);
    let runs = replay("binary_tensor", targets::binary_tensor, &seeds, 1);
    assert!(runs > seeds.len() as u64);
}

#[test]
fn config_target_survives_the_shipped_configs_and_mutations() {
    let config_dir = common::workspace().join("config");
    let shipped: Vec<_> = std::fs::read_dir(&config_dir)
        .expect("config/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(shipped.len() >= 5, "{shipped:?}");
    let extra: Vec<&Path> = shipped.iter().map(|p| p.as_path()).collect();
    let seeds = seeds("config", &extra);
    // A config run reads the model repository from disk: a quarter as many.
    let runs = replay("config", targets::config, &seeds, 4);
    assert!(runs > seeds.len() as u64);
}
