//! How every Lambda of the pipeline starts: logs are JSON lines on stdout, and its configuration
//! is read once; a bad one is one JSON log line at error level naming the variable (what
//! CloudWatch Logs shows and a query can match) and exit code 1, never a multi-line report on
//! stderr.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the JSON log subscriber on stdout, the level from `RUST_LOG` (default `info`).
/// [`start`] calls it; a Lambda without a configuration calls it first thing in `main`.
pub fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    json_logs(filter, std::io::stdout).init();
}

/// The log subscriber of every Lambda: one JSON object per line, without a timestamp (CloudWatch
/// Logs stamps each line), with the current span (the Lambda runtime's, which carries the request
/// id). Not the span list: the runtime's span is the only one, and writing it twice made each
/// line re-read its fields twice (docs/data-plane.md, *Cost*).
pub fn json_logs<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_span_list(false)
        .with_env_filter(filter)
        .without_time()
        .with_writer(writer)
        .finish()
}

/// How a Lambda with a configuration starts: installs the logs ([`init_logs`]), reads the
/// configuration and runs `serve` with it, or logs why there is none; the process's exit code.
pub async fn start<C, E, S, F, R>(
    function: &str,
    config: impl FnOnce() -> Result<C, E>,
    serve: S,
) -> ExitCode
where
    E: Display,
    S: FnOnce(C) -> F,
    F: Future<Output = Result<(), R>>,
    R: Display,
{
    init_logs();
    let config = match config() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::LogCapture;

    #[test]
    fn a_log_line_is_one_json_object_with_the_request_id_and_no_timestamp() {
        let capture = LogCapture::default();
        let subscriber = json_logs(EnvFilter::new("info"), capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            // The span the Lambda runtime opens around each invocation.
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _entered = span.enter();
            tracing::debug!("not at the default level");
            tracing::info!(published = 3, "stream batch relayed");
        });
        let text = capture.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["fields"]["message"], "stream batch relayed", "{line}");
        assert_eq!(line["fields"]["published"], 3, "{line}");
        assert_eq!(line["span"]["requestId"], "req-1", "{line}");
        assert!(line.get("spans").is_none(), "{line}");
        assert!(line.get("timestamp").is_none(), "{line}");
    }
}
