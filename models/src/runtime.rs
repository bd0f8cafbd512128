//! Locating and loading the ONNX Runtime shared library.
//!
//! The library comes from the pinned `onnxruntime` wheel; the set-up copies
//! it to `.cache/onnxruntime/` in the repository. A binary finds it through
//! `ORT_DYLIB_PATH` if set, else by looking for that cache in the current
//! directory, the executable's folder and their parents, so that
//! `target/release/switchyard serve` works from the repository root with no
//! environment at all. A container image or Lambda package sets
//! `ORT_DYLIB_PATH` to where it put the library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ModelError;

/// The ONNX Runtime version Switchyard is built and tested against.
pub const ORT_VERSION: &str = "1.32.0";
/// File name of the library inside the wheel (it has no unversioned name).
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.32.0";
/// Where the set-up puts the library, relative to the repository root.
pub const ORT_CACHE_DIR: &str = ".cache/onnxruntime";

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Finds the ONNX Runtime library: `ORT_DYLIB_PATH`, else the project cache.
pub fn locate_library() -> Result<PathBuf, ModelError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ModelError::RuntimeNotFound(format!(
                "ORT_DYLIB_PATH is {} but no such file exists; point it at \
                 {ORT_LIBRARY_FILE} or unset it to use the project cache",
                path.display()
            )))
        };
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(exe_dir.ancestors().map(Path::to_path_buf));
    }
    roots
        .iter()
        .map(|root| root.join(ORT_CACHE_DIR).join(ORT_LIBRARY_FILE))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            ModelError::RuntimeNotFound(format!(
                "ONNX Runtime {ORT_VERSION} not found: no {ORT_CACHE_DIR}/{ORT_LIBRARY_FILE} in \
                 the current directory, the executable's directory or their parents. Run \
                 `make setup` in the Switchyard repository (it installs the pinned onnxruntime \
                 wheel into {ORT_CACHE_DIR}), or set ORT_DYLIB_PATH to the library file"
            ))
        })
}

/// Loads ONNX Runtime once per process and returns its environment.
/// Later calls return the same environment (or the same error).
pub fn environment() -> Result<ort::environment::Environment, ModelError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let path = locate_library().map_err(|e| e.to_string())?;
        tracing::info!(path = %path.display(), "loading ONNX Runtime");
        let builder = ort::init_from(&path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder.with_name("switchyard").build().map_err(|e| {
            format!(
                "cannot initialise ONNX Runtime from {}: {e}",
                path.display()
            )
        })
    });
    result.clone().map_err(ModelError::RuntimeNotFound)
}
