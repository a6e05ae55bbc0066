//! The floor under the relay's CPU per record in `make bench-relay` (docs/data-plane.md, *Cost*):
//! the relay binary's runtime — current-thread tokio, `lambda_runtime` with its span, mimalloc,
//! the JSON log subscriber, the same PutEvents client (`wire::SignedClient`) — around a handler that does
//! only what no relay can skip: read each record's sequence number and keys from the payload
//! and publish one minimal entry per record, ten per PutEvents call, in order. No image is
//! converted, no event id derived, nothing retried, logged or counted, so a fault-free run's CPU
//! per record is what the runtime, the client and the kernel cost on their own.
//!
//! ```text
//! cargo build --profile lambda -p outbox-relay --example floor
//! target/lambda/outbox-bench-relay --bootstrap target/lambda/examples/floor --throttle 0
//! ```
//!
//! Not a relay: it ignores throttled entries (use it fault-free only) and every mapping setting.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_contract::RelayConfig;
use outbox_relay::BatchResponse;
use outbox_relay::event::Prepared;
use outbox_relay::publish::PutEventsApi as _;
use serde::Deserialize;
use serde_json::value::RawValue;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("floor", RelayConfig::from_env, |c| Box::pin(serve(c))).await
}

async fn serve(config: RelayConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // The relay's own client.
    let client = outbox_relay::wire::SignedClient::from_sdk(&sdk).await?;
    let (client, bus) = (&client, config.bus_name.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let batch: Batch<'_> = serde_json::from_str(event.payload.get())?;
            for chunk in batch.records.chunks(10) {
                let entries: Vec<Prepared> = chunk
                    .iter()
                    .map(|r| Prepared {
                        sequence_number: String::new(),
                        item_key: String::new(),
                        size: 0,
                        entry: PutEventsRequestEntry::builder()
                            .event_bus_name(bus)
                            .source("myapp.users")
                            .detail_type("UserCreated")
                            .detail(r.dynamodb.detail())
                            .build(),
                    })
                    .collect();
                let refs: Vec<&Prepared> = entries.iter().collect();
                client.put_entries(&refs).await;
            }
            Ok::<_, lambda_runtime::Error>(BatchResponse::default())
        },
    ))
    .await
}

// What the floor reads from the payload: each record's sequence number and keys, borrowed (no
// image is converted).
#[derive(Deserialize)]
pub struct Batch<'a> {
    #[serde(rename = "Records", borrow)]
    pub records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub dynamodb: Change<'a>,
}

#[derive(Deserialize)]
pub struct Change<'a> {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: &'a str,
    #[serde(rename = "Keys", borrow)]
    pub keys: &'a RawValue,
}

impl Change<'_> {
    /// The minimal Detail the floor publishes.
    pub fn detail(&self) -> String {
        format!(
            r#"{{"sequenceNumber":"{}","keys":{}}}"#,
            self.sequence_number,
            self.keys.get()
        )
    }
}
