//! Error messages with their causes. HTTP client errors say little at the
//! top ("client error (SendRequest)", "error sending request"); why it
//! failed (a refused connection, a certificate the peer did not accept) is
//! in the source chain, and operators need it in logs and stats.

use std::error::Error;

/// `error`'s message followed by each cause's, joined by ": ". A cause
/// whose text the message before it already holds is left out, so errors
/// that repeat their source in their own message do not print it twice.
pub fn error_chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut previous = message.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !previous.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        previous = text;
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn every_cause_is_in_the_message_once() {
        let error = Layer(
            "client error (Connect)",
            Some(Box::new(Layer(
                "tls handshake: invalid peer certificate: UnknownIssuer",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "client error (Connect): tls handshake: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
