//! The relay Lambda's entry point: configuration and clients once, then the runtime loop.
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_contract::RelayConfig;
use outbox_relay::{Relay, RetryPolicy};
use serde_json::value::RawValue;

// Every invocation allocates and frees the same few hundred small blocks (the payload's records,
// the entries, the SDK's request); mimalloc's per-size free lists serve them with less CPU than
// glibc's malloc (docs/data-plane.md, *Cost*).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// A Lambda execution environment runs one invocation at a time: one thread drives the runtime
// API, the handler and EventBridge, without cross-thread wake-ups (docs/data-plane.md, *Cost*).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("relay", RelayConfig::from_env, |c| Box::pin(serve(c))).await
}

async fn serve(config: RelayConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // The relay's own PutEvents client, not the SDK's (docs/data-plane.md, *Cost*).
    let client = outbox_relay::wire::SignedClient::from_sdk(&sdk).await?;
    let relay = Relay::new(config, client, RetryPolicy::default());
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            relay
                .handle_raw(event)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
