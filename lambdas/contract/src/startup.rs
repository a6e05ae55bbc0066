//! How every Lambda of the pipeline starts: its configuration is read once, and a bad one is one
//! JSON log line at error level naming the variable (what CloudWatch Logs shows and a query can
//! match) and exit code 1, never a multi-line report on stderr.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Runs `serve` with the configuration, or logs why there is none; the process's exit code.
/// Call it after the JSON tracing subscriber is installed.
pub async fn serve_or_report<C, E, S, F, R>(
    function: &str,
    config: Result<C, E>,
    serve: S,
) -> ExitCode
where
    E: Display,
    S: FnOnce(C) -> F,
    F: Future<Output = Result<(), R>>,
    R: Display,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid {function} configuration; the function cannot start");
            return ExitCode::FAILURE;
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}
