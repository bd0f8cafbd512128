//! Run files: the phases of a load test and, in TOML, its payload mix.
//!
//! - An Artillery script (`.yml`, `.yaml`): its `config.phases` block
//!   ([`Phases::from_artillery_yaml`]); the rest of the script is ignored.
//! - A TOML file: `[[phase]]` tables ([`Phases::from_toml`]) and, optionally,
//!   `[[mix]]` tables, each with `model`, `batch` (default 1) and `weight`
//!   (default 1). Either list may be left out; unknown keys are errors.
//!
//! ```toml
//! [[phase]]
//! name = "warm up"
//! duration = "30s"
//! arrival_rate = 5
//!
//! [[phase]]
//! name = "ramp"
//! duration = "2m"
//! arrival_rate = 5
//! ramp_to = 200
//! max_in_flight = 256
//!
//! [[mix]]
//! model = "digits"
//! weight = 3
//!
//! [[mix]]
//! model = "fashion_cnn"
//! batch = 8
//! weight = 1
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::LoadgenError;
use crate::mix::{MixEntry, MixSpec};
use crate::phases::{Phases, RawPhase};

/// What a run file gives.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFile {
    pub phases: Option<Phases>,
    pub mix: Option<MixSpec>,
}

impl RunFile {
    /// Reads `path`: Artillery YAML by its extension, TOML otherwise.
    pub fn load(path: &Path) -> Result<Self, LoadgenError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => Ok(Self {
                phases: Some(Phases::load(path)?),
                mix: None,
            }),
            _ => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    LoadgenError::Settings(format!("cannot read run file {}: {e}", path.display()))
                })?;
                Self::from_toml(&text).map_err(|e| match e {
                    LoadgenError::Settings(m) => {
                        LoadgenError::Settings(format!("{}: {m}", path.display()))
                    }
                    other => other,
                })
            }
        }
    }

    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, LoadgenError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            phase: Vec<RawPhase>,
            #[serde(default)]
            mix: Vec<MixEntry>,
        }
        let file: File = toml::from_str(text)
            .map_err(|e| LoadgenError::Settings(format!("invalid run file: {e}")))?;
        if file.phase.is_empty() && file.mix.is_empty() {
            return Err(LoadgenError::Settings(
                "the run file has neither [[phase]] nor [[mix]] tables".into(),
            ));
        }
        let phases = if file.phase.is_empty() {
            None
        } else {
            let phases = file
                .phase
                .into_iter()
                .enumerate()
                .map(|(i, raw)| raw.into_phase(&format!("phase[{i}]"), i))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Phases::new(phases)?)
        };
        let mix = if file.mix.is_empty() {
            None
        } else {
            Some(MixSpec::new(file.mix, "mix")?)
        };
        Ok(Self { phases, mix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::PhaseLoad;

    #[test]
    fn phases_and_mix_parse_together() {
        let file = RunFile::from_toml(
            r#"
[[phase]]
duration = 10
arrival_rate = 5

[[mix]]
model = "digits"
weight = 3

[[mix]]
model = "fashion_cnn"
batch = 8
"#,
        )
        .unwrap();
        let phases = file.phases.unwrap();
        assert_eq!(phases.as_slice()[0].load, PhaseLoad::Rate { rate: 5.0 });
        let mix = file.mix.unwrap();
        assert_eq!(mix.entries().len(), 2);
        assert_eq!(mix.entries()[0].batch, 1);
        assert_eq!(mix.entries()[1].weight, 1.0);
        assert_eq!(mix.entries()[1].batch, 8);
    }

    #[test]
    fn either_part_may_be_left_out_but_not_both() {
        let only_mix = RunFile::from_toml("[[mix]]\nmodel = \"m\"\n").unwrap();
        assert!(only_mix.phases.is_none());
        let only_phases =
            RunFile::from_toml("[[phase]]\nduration = 1\narrival_rate = 1\n").unwrap();
        assert!(only_phases.mix.is_none());
        assert!(RunFile::from_toml("").is_err());
    }

    #[test]
    fn the_example_files_parse() {
        let toml = RunFile::from_toml(include_str!("../examples/mixed-ramp.toml")).unwrap();
        let phases = toml.phases.unwrap();
        assert_eq!(phases.as_slice().len(), 4);
        assert_eq!(phases.as_slice()[3].load, PhaseLoad::Count { count: 2000 });
        assert_eq!(toml.mix.unwrap().entries().len(), 2);
        let yaml = Phases::from_artillery_yaml(include_str!("../examples/artillery.yml")).unwrap();
        assert_eq!(yaml.as_slice().len(), 4);
        assert_eq!(yaml.as_slice()[1].max_in_flight, Some(200));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, expected) in [
            ("[[mix]]\nmodel = \"m\"\nwieght = 2\n", "wieght"),
            ("[[mix]]\nmodel = \"m\"\nweight = 0\n", "mix[0]: `weight`"),
            ("[[mix]]\nmodel = \"m\"\nbatch = 0\n", "mix[0]: `batch`"),
            (
                "[[phase]]\nduration = 5\n",
                "phase[0]: give an arrival rate",
            ),
            ("[[phases]]\nduration = 5\n", "phases"),
        ] {
            let error = RunFile::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
