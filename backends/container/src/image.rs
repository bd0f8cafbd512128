//! The worker image, built locally (no registry is reachable): a `FROM
//! scratch` image holding the `switchyard` binary, ONNX Runtime, every shared
//! library `ldd` finds for the binary *and* for ONNX Runtime (which the
//! binary loads at run time, so its own `ldd` does not list it), and the
//! configured models. It runs `switchyard worker` as user 65534.
//!
//! The tag is a hash of everything that goes in (the Dockerfile text and
//! each file's path, mode and bytes), so a changed binary, library or model
//! gives a new tag and a stale image is never used; an image whose tag
//! exists is reused without a build. Gateways on one machine take turns to
//! build (a lock file, [`BuildLock`]), so gateways started together build a
//! missing image once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, RemoveImageOptions};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use switchyard_models::ModelRepository;

use crate::config::ContainerConfig;
use crate::engine::{
    self, EngineError, Identity, LABEL_CONTENT, LABEL_MANAGED, LABEL_MODELS, LABEL_SCOPE,
};

/// The port the worker listens on inside the container.
pub const WORKER_PORT: u16 = 8000;
const BINARY_PATH: &str = "/switchyard/bin/switchyard";
const LIBRARY_DIR: &str = "/switchyard/lib";
const MODELS_DIR: &str = "/switchyard/models";
/// Where Debian's loader and `ldd` put the system libraries; also given as
/// `LD_LIBRARY_PATH` since a scratch image has no `/etc/ld.so.cache`.
const SYSTEM_LIBRARY_DIRS: &str = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64";

/// Why the image could not be planned or built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("ldd {path}: {message}")]
    Ldd { path: PathBuf, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("building image {reference} failed: {message}")]
    Build { reference: String, message: String },
}

/// One file of the image: where it comes from, where it goes, its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageFile {
    source: PathBuf,
    mode: u32,
}

/// What the image holds, and its content-hash reference.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// `repository:hash`.
    pub reference: String,
    pub content_hash: String,
    models: Vec<String>,
    dockerfile: String,
    /// By absolute path inside the image.
    files: BTreeMap<String, ImageFile>,
}

impl ImagePlan {
    /// Lists the files (running `ldd`) and hashes them. Blocking: reads
    /// every file once.
    pub fn new(config: &ContainerConfig, repository: &ModelRepository) -> Result<Self, ImageError> {
        let binary = absolute(&config.worker_binary)?;
        let onnxruntime = match &config.onnxruntime {
            Some(path) => absolute(path)?,
            None => switchyard_models::runtime::locate_library().map_err(|e| ImageError::File {
                path: PathBuf::from("libonnxruntime"),
                message: e.to_string(),
            })?,
        };
        let library_name = file_name(&onnxruntime)?;
        let mut files = BTreeMap::new();
        files.insert(
            BINARY_PATH.to_owned(),
            ImageFile {
                source: binary.clone(),
                mode: 0o755,
            },
        );
        files.insert(
            format!("{LIBRARY_DIR}/{library_name}"),
            ImageFile {
                source: onnxruntime.clone(),
                mode: 0o755,
            },
        );
        for object in [&binary, &onnxruntime] {
            for (target, source) in shared_libraries(object)? {
                files.insert(
                    target,
                    ImageFile {
                        source,
                        mode: 0o755,
                    },
                );
            }
        }
        for name in &config.models {
            let Some(model) = repository.models.get(name) else {
                continue;
            };
            let dir = repository.root.join(name);
            files.insert(
                format!("{MODELS_DIR}/{name}/config.toml"),
                ImageFile {
                    source: dir.join("config.toml"),
                    mode: 0o644,
                },
            );
            for version in &model.versions {
                files.insert(
                    format!(
                        "{MODELS_DIR}/{name}/{}/{}",
                        version.version,
                        switchyard_models::repository::MODEL_FILE
                    ),
                    ImageFile {
                        source: version.path.clone(),
                        mode: 0o644,
                    },
                );
            }
        }
        let dockerfile = dockerfile(&library_name);
        let content_hash = content_hash(&dockerfile, &files)?;
        Ok(Self {
            reference: format!("{}:{content_hash}", config.image),
            content_hash,
            models: config.models.clone(),
            dockerfile,
            files,
        })
    }

