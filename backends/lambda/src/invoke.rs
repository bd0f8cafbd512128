//! One call of the Lambda Invoke API (`RequestResponse`) and what its
//! answer means. Real Lambda and the local emulator differ (see
//! `DESIGN.md`); both are understood:
//!
//! - success: 200 with the function's response;
//! - a function error: real Lambda answers 200 with `X-Amz-Function-Error`,
//!   the emulator 500 with the error JSON and no header;
//! - throttling: 429 `TooManyRequestsException` (real Lambda only: the
//!   emulator queues instead);
//! - service errors: other statuses with `x-amzn-ErrorType` and a message.
//!
//! No retries here: the gateway's placement and failover decide what to do.

use std::time::Duration;

use crate::sign::Signer;

/// What one Invoke call produced.
#[derive(Debug)]
pub enum InvokeOutcome {
    /// The function ran and returned this payload.
    Response(Vec<u8>),
    /// The function ran and failed (`Handled`/`Unhandled` on real Lambda).
    FunctionError {
        kind: String,
        error_type: String,
        message: String,
    },
    /// Lambda refused: the function's or account's concurrency is used up.
    Throttled { reason: String },
    /// The call took longer than it was allowed.
    TimedOut,
    /// The Invoke API could not be reached (refused, reset, DNS).
    Unreachable { cause: String },
    /// The service answered with an error status.
    ServiceError {
        status: u16,
        error_type: String,
        message: String,
    },
}

/// Sends Invoke calls to one function.
#[derive(Debug, Clone)]
pub struct Invoker {
    client: reqwest::Client,
    url: String,
    signer: Option<Signer>,
}

impl Invoker {
    /// An invoker for `url`; requests are signed when `signer` is set.
    pub fn new(
        url: String,
        signer: Option<Signer>,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            url,
            signer,
        })
    }

    /// Whether requests are signed.
    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The Invoke URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Invokes the function with `payload`, waiting at most `timeout`.
    pub async fn invoke(
        &self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<InvokeOutcome, String> {
        let headers = [
            ("content-type", "application/json"),
            ("x-amz-invocation-type", "RequestResponse"),
            ("x-amz-log-type", "None"),
        ];
        let mut request = self.client.post(&self.url).timeout(timeout);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(signer) = &self.signer {
            for (name, value) in signer.sign(&self.url, &headers, &payload)? {
                request = request.header(name, value);
            }
        }
        let response = match request.body(payload).send().await {
            Ok(response) => response,
            Err(error) => return Ok(transport_outcome(&error)),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let function_error = header("x-amz-function-error");
        let aws_error_type = header("x-amzn-errortype");
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(error) => return Ok(transport_outcome(&error)),
        };
        Ok(classify(status, function_error, aws_error_type, body))
    }
}

fn transport_outcome(error: &reqwest::Error) -> InvokeOutcome {
    if error.is_timeout() {
        return InvokeOutcome::TimedOut;
    }
    // The full cause chain: reqwest's top-level message alone is vague.
    InvokeOutcome::Unreachable {
        cause: switchyard_backends::error_chain(error),
    }
}

/// The fields Lambda and the emulator use in error bodies.
#[derive(Debug, Default, serde::Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(rename = "errorMessage", default)]
    error_message: Option<String>,
    #[serde(rename = "Type", alias = "__type", default)]
    aws_type: Option<String>,
    #[serde(rename = "message", alias = "Message", default)]
    message: Option<String>,
    #[serde(rename = "Reason", default)]
    reason: Option<String>,
}

/// What an Invoke answer means, from its status, its two error headers and
/// its body.
pub fn classify(
    status: u16,
    function_error: Option<String>,
    aws_error_type: Option<String>,
    body: Vec<u8>,
) -> InvokeOutcome {
    let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
    let text = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(500)
            .collect::<String>()
    };
    let function_failure = |kind: String, parsed: Option<ErrorBody>| {
        let parsed = parsed.unwrap_or_default();
        InvokeOutcome::FunctionError {
            kind,
            error_type: parsed.error_type.unwrap_or_else(|| "Unknown".into()),
            message: parsed.error_message.unwrap_or_else(text),
        }
    };
    if let Some(kind) = function_error {
        return function_failure(kind, parsed);
    }
    if status == 200 {
        return InvokeOutcome::Response(body);
    }
    // The emulator reports a function error as a bare 500 with the
    // function's error JSON; the service's own 500s carry x-amzn-ErrorType.
    if status == 500
        && aws_error_type.is_none()
        && parsed.as_ref().is_some_and(|p| p.error_type.is_some())
    {
        return function_failure("Unhandled".into(), parsed);
    }
    let parsed = parsed.unwrap_or_default();
    let error_type = aws_error_type
        .map(|t| t.split(':').next().unwrap_or_default().to_owned())
        .or(parsed.aws_type)
        .or(parsed.error_type)
        .unwrap_or_else(|| format!("HTTP {status}"));
    let mut message = parsed.message.or(parsed.error_message).unwrap_or_else(text);
    if let Some(reason) = parsed.reason {
        message = format!("{message} (Reason: {reason})");
    }
    match status {
        429 => InvokeOutcome::Throttled {
            reason: format!("{error_type}: {message}"),
        },
        // The emulator's `--timeout` answers a call that waited too long.
        408 => InvokeOutcome::TimedOut,
        _ => InvokeOutcome::ServiceError {
            status,
            error_type,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoker_never_prints_its_credentials() {
        let signer = Signer::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-secret".into()),
            "eu-west-1",
        );
        let invoker = Invoker::new(
            "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/f/invocations".into(),
            Some(signer),
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{invoker:?}");
        assert!(invoker.is_signed());
        for secret in ["wJalr", "EXAMPLEKEY", "session-token-secret", "AKIDEX"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn real_lambda_function_errors_come_with_the_header() {
        let body = br#"{"errorType":"Switchyard.ModelNotServed","errorMessage":"no"}"#.to_vec();
        let outcome = classify(200, Some("Unhandled".into()), None, body);
        assert!(
            matches!(&outcome, InvokeOutcome::FunctionError { kind, error_type, message }
                if kind == "Unhandled" && error_type == "Switchyard.ModelNotServed" && message == "no"),
            "{outcome:?}"
        );
    }

    #[test]
    fn emulator_function_errors_are_a_bare_500() {
        let body = br#"{"errorType":"Switchyard.InferenceFailed","errorMessage":"boom"}"#.to_vec();
        let outcome = classify(500, None, None, body);
        assert!(
            matches!(&outcome, InvokeOutcome::FunctionError { error_type, .. } if error_type == "Switchyard.InferenceFailed"),
            "{outcome:?}"
        );
        // A service 500 is not a function error.
        let outcome = classify(
            500,
            None,
            Some("ServiceException:http://internal".into()),
            br#"{"Message":"internal"}"#.to_vec(),
        );
        assert!(
            matches!(&outcome, InvokeOutcome::ServiceError { status: 500, error_type, .. } if error_type == "ServiceException"),
            "{outcome:?}"
        );
    }

    #[test]
    fn throttles_name_the_reason() {
        let body = br#"{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#.to_vec();
        let outcome = classify(429, None, Some("TooManyRequestsException".into()), body);
        let InvokeOutcome::Throttled { reason } = outcome else {
            unreachable!("{outcome:?}")
        };
        assert_eq!(
            reason,
            "TooManyRequestsException: Rate Exceeded. (Reason: ReservedFunctionConcurrentInvocationLimitExceeded)"
        );
    }
}
