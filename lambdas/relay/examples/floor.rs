//! The floor under the relay's CPU per record in `make bench-relay` (docs/data-plane.md, *Cost*):
//! the relay binary's runtime — current-thread tokio, `lambda_runtime` with its span, mimalloc,
//! the JSON log subscriber, the same EventBridge client settings — around a handler that does
//! only what no relay can skip: read each record's sequence number and keys from the payload
//! and publish one minimal entry per record, ten per PutEvents call, in order. No image is
//! converted, no event id derived, nothing retried, logged or counted, so a fault-free run's CPU
//! per record is what the official SDK and runtime cost on their own.
//!
//! ```text
//! cargo build --profile lambda -p outbox-relay --example floor
//! target/release/outbox-bench-relay --bootstrap target/release/examples/floor --throttle 0
//! ```
//!
//! Not a relay: it ignores throttled entries (use it fault-free only) and every mapping setting.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_contract::RelayConfig;
use outbox_relay::BatchResponse;
use serde_json::value::RawValue;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/payload.rs"]
mod payload;
use payload::Batch;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("floor", RelayConfig::from_env, |c| Box::pin(serve(c))).await
}

async fn serve(config: RelayConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // The relay's own client settings.
    let client = outbox_relay::publish::eventbridge_client(&sdk);
    let (client, bus) = (&client, config.bus_name.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let batch: Batch<'_> = serde_json::from_str(event.payload.get())?;
            for chunk in batch.records.chunks(10) {
                let entries = chunk.iter().map(|r| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(bus)
                        .source("myapp.users")
                        .detail_type("UserCreated")
                        .detail(r.dynamodb.detail())
                        .build()
                });
                client
                    .put_events()
                    .set_entries(Some(entries.collect()))
                    .send()
                    .await?;
            }
            Ok::<_, lambda_runtime::Error>(BatchResponse::default())
        },
    ))
    .await
}
