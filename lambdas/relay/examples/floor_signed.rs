//! The floor without the SDK's orchestrator: `examples/floor.rs` with each PutEvents call built,
//! signed (`aws-sigv4`, the SDK's own signer) and sent (hyper's pooled client, as the SDK's) by
//! hand. Everything else is the floor's: the runtime, lambda_runtime, mimalloc, the logs, the
//! payload reading and the entries. The difference between the two is what the SDK's request
//! pipeline (interceptors, endpoint rules, identity cache, configuration layers, its
//! serialiser) costs per call (docs/data-plane.md, *Cost*).
//!
//! ```text
//! cargo build --profile lambda -p outbox-relay --example floor_signed
//! target/lambda/outbox-bench-relay --bootstrap target/lambda/examples/floor_signed --throttle 0
//! ```
//!
//! A measurement, not a client: plain-HTTP endpoints only (`AWS_ENDPOINT_URL`, as the benchmark
//! sets), credentials read once, no retry, no error handling beyond the status code.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lambda_runtime::{LambdaEvent, service_fn};
use outbox_contract::RelayConfig;
use outbox_relay::BatchResponse;
use serde::Serialize;
use serde_json::value::RawValue;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/payload.rs"]
mod payload;
use payload::Batch;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    event_bus_name: &'a str,
    source: &'a str,
    detail_type: &'a str,
    detail: String,
}

#[derive(Serialize)]
struct PutEvents<'a> {
    #[serde(rename = "Entries")]
    entries: Vec<Entry<'a>>,
}

/// What each call needs: the endpoint, the signing identity and region, the HTTP client.
struct Signed {
    endpoint: String,
    host: String,
    region: String,
    identity: Identity,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Signed {
    async fn put_events(&self, body: Vec<u8>) -> Result<(), lambda_runtime::Error> {
        let amz_target = "AWSEvents.PutEvents";
        let content_type = "application/x-amz-json-1.1";
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", content_type),
            ("x-amz-target", amz_target),
        ];
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("events")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::post(self.endpoint.as_str())
            .header("host", self.host.as_str())
            .header("content-type", content_type)
            .header("x-amz-target", amz_target)
            .body(Full::new(Bytes::from(body)))?;
        instructions.apply_to_request_http1x(&mut request);
        let response = self.http.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("PutEvents: {status}: {}", String::from_utf8_lossy(&body)).into());
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    outbox_contract::startup::start("floor_signed", RelayConfig::from_env, |c| {
        Box::pin(serve(c))
    })
    .await
}

async fn serve(config: RelayConfig) -> Result<(), lambda_runtime::Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let credentials = sdk
        .credentials_provider()
        .ok_or("no credentials provider")?
        .provide_credentials()
        .await?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| "floor_signed needs AWS_ENDPOINT_URL (a plain-HTTP endpoint)")?;
    let endpoint = format!("{}/", endpoint.trim_end_matches('/'));
    let uri: http::Uri = endpoint.parse()?;
    let signed = Signed {
        host: uri.authority().ok_or("endpoint without host")?.to_string(),
        endpoint,
        region: sdk.region().ok_or("no region")?.to_string(),
        identity: Identity::from(credentials),
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    let (signed, bus) = (&signed, config.bus_name.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let batch: Batch<'_> = serde_json::from_str(event.payload.get())?;
            for chunk in batch.records.chunks(10) {
                let entries = chunk
                    .iter()
                    .map(|r| Entry {
                        event_bus_name: bus,
                        source: "myapp.users",
                        detail_type: "UserCreated",
                        detail: r.dynamodb.detail(),
                    })
                    .collect();
                let body = serde_json::to_vec(&PutEvents { entries })?;
                signed.put_events(body).await?;
            }
            Ok::<_, lambda_runtime::Error>(BatchResponse::default())
        },
    ))
    .await
}
