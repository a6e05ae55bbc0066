//! The writer Lambda's entry point: configuration and clients once, then the runtime loop.
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_writer::{Writer, WriterConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time()
        .init();
    // A bad configuration is one JSON log line naming the variable (what CloudWatch shows),
    // never anyhow's multi-line report on stderr.
    let config = match WriterConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid writer configuration; the function cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the Lambda runtime stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: WriterConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let writer = Writer::new(config, aws_sdk_dynamodb::Client::new(&sdk));
    let writer = &writer;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, lambda_runtime::Error>(writer.handle(event.payload).await)
        },
    ))
    .await
}
