//! The Docker engine as the backend sees it: connecting (Unix socket, TCP,
//! TCP + TLS) at a fixed API version, the `io.switchyard.*` labels that mark
//! what a gateway owns, and removal of containers by label (orphans of a
//! crashed gateway at start, everything of this gateway at shutdown).

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveContainerOptions};
use bollard::{ClientVersion, Docker};

use crate::config::{ContainerConfig, Endpoint};

/// The API version spoken: Docker 20.10's, which every later engine still
/// accepts. Pinning it (rather than bollard's newer default) keeps request
/// and response shapes the same on every engine this runs against.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Present (`"true"`) on every image and container Switchyard makes.
pub const LABEL_MANAGED: &str = "io.switchyard.managed";
/// The gateway instance that started a container (random per start).
pub const LABEL_INSTANCE: &str = "io.switchyard.instance";
/// The configured scope; orphan clean-up looks only within it.
pub const LABEL_SCOPE: &str = "io.switchyard.scope";
/// The backend name.
pub const LABEL_BACKEND: &str = "io.switchyard.backend";
/// Host name and process id of the gateway, so that a live gateway in
/// another process is never taken for a crashed one.
pub const LABEL_HOST: &str = "io.switchyard.host";
pub const LABEL_PID: &str = "io.switchyard.pid";
/// On images: the content hash (also the tag) and the models inside.
pub const LABEL_CONTENT: &str = "io.switchyard.content-hash";
pub const LABEL_MODELS: &str = "io.switchyard.models";

/// A Docker API failure, with what was being done. The message carries the
/// error's whole chain of causes (so `source()` gives none): for a failed
/// connection bollard's own text is only "client error (SendRequest)", and
/// why (a refused connection, a TLS certificate the engine or the gateway
/// did not accept) is further down.
#[derive(Debug)]
pub struct EngineError {
    pub action: String,
    pub source: bollard::errors::Error,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cause = switchyard_backends::error_chain(&self.source);
        write!(f, "{}: {cause}", self.action)
    }
}

impl std::error::Error for EngineError {}

impl EngineError {
    pub fn new(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self { action, source }
    }

    /// Whether the engine answered "no such object" (404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.source,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        )
    }
}

/// Connects to the engine and checks that it answers.
pub async fn connect(config: &ContainerConfig) -> Result<Docker, EngineError> {
    let timeout = config.api_timeout.as_secs().max(1);
    let docker = match &config.endpoint {
        Endpoint::Unix(path) => {
            Docker::connect_with_unix(&path.to_string_lossy(), timeout, &API_VERSION)
        }
        Endpoint::Tcp(address) => Docker::connect_with_http(address, timeout, &API_VERSION),
        Endpoint::Tls {
            address,
            ca,
            cert,
            key,
        } => Docker::connect_with_ssl(address, key, cert, ca, timeout, &API_VERSION)
            .map_err(redact_tls_paths),
    }
    .map_err(EngineError::new(format!(
        "cannot connect to {}",
        config.endpoint
    )))?;
    docker.ping().await.map_err(EngineError::new(format!(
        "{} does not answer",
        config.endpoint
    )))?;
    Ok(docker)
}

/// bollard names the file in its certificate errors; the paths of the TLS
/// files (the client key's above all) stay out of errors and so out of logs.
fn redact_tls_paths(error: bollard::errors::Error) -> bollard::errors::Error {
    use bollard::errors::Error;
    let message = match &error {
        Error::CertPathError { .. } => "cannot open or read one of the TLS files".to_owned(),
        Error::CertMultipleKeys { count, .. } => {
            format!("the TLS key file holds {count} keys; it must hold one")
        }
        Error::CertParseError { .. } => "cannot parse the TLS key file".to_owned(),
        _ => return error,
    };
    Error::IOError {
        err: std::io::Error::other(format!("{message} (backends.container.tls: ca, cert, key)")),
    }
}

/// Who this gateway is, as written into labels.
#[derive(Debug, Clone)]
pub struct Identity {
    pub instance: String,
    pub scope: String,
    pub backend: String,
    pub host: String,
    pub pid: u32,
}

impl Identity {
    pub fn new(config: &ContainerConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Self {
            instance: format!("{:016x}", fastrand::u64(..)),
            scope: config.scope.clone(),
            backend: config.name.clone(),
            host,
            pid: std::process::id(),
        }
    }