    /// Makes sure the image exists, building it when missing. Returns
    /// whether it was built.
    ///
    /// Gateways on this machine take turns to build (see [`BuildLock`]):
    /// one that finds the image missing waits, up to `wait`, for another
    /// one's build of it to end, and then uses that image. After `wait`, or
    /// where the lock cannot be had, it builds anyway, and the untagged
    /// copy such a race leaves is removed later.
    pub async fn ensure(
        &self,
        docker: &Docker,
        identity: &Identity,
        wait: Duration,
    ) -> Result<bool, ImageError> {
        if self.exists(docker).await? {
            // A copy left by an earlier race whose container held it.
            self.remove_untagged_copies(docker).await;
            return Ok(false);
        }
        let _turn = BuildLock::acquire(&BuildLock::path(), wait).await;
        if self.exists(docker).await? {
            tracing::info!(image = %self.reference, "another gateway built the worker image");
            return Ok(false);
        }
        let plan = self.clone();
        let context = tokio::task::spawn_blocking(move || plan.build_context())
            .await
            .map_err(|e| ImageError::Build {
                reference: self.reference.clone(),
                message: e.to_string(),
            })??;
        self.build(docker, identity, context).await?;
        self.remove_stale(docker).await;
        Ok(true)
    }

    /// Whether the engine has the image.
    async fn exists(&self, docker: &Docker) -> Result<bool, ImageError> {
        match docker.inspect_image(&self.reference).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => {
                Err(EngineError::new(format!("cannot inspect image {}", self.reference))(e).into())
            }
        }
    }

    /// Removes earlier builds of this repository that no container uses
    /// (each binary or model change makes a new one), and untagged copies
    /// of this very content: two gateways that found the image missing at
    /// the same moment and could not take turns (see [`BuildLock`]) both
    /// build it, and the tag moves to the build that ends last, leaving the
    /// other one dangling.
    async fn remove_stale(&self, docker: &Docker) {
        self.remove_untagged_copies(docker).await;
        let repository = self
            .reference
            .rsplit_once(':')
            .map_or(&*self.reference, |(r, _)| r);
        let managed = format!("{LABEL_MANAGED}=true");
        let Ok(images) =
            engine::list_images(docker, &[("label", &managed), ("reference", repository)]).await
        else {
            return;
        };
        for image in images {
            if image.repo_tags.contains(&self.reference) {
                continue;
            }
            for tag in image
                .repo_tags
                .iter()
                .filter(|t| t.starts_with(&format!("{repository}:")))
            {
                // In use by a container: the engine refuses, and that is right.
                if docker
                    .remove_image(tag, None::<RemoveImageOptions>, None)
                    .await
                    .is_ok()
                {
                    tracing::info!(image = %tag, "removed a stale worker image");
                }
            }
        }
    }

    /// Removes images with this plan's content label that no tag names
    /// (see [`Self::remove_stale`]). One in use by a container stays (the
    /// engine refuses) until the pool that started the container stops, or
    /// a later start finds it free.
    pub(crate) async fn remove_untagged_copies(&self, docker: &Docker) {
        let managed = format!("{LABEL_MANAGED}=true");
        let content = format!("{LABEL_CONTENT}={}", self.content_hash);
        let filters = [
            ("label", managed.as_str()),
            ("label", content.as_str()),
            ("dangling", "true"),
        ];
        let Ok(images) = engine::list_images(docker, &filters).await else {
            return;
        };
        for image in images {
            if docker
                .remove_image(&image.id, None::<RemoveImageOptions>, None)
                .await
                .is_ok()
            {
                tracing::info!(image = %image.id, "removed an untagged copy of the worker image");
            }
        }
    }

    async fn build(
        &self,
        docker: &Docker,
        identity: &Identity,
        context: Vec<u8>,
    ) -> Result<(), ImageError> {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_SCOPE.to_owned(), identity.scope.clone()),
            (LABEL_CONTENT.to_owned(), self.content_hash.clone()),
            (LABEL_MODELS.to_owned(), self.models.join(",")),
        ]);
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(self.reference.clone()),
            rm: true,
            forcerm: true,
            // The tag is missing, so the content changed: a cached layer
            // could only be one of an earlier identical build.
            nocache: true,
            labels: Some(labels),
            ..Default::default()
        };
        let build_error = |message: String| ImageError::Build {
            reference: self.reference.clone(),
            message,
        };
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info.error {
                        return Err(build_error(error));
                    }
                    if let Some(line) = info
                        .stream
                        .as_deref()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                    {
                        tracing::debug!(image = %self.reference, "{line}");
                    }
                }
                Err(e) => return Err(build_error(e.to_string())),
            }
        }
        docker
            .inspect_image(&self.reference)
            .await
            .map_err(|e| build_error(format!("the build ended but the image is missing: {e}")))?;
        Ok(())
    }

    /// The build context: the Dockerfile and `rootfs/` as a tar archive.
    fn build_context(&self) -> Result<Vec<u8>, ImageError> {
        let tar_error = |message: String| ImageError::Build {
            reference: self.reference.clone(),
            message: format!("cannot write the build context: {message}"),
        };
        let mut builder = tar::Builder::new(Vec::new());
        append(
            &mut builder,
            "Dockerfile",
            0o644,
            self.dockerfile.as_bytes(),
        )
        .map_err(|e| tar_error(e.to_string()))?;
        let mut dirs = BTreeSet::new();
        for target in self.files.keys() {
            let mut dir = Path::new(target).parent();
            while let Some(d) = dir.filter(|d| *d != Path::new("/")) {
                dirs.insert(d.to_path_buf());
                dir = d.parent();
            }
        }
        for dir in &dirs {
            append_dir(&mut builder, &format!("rootfs{}", dir.display()), 0o755)
                .map_err(|e| tar_error(e.to_string()))?;
        }
        append_dir(&mut builder, "rootfs/tmp", 0o1777).map_err(|e| tar_error(e.to_string()))?;
        for (target, file) in &self.files {
            let bytes = std::fs::read(&file.source).map_err(|e| ImageError::File {
                path: file.source.clone(),
                message: e.to_string(),
            })?;
            append(&mut builder, &format!("rootfs{target}"), file.mode, &bytes)
                .map_err(|e| tar_error(e.to_string()))?;
        }
        builder.into_inner().map_err(|e| tar_error(e.to_string()))
    }
}

