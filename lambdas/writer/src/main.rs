//! The writer Lambda's entry point: configuration and clients once, then the runtime loop.
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_writer::{Writer, WriterConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("writer", WriterConfig::from_env, |c| Box::pin(serve(c))).await
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