    /// The labels put on each container this gateway starts.
    pub fn container_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_INSTANCE.to_owned(), self.instance.clone()),
            (LABEL_SCOPE.to_owned(), self.scope.clone()),
            (LABEL_BACKEND.to_owned(), self.backend.clone()),
            (LABEL_HOST.to_owned(), self.host.clone()),
            (LABEL_PID.to_owned(), self.pid.to_string()),
        ])
    }

    /// Whether a container with these labels belongs to a gateway that is
    /// gone: another instance, and not a live process on this host.
    fn is_orphan(&self, labels: &HashMap<String, String>) -> bool {
        let Some(instance) = labels.get(LABEL_INSTANCE) else {
            return true;
        };
        if *instance == self.instance {
            return false;
        }
        let same_host = labels.get(LABEL_HOST).is_some_and(|h| *h == self.host);
        let pid = labels.get(LABEL_PID).and_then(|p| p.parse::<u32>().ok());
        match pid {
            // A gateway earlier in this very process (dropped without a
            // shutdown): gone.
            Some(pid) if same_host && pid == self.pid => true,
            Some(pid) if same_host => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            // Another host: it can only be judged by scope, which the
            // configuration makes unique per gateway.
            _ => true,
        }
    }
}

/// Containers (running or not) with all the given labels.
pub async fn list_labelled(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(EngineError::new("cannot list containers"))
}

/// Images (top-level: no intermediate build layers) matching every filter,
/// given as the engine's `(name, value)` pairs; a name may repeat, as
/// `label` does for several labels.
pub async fn list_images(
    docker: &Docker,
    filters: &[(&str, &str)],
) -> Result<Vec<bollard::models::ImageSummary>, EngineError> {
    let mut grouped: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in filters {
        grouped
            .entry((*name).to_owned())
            .or_default()
            .push((*value).to_owned());
    }
    docker
        .list_images(Some(ListImagesOptions {
            filters: Some(grouped),
            ..Default::default()
        }))
        .await
        .map_err(EngineError::new("cannot list images"))
}

/// Removes a container, running or not; one already gone is not an error.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    match docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(EngineError::new(format!("cannot remove container {id}")))
    {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Removes the containers of this scope left by gateways that are gone.
/// Returns how many were removed.
pub async fn remove_orphans(docker: &Docker, identity: &Identity) -> Result<usize, EngineError> {
    let containers = list_labelled(
        docker,
        &[(LABEL_MANAGED, "true"), (LABEL_SCOPE, &identity.scope)],
    )
    .await?;
    let mut removed = 0;
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let Some(id) = container.id else { continue };
        if identity.is_orphan(&labels) {
            remove(docker, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every container of this gateway instance (at shutdown).
pub async fn remove_instance(docker: &Docker, identity: &Identity) -> Result<usize, EngineError> {
    let containers = list_labelled(
        docker,
        &[
            (LABEL_MANAGED, "true"),
            (LABEL_INSTANCE, &identity.instance),
        ],
    )
    .await?;
    let ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
    let results = futures_util::future::join_all(ids.iter().map(|id| remove(docker, id))).await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_file_errors_do_not_name_the_files() {
        let secret = std::path::PathBuf::from("/run/secrets/docker-client-key.pem");
        for error in [
            bollard::errors::Error::CertPathError {
                path: secret.clone(),
            },
            bollard::errors::Error::CertMultipleKeys {
                count: 2,
                path: secret.clone(),
            },
            bollard::errors::Error::CertParseError {
                path: secret.clone(),
            },
        ] {
            let shown = redact_tls_paths(error).to_string();
            assert!(!shown.contains("secrets"), "{shown}");
            assert!(shown.contains("backends.container.tls"), "{shown}");
        }
        // The real connection attempt reads the files at once.
        let Err(error) =
            Docker::connect_with_ssl("127.0.0.1:1", &secret, &secret, &secret, 1, &API_VERSION)
                .map_err(redact_tls_paths)
        else {
            panic!("the files do not exist")
        };
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("secrets"), "{shown}");
    }

    fn identity() -> Identity {
        Identity {
            instance: "me".into(),
            scope: "s".into(),
            backend: "container".into(),
            host: "h".into(),
            pid: std::process::id(),
        }
    }

    fn labels(instance: &str, host: &str, pid: u32) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.to_owned(), instance.to_owned()),
            (LABEL_HOST.to_owned(), host.to_owned()),
            (LABEL_PID.to_owned(), pid.to_string()),
        ])
    }

    #[test]
    fn orphans() {
        let me = identity();
        // Ours: never.
        assert!(!me.is_orphan(&labels("me", "h", me.pid)));
        // An earlier instance in this process: yes.
        assert!(me.is_orphan(&labels("old", "h", me.pid)));
        // A live process on this host (pid 1 always exists): no.
        assert!(!me.is_orphan(&labels("other", "h", 1)));
        // A dead process on this host: yes.
        assert!(me.is_orphan(&labels("other", "h", u32::MAX)));
        // Another host in the same scope: yes.
        assert!(me.is_orphan(&labels("other", "elsewhere", 1)));
    }
}