/// An exclusive advisory lock (`flock`) on a file in the system's temporary
/// folder, which gateways on this machine hold while they build a worker
/// image: the gateways of one machine normally share its engine, and two
/// that find the image missing at once would otherwise both build it. The
/// kernel drops the lock when its holder exits, so a crashed gateway never
/// leaves it held. One file serves every image: builds are rare, and a file
/// per content hash would be one more file per binary change.
#[derive(Debug)]
pub(crate) struct BuildLock {
    _file: File,
}

impl BuildLock {
    /// How often a waiting gateway tries the lock again.
    const RETRY: Duration = Duration::from_millis(50);

    /// The lock file every gateway of this machine uses.
    pub(crate) fn path() -> PathBuf {
        std::env::temp_dir().join("switchyard-image-build.lock")
    }

    /// Takes the lock at `path`, waiting up to `wait` for its holder.
    /// `None` (and the reason logged) when the file cannot be opened, or
    /// the wait ran out: the caller then builds without it.
    pub(crate) async fn acquire(path: &Path, wait: Duration) -> Option<Self> {
        let file = match Self::open(path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error,
                    "cannot open the image build lock; building without it");
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut logged = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Some(Self { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(error)) => {
                    tracing::warn!(path = %path.display(), %error,
                        "cannot take the image build lock; building without it");
                    return None;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(path = %path.display(), ?wait,
                    "another gateway held the image build lock all along; building without it");
                return None;
            }
            if !logged {
                tracing::info!(path = %path.display(), "another gateway is building a worker image; waiting for it");
                logged = true;
            }
            tokio::time::sleep(Self::RETRY).await;
        }
    }

    /// Opens (creating it if needed) the lock file. A file another user
    /// created may be read-only to this one; `flock` works on it all the
    /// same.
    fn open(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .or_else(|_| File::open(path))
    }
}

fn dockerfile(library_name: &str) -> String {
    format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENV ORT_DYLIB_PATH={LIBRARY_DIR}/{library_name} LD_LIBRARY_PATH={SYSTEM_LIBRARY_DIRS}\n\
         USER 65534:65534\n\
         EXPOSE {WORKER_PORT}/tcp\n\
         ENTRYPOINT [\"{BINARY_PATH}\", \"worker\", \"--repository\", \"{MODELS_DIR}\", \
         \"--listen\", \"0.0.0.0:{WORKER_PORT}\"]\n"
    )
}

fn absolute(path: &Path) -> Result<PathBuf, ImageError> {
    std::path::absolute(path)
        .and_then(|p| p.canonicalize())
        .map_err(|e| ImageError::File {
            path: path.to_owned(),
            message: format!(
                "{e}; build it (`cargo build --release -p switchyard`) or fix the path"
            ),
        })
}

