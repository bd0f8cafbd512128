//! Payload mixes: which model, and how many rows, each request carries.
//!
//! A mix is a list of entries (model, batch size, weight). On the command
//! line it is the cross product of repeated `--model NAME[:WEIGHT]` and one
//! `--batch SIZE[:WEIGHT][,SIZE[:WEIGHT]...]`; in a TOML run file it is a
//! list of `[[mix]]` tables. Each entry's bodies are encoded once, before
//! the run ([`crate::Target::prepare_mix`]).
//!
//! Which entry request number `i` uses is draw number `i` of a generator
//! seeded with the run's seed ([`Chooser`]): reproducible, independent of
//! timing and of which thread sends the request, and O(log entries).

use serde::{Deserialize, Serialize};

use crate::LoadgenError;
use crate::rng::SplitMix64;

/// Separates the mix's random stream from the arrivals' and the payloads'
/// streams, which use the same seed.
const MIX_STREAM: u64 = 0x6D69_7853_7472_6561;

/// One kind of request in a mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    /// The model the request goes to.
    pub model: String,
    /// Rows per request: the size of every dynamic (`-1`) input dimension.
    #[serde(default = "one")]
    pub batch: u64,
    /// Relative weight (any positive number; the shares are normalised).
    #[serde(default = "one_f64")]
    pub weight: f64,
}

fn one() -> u64 {
    1
}

fn one_f64() -> f64 {
    1.0
}

impl MixEntry {
    /// `model batch N`, the entry's name in reports.
    pub fn label(&self) -> String {
        format!("{} batch {}", self.model, self.batch)
    }
}

/// A checked, non-empty payload mix.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct MixSpec(Vec<MixEntry>);

impl MixSpec {
    /// Checks that there is an entry, every weight is a positive finite
    /// number and every batch is at least 1. `key` names where the entries
    /// came from, for error messages.
    pub fn new(entries: Vec<MixEntry>, key: &str) -> Result<Self, LoadgenError> {
        if entries.is_empty() {
            return Err(LoadgenError::Settings(format!(
                "{key}: give at least one model (--model NAME or a [[mix]] table)"
            )));
        }
        for (i, entry) in entries.iter().enumerate() {
            let bad = |what: String| Err(LoadgenError::Settings(format!("{key}[{i}]: {what}")));
            if entry.model.is_empty() {
                return bad("`model` is empty".into());
            }
            if !(entry.weight.is_finite() && entry.weight > 0.0) {
                return bad(format!(
                    "`weight` is {}; it must be a positive number",
                    entry.weight
                ));
            }
            if entry.batch == 0 {
                return bad("`batch` is 0; it must be at least 1".into());
            }
        }
        Ok(Self(entries))
    }

    /// One model at one batch size.
    pub fn single(model: &str, batch: u64) -> Result<Self, LoadgenError> {
        Self::new(
            vec![MixEntry {
                model: model.to_owned(),
                batch,
                weight: 1.0,
            }],
            "mix",
        )
    }

    /// The command line's form: every `--model NAME[:WEIGHT]` with every
    /// batch size of `--batch SIZE[:WEIGHT],...` (default `1`), the weight of
    /// a pair being the product of the two.
    pub fn from_cli(models: &[String], batches: Option<&str>) -> Result<Self, LoadgenError> {
        let models = models
            .iter()
            .map(|text| weighted(text, "--model", "NAME[:WEIGHT], e.g. digits:3"))
            .collect::<Result<Vec<_>, _>>()?;
        let batches = match batches {
            None => vec![(1, 1.0)],
            Some(text) => parse_batches(text)?,
        };
        let mut entries = Vec::with_capacity(models.len() * batches.len());
        for (model, model_weight) in &models {
            for &(batch, batch_weight) in &batches {
                entries.push(MixEntry {
                    model: model.clone(),
                    batch,
                    weight: model_weight * batch_weight,
                });
            }
        }
        Self::new(entries, "--model/--batch")
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[MixEntry] {
        &self.0
    }

    /// Each entry's share of the requests (weights normalised to sum 1).
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.0.iter().map(|e| e.weight).sum();
        self.0.iter().map(|e| e.weight / total).collect()
    }

    /// The distinct models, in order of first appearance.
    pub fn models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = Vec::new();
        for entry in &self.0 {
            if !models.contains(&entry.model.as_str()) {
                models.push(&entry.model);
            }
        }
        models
    }
}

/// `NAME[:WEIGHT]` → (name, weight); the weight defaults to 1.
fn weighted(text: &str, flag: &str, form: &str) -> Result<(String, f64), LoadgenError> {
    let bad = || {
        LoadgenError::Settings(format!(
            "{flag} {text:?}: write {form} (the weight is a positive number)"
        ))
    };
    let (name, weight) = match text.rsplit_once(':') {
        Some((name, weight)) => (name, weight.trim().parse::<f64>().map_err(|_| bad())?),
        None => (text, 1.0),
    };
    let name = name.trim();
    if name.is_empty() || !(weight.is_finite() && weight > 0.0) {
        return Err(bad());
    }
    Ok((name.to_owned(), weight))
}

