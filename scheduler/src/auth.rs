//! Optional bearer-token authentication (RFC 6750) for the gateway's HTTP
//! API: one token for the inference API, another for the admin endpoints.
//!
//! Every path falls into one [`Access`] class. Health checks stay open so
//! that probes need no secret; the admin class (reload, stats, repository
//! index, metrics) takes the admin token, or the inference token when no
//! admin token is configured, so it is never less protected than inference.
//! A class whose token is not configured is open.
//!
//! Tokens are kept only as SHA-256 digests and compared with
//! [`constant_time_eq`], so neither the time a comparison takes nor a
//! `Debug` print reveals them.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret bearer token, held as its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// The token whose secret is `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether `presented` is this token. Hashing first makes the
    /// comparison take the same time whatever the lengths; the digests are
    /// compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        constant_time_eq(&self.digest, &presented)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths (not on where they first differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The tokens the gateway requires; `None` leaves that class open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Required by the inference API: `/v2`, `/v2/models/...`.
    pub inference: Option<Token>,
    /// Required by the admin endpoints; the inference token stands in when
    /// this one is not set.
    pub admin: Option<Token>,
}

/// Which token a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/v2/health/*`: always open.
    Open,
    /// Server and model metadata, model readiness, inference, and any path
    /// that matches no route (so that probing reveals nothing).
    Inference,
    /// `/v2/switchyard/*` (reload, stats), `/v2/repository/*`, `/metrics`.
    Admin,
}

impl Access {
    /// The class of `path`, given the path segments after `/v2` the router
    /// sees (`None` when the path does not start with `/v2`). Classifying
    /// the router's own segments keeps `//v2//switchyard/stats` and the
    /// like in the class of the route they reach.
    pub fn of(path: &str, v2_segments: Option<&[&str]>) -> Access {
        if path == "/metrics" {
            return Access::Admin;
        }
        match v2_segments {
            Some(["health", ..]) => Access::Open,
            Some(["switchyard", ..] | ["repository", ..]) => Access::Admin,
            _ => Access::Inference,
        }
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this endpoint needs the {needed} token: send the header `Authorization: Bearer <token>`"
    )]
    Missing { needed: &'static str },
    #[error("the bearer token is not valid for this endpoint (it needs the {needed} token)")]
    Invalid { needed: &'static str },
    #[error("this endpoint needs the admin token; the inference token does not grant it")]
    InsufficientScope,
}

impl AuthError {
    /// The `WWW-Authenticate` challenge sent with the refusal.
    pub fn challenge(&self) -> &'static str {
        match self {
            AuthError::Missing { .. } => r#"Bearer realm="switchyard""#,
            AuthError::Invalid { .. } => r#"Bearer realm="switchyard", error="invalid_token""#,
            AuthError::InsufficientScope => {
                r#"Bearer realm="switchyard", error="insufficient_scope""#
            }
        }
    }

    /// 401, or 403 for a valid token of too small a scope.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::InsufficientScope => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

impl AuthConfig {
    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        self.inference.is_some() || self.admin.is_some()
    }

    /// Lets a request with `headers` through to a path of class `access`,
    /// or says why not.
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), AuthError> {
        let (required, needed) = match access {
            Access::Open => return Ok(()),
            Access::Inference => (self.inference.as_ref(), "inference"),
            Access::Admin => match &self.admin {
                Some(admin) => (Some(admin), "admin"),
                None => (self.inference.as_ref(), "inference"),
            },
        };
        let Some(required) = required else {
            return Ok(());
        };
        let presented = bearer_token(headers).ok_or(AuthError::Missing { needed })?;
        if required.matches(presented) {
            return Ok(());
        }
        let is_inference_token = self
            .inference
            .as_ref()
            .is_some_and(|t| t.matches(presented));
        if access == Access::Admin && self.admin.is_some() && is_inference_token {
            return Err(AuthError::InsufficientScope);
        }
        Err(AuthError::Invalid { needed })
    }
}

