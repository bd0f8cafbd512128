//! Helpers shared by the gateway's integration tests: the repository root,
//! and a small HTTP client whose replies are read as v2 JSON, errors and
//! tensors; [`server`] runs a gateway on port 0 and speaks raw HTTP/1.1 to
//! it. Each test binary uses part of it.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, InferRequest, Tensor, TensorData, decode_response,
};

/// The workspace root (where `models/` and `config/` are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `switchyard` binary serving on a free loopback port with a config
/// file of `[models] repository` (this workspace's) followed by `sections`,
/// its output discarded. The process is killed when this is dropped, and
/// the config file removed.
pub struct BinaryGateway {
    pub port: u16,
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Writes `gateway.toml` in `dir`: `[models] repository` (this workspace's)
/// followed by `sections`. Returns its path.
pub fn write_config(dir: &std::path::Path, sections: &str) -> PathBuf {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[models]\nrepository = {:?}\n{sections}",
            workspace().join("models/repository").display().to_string()
        ),
    )
    .expect("config");
    config
}

impl BinaryGateway {
    pub fn spawn(sections: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), sections);
        let port = switchyard_backend_lambda::emulator::free_port().expect("a free port");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(workspace())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the gateway starts");
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for BinaryGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole HTTP response.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub took: Duration,
}

impl Reply {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The outputs of a successful v2 inference response.
    pub fn outputs(&self) -> Vec<Tensor> {
        assert_eq!(self.status, 200, "{}", self.text());
        decode_response(&self.body, self.header(BINARY_HEADER_LENGTH))
            .expect("a v2 response")
            .outputs
    }
}

/// Sends one request and reads the whole response; a server that does not
/// answer within 60 s fails the test instead of hanging it.
pub async fn send(method: &str, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let started = Instant::now();
    let exchange = async {
        let response = client
            .request(request.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, body)
    };
    let (status, headers, body) = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {url} hung for 60 s"));
    Reply {
        status,
        headers,
        body,
        took: started.elapsed(),
    }
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], Vec::new()).await
}

/// A request with one FP32 input named `input` of `shape`, element `i`
/// being `fill(i)`.
pub fn fp32_request(shape: Vec<u64>, fill: impl Fn(usize) -> f32) -> InferRequest {
    let len = shape.iter().product::<u64>() as usize;
    InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape,
            data: TensorData::Fp32((0..len).map(fill).collect()),
        }],
        ..InferRequest::default()
    }
}

/// A gateway started in-process from a config text (`run()` on a free
/// loopback port), stopped and drained when dropped or by [`Running::stop`].
pub struct Running {
    pub address: std::net::SocketAddr,
    pub gateway: std::sync::Arc<switchyard_scheduler::Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Starts every backend the config enables.
    pub async fn start(config: &str) -> Self {
        let config = switchyard_scheduler::Config::parse(config, "(test)", &workspace())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let gateway = std::sync::Arc::new(
            switchyard_scheduler::Gateway::start(&config)
                .await
                .unwrap_or_else(|e| panic!("gateway starts: {e}")),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_scheduler::run(
            listener,
            std::sync::Arc::clone(&gateway),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            gateway,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops accepting, drains, and releases the backends.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
        self.gateway.shutdown().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
