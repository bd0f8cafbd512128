//! Strict TOML parsing that reports the full key path of an error, shared by
//! the model configs and the gateway's own config.

use serde::de::DeserializeOwned;

/// A TOML error located at a key path such as `backends.local.workers`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TomlError {
    /// Dotted key path, or `(syntax)` when the text is not TOML at all.
    pub key: String,
    pub message: String,
}

/// Parses `text` into `T`, naming the key path of the first error.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| TomlError {
        key: "(syntax)".into(),
        message: e.to_string(),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        TomlError {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: e.inner().message().trim().to_owned(),
        }
    })
}
