//! What a run sends its load to: a loopback (unless allowed otherwise) HTTP
//! endpoint, the models on it (a payload mix), and the pre-encoded request
//! bodies for each.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use http_body_util::BodyExt;
use switchyard_protocol::{BINARY_HEADER_LENGTH, ModelMetadata};

use crate::LoadgenError;
use crate::client::{HttpClient, origin_form, wire_request};
use crate::mix::{Chooser, MixSpec};
use crate::payload::{PayloadSpec, RequestBody, build_bodies};

/// How long fetching a model's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's base URL: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: Authority,
    /// Path prefix without a trailing slash (often empty).
    prefix: String,
}

impl Endpoint {
    /// Parses a base URL. Only `http` is supported, and only loopback hosts
    /// (`localhost`, `127.0.0.0/8`, `::1`) unless `allow_remote` is set:
    /// an accidental load test against someone else's server is not a
    /// mistake to make easy.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, LoadgenError> {
        let invalid = |reason: &str| LoadgenError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => {}
            Some(_) => return Err(invalid("only http:// is supported")),
            None => return Err(invalid("write the scheme, e.g. http://127.0.0.1:8000")),
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL takes no query"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let host = authority.host();
        if !allow_remote && !is_loopback(host) {
            return Err(LoadgenError::RemoteRefused {
                host: host.to_owned(),
            });
        }
        Ok(Self {
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URI of `path` (which starts with `/`) on this endpoint.
    pub fn uri(&self, path: &str) -> Result<Uri, LoadgenError> {
        let path_and_query = format!("{}{path}", self.prefix);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|e| LoadgenError::InvalidUrl {
                url: format!("http://{}{path_and_query}", self.authority),
                reason: e.to_string(),
            })
    }

    /// The base URL as given (normalised).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }
}

/// Whether `host` names this machine without a DNS lookup.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Model names go into URL paths unescaped, so they are checked.
fn check_model_name(model: &str) -> Result<(), LoadgenError> {
    let ok = !model.is_empty()
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LoadgenError::ModelName(model.to_owned()))
    }
}

/// One kind of request a run sends: a route, the bodies for it (cycled in
/// order) and its weight in the mix.
#[derive(Debug, Clone)]
pub struct TargetEntry {
    /// The model, or the probed path.
    pub model: String,
    /// Rows per request.
    pub batch: u64,
    pub weight: f64,
    pub method: Method,
    /// The model's `infer` route (or the probed path).
    pub uri: Uri,
    /// Host and port, and the path for the request line.
    pub authority: Authority,
    pub origin: Uri,
    pub bodies: Vec<RequestBody>,
    /// Each body's whole request (head and body), serialised once.
    pub wire: Vec<Bytes>,
}

impl TargetEntry {
    /// An entry for `method uri` with these bodies.
    pub fn new(
        model: &str,
        batch: u64,
        weight: f64,
        method: Method,
        uri: Uri,
        bodies: Vec<RequestBody>,
    ) -> Result<Self, LoadgenError> {
        let invalid = |reason: &str| LoadgenError::InvalidUrl {
            url: uri.to_string(),
            reason: reason.to_owned(),
        };
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        let origin = origin_form(&uri).ok_or_else(|| invalid("no path"))?;
        let wire = bodies
            .iter()
            .map(|body| {
                wire_request(
                    &method,
                    &origin,
                    authority.as_str(),
                    body,
                    BINARY_HEADER_LENGTH,
                )
            })
            .collect();
        Ok(Self {
            model: model.to_owned(),
            batch,
            weight,
            method,
            uri,
            authority,
            origin,
            bodies,
            wire,
        })
    }

    fn slot(&self, index: u64) -> usize {
        usize::try_from(index % self.bodies.len().max(1) as u64).unwrap_or(0)
    }

    /// Body number `index` (cycling).
    pub fn body(&self, index: u64) -> &RequestBody {
        &self.bodies[self.slot(index)]
    }

