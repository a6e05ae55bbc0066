//! The consumer Lambda's entry point.
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    outbox_contract::startup::init_logs();
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move {
            outbox_consumer::process(event.payload)
                .map(|_| ())
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}
