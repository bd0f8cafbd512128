//! `switchyard-lambda`: the Lambda function binary (`bootstrap` in a
//! package). Init loads the models once, before the first event; then the
//! Lambda Runtime API loop hands each event to [`Function::handle`].
//! Inference runs inline: an instance handles one event at a time, so
//! there is nothing else for the runtime thread to do meanwhile.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use switchyard_lambda_function::{
    Function, FunctionSettings, HandlerError, InvokeEvent, InvokeResponse,
};

/// A handler error as Lambda reports it (`errorType`, `errorMessage`).
#[derive(Debug)]
struct FunctionError(HandlerError);

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Self {
        Diagnostic {
            error_type: error.0.error_type().to_owned(),
            error_message: error.0.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    let settings = FunctionSettings::from_env();
    let function = match Function::load(&settings, started) {
        Ok(function) => Arc::new(function),
        Err(error) => {
            // Lambda reports a failed init as `Runtime.ExitError` with this log.
            tracing::error!(%error, repository = %settings.repository.display(), "init failed");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(models = ?function.loaded(), init_ms = started.elapsed().as_secs_f64() * 1000.0, "init done");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let handler = service_fn(move |event: LambdaEvent<InvokeEvent>| {
        let function = Arc::clone(&function);
        async move {
            function
                .handle(&event.payload)
                .map_err(FunctionError)
                .map(|response: InvokeResponse| response)
        }
    });
    match runtime.block_on(lambda_runtime::run(handler)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the Lambda runtime loop stopped");
            ExitCode::FAILURE
        }
    }
}
