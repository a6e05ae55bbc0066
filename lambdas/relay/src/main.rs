//! The relay Lambda's entry point: configuration and clients once, then the runtime loop.
use aws_sdk_eventbridge::config::retry::RetryConfig;
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_contract::RelayConfig;
use outbox_relay::{Relay, RetryPolicy};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("relay", RelayConfig::from_env, |c| Box::pin(serve(c))).await
}

async fn serve(config: RelayConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // The relay retries itself (per entry, with backoff, within the invocation deadline), so
    // the SDK's own retries are off.
    let eb_config = aws_sdk_eventbridge::config::Builder::from(&sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    let relay = Relay::new(
        config,
        aws_sdk_eventbridge::Client::from_conf(eb_config),
        RetryPolicy::default(),
    );
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::dynamodb::Event>| async move {
            relay
                .handle(event)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
