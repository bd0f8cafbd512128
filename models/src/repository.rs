//! A Triton-style model repository on disk:
//!
//! ```text
//! <root>/<model>/config.toml      name, batching
//! <root>/<model>/<version>/model.onnx
//! ```
//!
//! The configuration holds only what the ONNX file cannot say (batching
//! limits, description); inputs and outputs come from the file itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ModelError;

/// The only platform the model core runs.
pub const ONNX_PLATFORM: &str = "onnxruntime_onnx";
/// File name of a model version's graph.
pub const MODEL_FILE: &str = "model.onnx";

/// `<model>/config.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Must equal the folder name.
    pub name: String,
    /// Always `onnxruntime_onnx`.
    #[serde(default = "default_platform")]
    pub platform: String,
    /// Largest batch a request or a formed batch may have; 0 when the model
    /// has no batch dimension (the first dimension of every input and output).
    #[serde(default)]
    pub max_batch_size: u32,
    /// Present to let the local backend merge requests into batches.
    #[serde(default)]
    pub dynamic_batching: Option<DynamicBatching>,
    /// Free text shown in metadata-adjacent listings.
    #[serde(default)]
    pub description: String,
}

/// How long requests may wait to be merged into one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatching {
    /// Longest time the first request of a batch waits for others, in µs.
    /// 0 (the default, as in Triton) merges what is already queued and
    /// never waits for more.
    #[serde(default)]
    pub max_queue_delay_us: u64,
}

fn default_platform() -> String {
    ONNX_PLATFORM.to_owned()
}

impl ModelConfig {
    /// The batch limit, `None` for a model without a batch dimension.
    pub fn batch_limit(&self) -> Option<u64> {
        (self.max_batch_size > 0).then_some(u64::from(self.max_batch_size))
    }
}

/// `models = "all"` or a list of model names, as the backend sections of the
/// gateway config write it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ModelSelection {
    Keyword(String),
    List(Vec<String>),
}

impl Default for ModelSelection {
    fn default() -> Self {
        ModelSelection::Keyword("all".into())
    }
}

impl ModelSelection {
    /// The names it selects from `repository`, or what is wrong with it,
    /// phrased as a fix for the `models` key.
    pub fn resolve(&self, repository: &ModelRepository) -> Result<Vec<String>, String> {
        let names = match self {
            ModelSelection::Keyword(word) if word == "all" => {
                return Ok(repository.models.keys().cloned().collect());
            }
            ModelSelection::Keyword(word) => {
                return Err(format!(
                    "{word:?} is not valid; write \"all\" or a list of model names"
                ));
            }
            ModelSelection::List(list) => list.clone(),
        };
        if names.is_empty() {
            return Err("is empty; list at least one model or write \"all\"".into());
        }
        repository.check_known(&names)?;
        Ok(names)
    }
}

/// One servable version of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub version: u64,
    pub path: PathBuf,
}

/// A model: its configuration and its versions, ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryModel {
    pub config: ModelConfig,
    pub versions: Vec<ModelVersion>,
}

impl RepositoryModel {
    /// The highest version, served when a request names none.
    pub fn latest(&self) -> Option<&ModelVersion> {
        self.versions.last()
    }
}

/// The models found under a repository root, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRepository {
    pub root: PathBuf,
    pub models: BTreeMap<String, RepositoryModel>,
}

impl ModelRepository {
    /// Fails with a message naming the first of `names` not in the
    /// repository and the models it has.
    pub fn check_known<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), String> {
        match names
            .into_iter()
            .find(|name| !self.models.contains_key(*name))
        {
            Some(unknown) => Err(format!(
                "unknown model {unknown:?}; the repository has {:?}",
                self.models.keys().collect::<Vec<_>>()
            )),
            None => Ok(()),
        }
    }

    /// Reads every `<root>/<model>/config.toml` and the version folders
    /// beside it. A model folder without any version is an error: it usually
    /// means the set-up that generates the model files has not run.
    pub fn load(root: &Path) -> Result<Self, ModelError> {
        let repo_error = |message: String| ModelError::Repository {
            path: root.to_owned(),
            message,
        };
        let entries = std::fs::read_dir(root).map_err(|e| {
            repo_error(format!("cannot read the folder ({e}); run `make setup` to generate the models or set `models.repository`"))
        })?;
        let mut models = BTreeMap::new();
        for entry in entries {
            let dir = entry.map_err(|e| repo_error(e.to_string()))?.path();
            let config_path = dir.join("config.toml");
            if !config_path.is_file() {
                continue;
            }
            let model = load_model(&dir, &config_path)?;
            models.insert(model.config.name.clone(), model);
        }
        if models.is_empty() {
            return Err(repo_error(
                "no model folders (each needs a config.toml)".into(),
            ));
        }
        Ok(Self {
            root: root.to_owned(),
            models,
        })
    }
}

fn load_model(dir: &Path, config_path: &Path) -> Result<RepositoryModel, ModelError> {
    let config = read_config(config_path)?;
    let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let config_error = |key: &str, message: String| ModelError::Config {
        path: config_path.to_owned(),
        key: key.to_owned(),
        message,
    };
    if config.name != folder {
        return Err(config_error(
            "name",
            format!(
                "is {:?} but the folder is {folder:?}; make them equal",
                config.name
            ),
        ));
    }
    if config.platform != ONNX_PLATFORM {
        return Err(config_error(
            "platform",
            format!(
                "{:?} is not supported; use {ONNX_PLATFORM:?}",
                config.platform
            ),
        ));
    }
    if config.dynamic_batching.is_some() && config.max_batch_size == 0 {
        return Err(config_error(
            "dynamic_batching",
            "needs max_batch_size > 0; set max_batch_size or remove [dynamic_batching]".into(),
        ));
    }
    let mut versions = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::Repository {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let path = entry.path().join(MODEL_FILE);
        if path.is_file() {
            versions.push(ModelVersion { version, path });
        }
    }
    if versions.is_empty() {
        return Err(ModelError::Repository {
            path: dir.to_owned(),
            message: format!(
                "no version folder with a {MODEL_FILE}; run `make setup` to generate the models"
            ),
        });
    }
    versions.sort_by_key(|v| v.version);
    Ok(RepositoryModel { config, versions })
}

fn read_config(path: &Path) -> Result<ModelConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Repository {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    crate::toml_config::from_toml(&text).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        key: e.key,
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModelConfig {
        match crate::toml_config::from_toml::<ModelConfig>(text) {
            Ok(config) => config,
            Err(e) => panic!("{}: {}", e.key, e.message),
        }
    }

    #[test]
    fn dynamic_batching_without_a_delay_merges_without_waiting() {
        let config = parse("name = \"m\"\nmax_batch_size = 8\n[dynamic_batching]\n");
        assert_eq!(
            config.dynamic_batching,
            Some(DynamicBatching {
                max_queue_delay_us: 0
            })
        );
        let config = parse(
            "name = \"m\"\nmax_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_us = 300\n",
        );
        assert_eq!(
            config.dynamic_batching.map(|b| b.max_queue_delay_us),
            Some(300)
        );
        assert_eq!(parse("name = \"m\"\n").dynamic_batching, None);
    }
}