/// The token of a single `Authorization: Bearer <token>` header (scheme
/// case-insensitive); `None` when there is none, several, or another scheme.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let scheme = bytes.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = bytes.get(7..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const INFERENCE: &str = "inference-secret-0123456789";
    const ADMIN: &str = "admin-secret-0123456789abcdef";

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in authorization {
            map.append(
                AUTHORIZATION,
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    fn both() -> AuthConfig {
        AuthConfig {
            inference: Some(Token::new(INFERENCE)),
            admin: Some(Token::new(ADMIN)),
        }
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
    }

    #[test]
    fn tokens_match_only_their_secret_and_never_print_it() {
        let token = Token::new(INFERENCE);
        assert!(token.matches(INFERENCE.as_bytes()));
        assert!(!token.matches(b"inference-secret-012345678"));
        assert!(!token.matches(b""));
        let printed = format!("{token:?} {:?}", both());
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn paths_fall_in_the_class_of_the_route_they_reach() {
        let class = |path: &str| {
            let segments: Option<Vec<&str>> = path
                .strip_prefix("/v2")
                .map(|rest| rest.split('/').filter(|s| !s.is_empty()).collect());
            Access::of(path, segments.as_deref())
        };
        assert_eq!(class("/v2/health/live"), Access::Open);
        assert_eq!(class("/v2/health/ready"), Access::Open);
        assert_eq!(class("/v2//health//ready/"), Access::Open);
        assert_eq!(class("/v2"), Access::Inference);
        assert_eq!(class("/v2/models/digits/infer"), Access::Inference);
        assert_eq!(class("/v2/models/digits/ready"), Access::Inference);
        assert_eq!(class("/nowhere"), Access::Inference);
        assert_eq!(class("/metrics"), Access::Admin);
        assert_eq!(class("/v2/switchyard/reload"), Access::Admin);
        assert_eq!(class("/v2//switchyard/stats"), Access::Admin);
        assert_eq!(class("/v2/repository/index"), Access::Admin);
    }

    #[test]
    fn each_class_takes_its_own_token() {
        let auth = both();
        let bearer = |t: &str| headers(&[&format!("Bearer {t}")]);
        assert_eq!(auth.check(Access::Open, &HeaderMap::new()), Ok(()));
        assert_eq!(auth.check(Access::Inference, &bearer(INFERENCE)), Ok(()));
        assert_eq!(auth.check(Access::Admin, &bearer(ADMIN)), Ok(()));
        assert_eq!(
            auth.check(Access::Inference, &HeaderMap::new()),
            Err(AuthError::Missing {
                needed: "inference"
            })
        );
        assert_eq!(
            auth.check(Access::Inference, &bearer(ADMIN)),
            Err(AuthError::Invalid {
                needed: "inference"
            })
        );
        assert_eq!(
            auth.check(Access::Admin, &bearer(INFERENCE)),
            Err(AuthError::InsufficientScope)
        );
        assert_eq!(
            auth.check(Access::Admin, &bearer("guess")),
            Err(AuthError::Invalid { needed: "admin" })
        );
    }

    #[test]
    fn the_header_must_be_one_bearer_credential() {
        let auth = both();
        let check = |values: &[&str]| auth.check(Access::Inference, &headers(values));
        assert_eq!(check(&[&format!("bearer {INFERENCE}")]), Ok(()));
        assert_eq!(check(&[&format!("BEARER   {INFERENCE} ")]), Ok(()));
        let missing = Err(AuthError::Missing {
            needed: "inference",
        });
        assert_eq!(check(&[&format!("Basic {INFERENCE}")]), missing);
        assert_eq!(check(&["Bearer "]), missing);
        assert_eq!(check(&["Bearer"]), missing);
        assert_eq!(check(&[INFERENCE]), missing);
        assert_eq!(
            check(&[
                &format!("Bearer {INFERENCE}"),
                &format!("Bearer {INFERENCE}")
            ]),
            missing,
            "two credentials are ambiguous"
        );
    }

    #[test]
    fn admin_falls_back_to_the_inference_token_and_unset_classes_are_open() {
        let inference_only = AuthConfig {
            inference: Some(Token::new(INFERENCE)),
            admin: None,
        };
        assert_eq!(
            inference_only.check(Access::Admin, &HeaderMap::new()),
            Err(AuthError::Missing {
                needed: "inference"
            })
        );
        assert_eq!(
            inference_only.check(Access::Admin, &headers(&[&format!("Bearer {INFERENCE}")])),
            Ok(())
        );
        let admin_only = AuthConfig {
            inference: None,
            admin: Some(Token::new(ADMIN)),
        };
        assert_eq!(
            admin_only.check(Access::Inference, &HeaderMap::new()),
            Ok(())
        );
        assert!(admin_only.check(Access::Admin, &HeaderMap::new()).is_err());
        assert!(!AuthConfig::default().enabled());
        assert_eq!(
            AuthConfig::default().check(Access::Admin, &HeaderMap::new()),
            Ok(())
        );
    }

    #[test]
    fn refusals_carry_a_bearer_challenge() {
        for error in [
            AuthError::Missing { needed: "admin" },
            AuthError::Invalid { needed: "admin" },
            AuthError::InsufficientScope,
        ] {
            assert!(error.challenge().starts_with("Bearer realm="));
        }
        assert_eq!(
            AuthError::InsufficientScope.status(),
            http::StatusCode::FORBIDDEN
        );
        assert_eq!(
            AuthError::Missing { needed: "admin" }.status(),
            http::StatusCode::UNAUTHORIZED
        );
    }
}