fn file_name(path: &Path) -> Result<String, ImageError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| ImageError::File {
            path: path.to_owned(),
            message: "has no file name".into(),
        })
}

/// The shared objects `object` needs, as (path inside the image, file on
/// this machine): the path `ldd` shows, so the loader finds them where it
/// looks, with symbolic links resolved to the file itself.
fn shared_libraries(object: &Path) -> Result<Vec<(String, PathBuf)>, ImageError> {
    let ldd_error = |message: String| ImageError::Ldd {
        path: object.to_owned(),
        message,
    };
    let output = Command::new("ldd")
        .arg(object)
        .output()
        .map_err(|e| ldd_error(format!("cannot run ldd: {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if String::from_utf8_lossy(&output.stderr).contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        return Err(ldd_error(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    parse_ldd(&text).map_err(ldd_error)
}

fn parse_ldd(text: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} is not found on this machine", name.trim()));
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            // The loader, or the kernel's vDSO (no file).
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push((path.to_owned(), PathBuf::from(path)));
        }
    }
    Ok(libraries)
}

fn content_hash(
    dockerfile: &str,
    files: &BTreeMap<String, ImageFile>,
) -> Result<String, ImageError> {
    let mut hasher = Sha256::new();
    hasher.update(dockerfile.as_bytes());
    let mut buffer = vec![0u8; 1 << 20];
    for (target, file) in files {
        let read_error = |e: std::io::Error| ImageError::File {
            path: file.source.clone(),
            message: e.to_string(),
        };
        let mut reader = std::fs::File::open(&file.source).map_err(read_error)?;
        let length = reader.metadata().map_err(read_error)?.len();
        hasher.update(target.as_bytes());
        hasher.update(file.mode.to_le_bytes());
        hasher.update(length.to_le_bytes());
        loop {
            let n = reader.read(&mut buffer).map_err(read_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

fn header(mode: u32, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut header = header(mode, bytes.len() as u64, tar::EntryType::Regular);
    builder.append_data(&mut header, path, bytes)
}

fn append_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut header = header(mode, 0, tar::EntryType::Directory);
    builder.append_data(&mut header, format!("{path}/"), std::io::empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007fd72426f000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fd72423e000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fd723a1e000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007fd724271000)\n";
        let libraries: Vec<String> = parse_ldd(text)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            libraries,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }

    /// A lock file of this test alone, removed when dropped.
    struct LockPath(PathBuf);

    impl LockPath {
        fn new(test: &str) -> Self {
            Self(std::env::temp_dir().join(format!(
                "switchyard-build-lock-test-{}-{test}",
                std::process::id()
            )))
        }
    }

    impl Drop for LockPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[tokio::test]
    async fn a_second_builder_waits_for_the_first_and_then_gets_the_lock() {
        let path = LockPath::new("waits");
        let first = BuildLock::acquire(&path.0, Duration::ZERO).await;
        assert!(first.is_some(), "a free lock is taken at once");
        let second = tokio::spawn({
            let path = path.0.clone();
            async move { BuildLock::acquire(&path, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second waits while the first holds the lock"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second gets the lock soon after the first lets go")
            .unwrap();
        assert!(second.is_some());
    }

    #[tokio::test]
    async fn a_builder_that_waited_its_limit_goes_on_without_the_lock() {
        let path = LockPath::new("limit");
        let _first = BuildLock::acquire(&path.0, Duration::ZERO).await.unwrap();
        let started = std::time::Instant::now();
        let second = BuildLock::acquire(&path.0, Duration::from_millis(200)).await;
        assert!(second.is_none(), "the holder kept it, so the wait ran out");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_lock_file_that_cannot_be_opened_means_no_lock_and_no_wait() {
        let path = std::env::temp_dir()
            .join(format!("switchyard-no-such-folder-{}", std::process::id()))
            .join("lock");
        let started = std::time::Instant::now();
        assert!(
            BuildLock::acquire(&path, Duration::from_secs(30))
                .await
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_worker_runs_as_nobody_on_a_scratch_image() {
        let text = dockerfile("libonnxruntime.so.1.32.0");
        assert!(text.starts_with("FROM scratch\n"));
        assert!(text.contains("USER 65534:65534"));
        assert!(text.contains("ORT_DYLIB_PATH=/switchyard/lib/libonnxruntime.so.1.32.0"));
    }
}