    /// The serialised request of body number `index`.
    pub fn wire(&self, index: u64) -> &[u8] {
        &self.wire[self.slot(index)]
    }

    /// `model batch N`, the entry's name in reports.
    pub fn label(&self) -> String {
        format!("{} batch {}", self.model, self.batch)
    }
}

/// What a run sends its requests to: an endpoint and a payload mix of one
/// or more entries with their pre-encoded bodies; or, for a baseline, a
/// bodiless `GET` of some route ([`Target::probe`]).
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    pub entries: Vec<TargetEntry>,
    chooser: Chooser,
}

impl Target {
    /// One model with bodies the caller built.
    pub fn new(
        endpoint: Endpoint,
        model: &str,
        bodies: Vec<RequestBody>,
    ) -> Result<Self, LoadgenError> {
        let batch = bodies.first().map_or(1, |b| b.rows);
        let entry = Self::entry(&endpoint, model, batch, 1.0, bodies)?;
        Self::from_entries(endpoint, vec![entry], 0)
    }

    /// A target with entries the caller built; `seed` seeds the choice of
    /// entry per request.
    pub fn from_entries(
        endpoint: Endpoint,
        entries: Vec<TargetEntry>,
        seed: u64,
    ) -> Result<Self, LoadgenError> {
        if entries.is_empty() {
            return Err(LoadgenError::Settings(
                "a target needs at least one kind of request".into(),
            ));
        }
        let weights: Vec<f64> = entries.iter().map(|e| e.weight).collect();
        Ok(Self {
            endpoint,
            entries,
            chooser: Chooser::new(&weights, seed),
        })
    }

    /// The `infer` entry of `model` with these bodies.
    pub fn entry(
        endpoint: &Endpoint,
        model: &str,
        batch: u64,
        weight: f64,
        bodies: Vec<RequestBody>,
    ) -> Result<TargetEntry, LoadgenError> {
        check_model_name(model)?;
        if bodies.is_empty() {
            return Err(LoadgenError::Payload {
                model: model.to_owned(),
                reason: "no request bodies".into(),
            });
        }
        TargetEntry::new(
            model,
            batch,
            weight,
            Method::POST,
            endpoint.uri(&format!("/v2/models/{model}/infer"))?,
            bodies,
        )
    }

    /// `GET path` with no body, e.g. `/v2/health/live`: the HTTP round
    /// trip alone, a floor to hold inference latencies against.
    pub fn probe(endpoint: Endpoint, path: &str) -> Result<Self, LoadgenError> {
        let entry = TargetEntry::new(
            path,
            1,
            1.0,
            Method::GET,
            endpoint.uri(path)?,
            vec![RequestBody {
                bytes: bytes::Bytes::new(),
                json_length: None,
                rows: 1,
                binary_output: false,
            }],
        )?;
        Self::from_entries(endpoint, vec![entry], 0)
    }

    /// Fetches the model's metadata and builds random bodies for it, with
    /// `payload.batch_size` rows each.
    pub async fn prepare(
        client: &HttpClient,
        endpoint: Endpoint,
        model: &str,
        payload: &PayloadSpec,
    ) -> Result<Self, LoadgenError> {
        let mix = MixSpec::single(model, payload.batch_size)?;
        Self::prepare_mix(client, endpoint, &mix, payload).await
    }