/// `1:8,8:1` → [(1, 8.0), (8, 1.0)]; `4` → [(4, 1.0)].
pub fn parse_batches(text: &str) -> Result<Vec<(u64, f64)>, LoadgenError> {
    text.split(',')
        .map(|part| {
            let (size, weight) = weighted(
                part,
                "--batch",
                "SIZE[:WEIGHT][,SIZE[:WEIGHT]...], e.g. 1:8,8:1",
            )?;
            match size.parse::<u64>() {
                Ok(size) if size >= 1 => Ok((size, weight)),
                _ => Err(LoadgenError::Settings(format!(
                    "--batch {part:?}: the batch size must be a whole number, at least 1"
                ))),
            }
        })
        .collect()
}

/// Picks the mix entry of each request from the run's seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chooser {
    /// Upper ends of each entry's slice of [0, 1), the last one exactly 1.
    cumulative: Vec<f64>,
    seed: u64,
}

impl Chooser {
    /// A chooser over entries with these weights (all > 0).
    pub fn new(weights: &[f64], seed: u64) -> Self {
        let total: f64 = weights.iter().sum();
        let mut running = 0.0;
        let mut cumulative: Vec<f64> = weights
            .iter()
            .map(|w| {
                running += w / total;
                running
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        Self {
            cumulative,
            seed: seed ^ MIX_STREAM,
        }
    }

    /// The entry of request number `index`.
    pub fn choose(&self, index: u64) -> usize {
        if self.cumulative.len() <= 1 {
            return 0;
        }
        let u = SplitMix64::unit_at(self.seed, index);
        self.cumulative
            .partition_point(|&upper| upper <= u)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_mix_is_the_weighted_cross_product() {
        let mix = MixSpec::from_cli(
            &["digits:3".to_owned(), "fashion_cnn".to_owned()],
            Some("1:8,8:1"),
        )
        .unwrap();
        let e = mix.entries();
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[0].model.as_str(), e[0].batch, e[0].weight),
            ("digits", 1, 24.0)
        );
        assert_eq!(
            (e[1].model.as_str(), e[1].batch, e[1].weight),
            ("digits", 8, 3.0)
        );
        assert_eq!(
            (e[3].model.as_str(), e[3].batch, e[3].weight),
            ("fashion_cnn", 8, 1.0)
        );
        let shares = mix.shares();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((shares[0] - 24.0 / 36.0).abs() < 1e-12);
        assert_eq!(mix.models(), vec!["digits", "fashion_cnn"]);
        assert_eq!(
            MixSpec::from_cli(&["m".to_owned()], None)
                .unwrap()
                .entries()[0]
                .batch,
            1
        );
    }

    #[test]
    fn bad_mixes_name_the_flag() {
        for (models, batches, expected) in [
            (vec![], None, "give at least one model"),
            (vec!["m:0"], None, "--model \"m:0\""),
            (vec!["m:x"], None, "--model \"m:x\""),
            (vec![":2"], None, "--model"),
            (vec!["m"], Some("0"), "at least 1"),
            (vec!["m"], Some("1:-2"), "--batch \"1:-2\""),
            (vec!["m"], Some("one"), "whole number"),
        ] {
            let models: Vec<String> = models.into_iter().map(str::to_owned).collect();
            let error = MixSpec::from_cli(&models, batches).unwrap_err().to_string();
            assert!(error.contains(expected), "{models:?} {batches:?}: {error}");
        }
    }

    #[test]
    fn choices_follow_the_weights_and_the_seed() {
        let chooser = Chooser::new(&[3.0, 1.0, 0.5], 7);
        let n = 90_000u64;
        let mut counts = [0u64; 3];
        for i in 0..n {
            counts[chooser.choose(i)] += 1;
        }
        // Binomial standard deviation of the first share: sqrt(n p (1-p))
        // ≈ 143 requests, 0.16%; 1% is over six of them.
        for (count, share) in counts.iter().zip([3.0 / 4.5, 1.0 / 4.5, 0.5 / 4.5]) {
            let observed = *count as f64 / n as f64;
            assert!((observed - share).abs() < 0.01, "{observed} vs {share}");
        }
        let again = Chooser::new(&[3.0, 1.0, 0.5], 7);
        let other = Chooser::new(&[3.0, 1.0, 0.5], 8);
        assert!((0..1000).all(|i| chooser.choose(i) == again.choose(i)));
        assert!((0..1000).any(|i| chooser.choose(i) != other.choose(i)));
        assert!((0..100).all(|i| Chooser::new(&[2.0], 1).choose(i) == 0));
    }
}
