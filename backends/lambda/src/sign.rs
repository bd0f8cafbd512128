//! AWS Signature Version 4 for Invoke requests, with credentials from the
//! standard environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`). Uses the
//! `aws-sigv4` crate rather than the whole SDK, which takes minutes to
//! compile. Secrets never reach a log: [`Signer`]'s `Debug` shows only the
//! access key's last characters.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// Signs requests for one region with one set of credentials.
#[derive(Clone)]
pub struct Signer {
    identity: Identity,
    access_key_hint: String,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key", &self.access_key_hint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Credentials from the environment, `None` when they are not set.
    pub fn from_env(region: &str) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key = var("AWS_ACCESS_KEY_ID")?;
        let secret = var("AWS_SECRET_ACCESS_KEY")?;
        Some(Self::new(
            &access_key,
            &secret,
            var("AWS_SESSION_TOKEN"),
            region,
        ))
    }

    /// Signs with the given keys.
    pub fn new(
        access_key: &str,
        secret: &str,
        session_token: Option<String>,
        region: &str,
    ) -> Self {
        let tail: String = access_key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let credentials = Credentials::new(access_key, secret, session_token, None, "environment");
        Self {
            identity: credentials.into(),
            access_key_hint: format!("…{tail}"),
            region: region.to_owned(),
        }
    }

    /// The headers to add to a `POST url` with `headers` and `body` so that
    /// the Lambda service accepts it.
    pub fn sign(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signs_with_an_authorization_header_and_hides_the_secret() {
        let signer = Signer::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("token".into()),
            "eu-west-1",
        );
        let headers = signer
            .sign(
                "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/f/invocations",
                &[("content-type", "application/json")],
                b"{}",
            )
            .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let authorization = get("authorization");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authorization}"
        );
        assert!(authorization.contains("/eu-west-1/lambda/aws4_request"));
        assert_eq!(get("x-amz-security-token"), "token");
        assert!(!get("x-amz-date").is_empty());
        let debug = format!("{signer:?}");
        assert!(
            !debug.contains("wJalr") && !debug.contains("AKIDEX"),
            "{debug}"
        );
    }
}