    /// Fetches each model's metadata once and builds the bodies of every
    /// mix entry (its own batch size; `payload.batch_size` is not used).
    /// Entry `i`'s random values come from `payload.seed + i`.
    pub async fn prepare_mix(
        client: &HttpClient,
        endpoint: Endpoint,
        mix: &MixSpec,
        payload: &PayloadSpec,
    ) -> Result<Self, LoadgenError> {
        let mut metadata = Vec::new();
        for model in mix.models() {
            metadata.push((model, fetch_metadata(client, &endpoint, model).await?));
        }
        let mut entries = Vec::with_capacity(mix.entries().len());
        for (i, spec) in mix.entries().iter().enumerate() {
            let inputs = metadata
                .iter()
                .find(|(model, _)| *model == spec.model)
                .map(|(_, m)| m.inputs.as_slice())
                .unwrap_or_default();
            let entry_payload = PayloadSpec {
                batch_size: spec.batch,
                seed: payload.seed.wrapping_add(i as u64),
                ..payload.clone()
            };
            let bodies =
                build_bodies(inputs, &entry_payload).map_err(|reason| LoadgenError::Payload {
                    model: spec.model.clone(),
                    reason,
                })?;
            entries.push(Self::entry(
                &endpoint,
                &spec.model,
                spec.batch,
                spec.weight,
                bodies,
            )?);
        }
        Self::from_entries(endpoint, entries, payload.seed)
    }

    /// Which entry request number `index` uses.
    pub fn choose(&self, index: u64) -> usize {
        self.chooser.choose(index)
    }

    /// The models, in order of first appearance, joined with `+`.
    pub fn models(&self) -> String {
        let mut models: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !models.contains(&entry.model.as_str()) {
                models.push(&entry.model);
            }
        }
        models.join("+")
    }
}

/// `GET /v2/models/{model}`.
pub async fn fetch_metadata(
    client: &HttpClient,
    endpoint: &Endpoint,
    model: &str,
) -> Result<ModelMetadata, LoadgenError> {
    check_model_name(model)?;
    let uri = endpoint.uri(&format!("/v2/models/{model}"))?;
    let failed = |reason: String| LoadgenError::Metadata {
        model: model.to_owned(),
        url: uri.to_string(),
        reason,
    };
    let exchange = async {
        let response = client
            .get(uri.clone())
            .await
            .map_err(|e| failed(format!("{e} (is the server running?{})", source_chain(&e))))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice::<ModelMetadata>(&body).map_err(|e| failed(e.to_string()))
    };
    tokio::time::timeout(METADATA_TIMEOUT, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {METADATA_TIMEOUT:?}")))?
}

/// The causes of an error, for a one-line message.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted() {
        for url in [
            "http://127.0.0.1:8000",
            "http://127.5.6.7:1/",
            "http://localhost:9000",
            "http://LOCALHOST",
            "http://[::1]:8000",
        ] {
            assert!(Endpoint::parse(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn non_loopback_hosts_are_refused_unless_allowed() {
        for url in [
            "http://10.0.0.1:8000",
            "http://192.168.1.2",
            "http://example.com:80",
            "http://[2001:db8::1]:80",
            "http://0.0.0.0:8000",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(url, false),
                    Err(LoadgenError::RemoteRefused { .. })
                ),
                "{url}"
            );
            assert!(Endpoint::parse(url, true).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_plain_http_base_urls() {
        for url in [
            "https://127.0.0.1:8000",
            "127.0.0.1:8000",
            "http://127.0.0.1:8000/?x=1",
            "http://user@127.0.0.1:8000",
            "not a url",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(url, true),
                    Err(LoadgenError::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn paths_join_the_prefix() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8000/gw/", false).unwrap();
        assert_eq!(
            endpoint.uri("/v2/models/m").unwrap().to_string(),
            "http://127.0.0.1:8000/gw/v2/models/m"
        );
        assert_eq!(endpoint.base_url(), "http://127.0.0.1:8000/gw");
    }

    #[test]
    fn model_names_are_checked() {
        let endpoint = Endpoint::parse("http://127.0.0.1:1", false).unwrap();
        let body = RequestBody {
            bytes: bytes::Bytes::from_static(b"{}"),
            json_length: None,
            rows: 1,
            binary_output: false,
        };
        assert!(Target::new(endpoint.clone(), "fashion_cnn-v1.2", vec![body.clone()]).is_ok());
        for bad in ["", "a/b", "a b", "m?x"] {
            assert!(Target::new(endpoint.clone(), bad, vec![body.clone()]).is_err());
        }
        assert!(Target::new(endpoint, "m", vec![]).is_err());
    }
}
