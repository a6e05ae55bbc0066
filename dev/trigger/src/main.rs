//! `outbox-local-trigger demo`: the second half of `make demo`. Given the status that
//! `outbox-operator status -o json` printed, it creates a user through the writer's handler,
//! plays the event source mapping (stream → relay handler, with the mapping's filter), and picks
//! the resulting event off an SQS tap rule on the bus to hand it to the consumer's handler —
//! the three deliveries a local emulator without Lambda cannot make.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use outbox_contract::RelayConfig;
use outbox_local_trigger as trigger;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use outbox_writer::{Writer, WriterConfig};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Dev tooling: play Lambda deliveries against a local AWS emulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a user via the writer and follow its event to the consumer.
    Demo {
        /// JSON printed by `outbox-operator status -o json`.
        #[arg(long)]
        status: String,
        /// The user to create.
        #[arg(long, default_value = "ada")]
        username: String,
        #[arg(long, default_value = "ada@example.com")]
        email: String,
    },
}

fn field<'a>(status: &'a Value, name: &str) -> Result<&'a str> {
    status
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("status has no {name}: is the pipeline Ready?"))
}

fn name_from_arn(arn: &str) -> &str {
    arn.rsplit([':', '/']).next().unwrap_or(arn)
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Demo {
        status,
        username,
        email,
    } = Cli::parse().command;
    let text = std::fs::read_to_string(&status).with_context(|| format!("read {status}"))?;
    let all: serde_json::Map<String, Value> =
        serde_json::from_str(&text).with_context(|| format!("{status} is not status JSON"))?;
    let (pipeline, status) = all
        .iter()
        .next()
        .ok_or_else(|| anyhow!("{status} holds no pipeline"))?;

    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    let bus = field(status, "busName")?;
    let stream_arn = field(status, "streamArn")?;
    let writer_fn = field(status, "writerFunctionArn")?;
    let relay_fn = field(status, "relayFunctionArn")?;
    let mapping = field(status, "eventSourceMappingUuid")?;
    let (consumer, rule_arn) = status
        .get("ruleArns")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .ok_or_else(|| anyhow!("status has no consumer rule"))?;
    let rule_arn = rule_arn.as_str().unwrap_or_default();
    println!("pipeline {pipeline}: bus {bus}, consumer {consumer}");

    // The tap sees exactly what the consumer's rule matches.
    let pattern = events
        .describe_rule()
        .name(name_from_arn(rule_arn))
        .event_bus_name(bus)
        .send()
        .await
        .context("DescribeRule")?
        .event_pattern
        .ok_or_else(|| anyhow!("rule {rule_arn} has no event pattern"))?;
    let tap_name = format!("demo-tap-{}", std::process::id());
    let tap = trigger::Tap::create(&events, &sqs, bus, &tap_name, &pattern).await?;
    let result = run(
        &lambda, &dynamodb, &streams, &events, &sqs, &tap, writer_fn, relay_fn, mapping,
        stream_arn, &username, &email,
    )
    .await;
    tap.remove(&events, &sqs).await?;
    result
}

#[allow(clippy::too_many_arguments)]
async fn run(
    lambda: &aws_sdk_lambda::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    tap: &trigger::Tap,
    writer_fn: &str,
    relay_fn: &str,
    mapping: &str,
    stream_arn: &str,
    username: &str,
    email: &str,
) -> Result<()> {
    // 1. The writer, configured from its deployed environment.
    let env = trigger::function_env(lambda, writer_fn).await?;
    let writer = Writer::new(
        WriterConfig::from_lookup(|k| env.get(k).cloned()).context("writer environment")?,
        dynamodb.clone(),
    );
    let response = writer
        .handle(json!({"username": username, "email": email}))
        .await;
    println!("writer: {response}");
    if response.get("statusCode").and_then(Value::as_u64) != Some(201) {
        bail!("the writer did not create the user");
    }

    // 2. The event source mapping: the stream's records, filtered like the mapping filters.
    let filter = lambda
        .get_event_source_mapping()
        .uuid(mapping)
        .send()
        .await
        .context("GetEventSourceMapping")?
        .filter_criteria
        .map(|f| {
            f.filters()
                .iter()
                .filter_map(|p| p.pattern().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let names = trigger::filtered_event_names(&filter)?;
    let records = trigger::read_stream(streams, stream_arn).await?;
    let mut batch = trigger::to_lambda_event(&records, stream_arn)?;
    trigger::apply_filter(&mut batch, names.as_deref());

    // 3. The relay, configured from its deployed environment.
    let env = trigger::function_env(lambda, relay_fn).await?;
    let config = RelayConfig::from_lookup(|k| env.get(k).cloned()).context("relay environment")?;
    let pipeline = config.pipeline.clone();
    let relay = Relay::new(config, events.clone(), RetryPolicy::default());
    let invocation = Invocation {
        deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        trace_header: None,
    };
    let report = relay
        .process(&batch, &invocation)
        .await
        .context("relay handler")?;
    println!(
        "relay: {} record(s) in the stream, {} published in {} PutEvents call(s), {} failed",
        report.records,
        report.published,
        report.calls,
        report.response.batch_item_failures.len()
    );
    let put = trigger::metrics::put_as_lambda_would(relay_fn, pipeline.as_deref(), &report).await?;
    println!(
        "metrics: {put} datapoint(s) put into CloudWatch, as Lambda and the relay's EMF line would"
    );
    if !report.response.batch_item_failures.is_empty() {
        bail!("the relay reported unpublished records");
    }

    // 4. The rule's delivery, through the tap, to the consumer's handler.
    let delivered = trigger::receive_events(
        sqs,
        &tap.queue_url,
        report.published,
        Duration::from_secs(15),
    )
    .await?;
    if delivered.is_empty() {
        bail!("no event reached the consumer's rule");
    }
    for body in delivered {
        let event: Value = serde_json::from_str(&body).context("tap message is not JSON")?;
        let parsed = outbox_consumer::process(event).context("consumer handler")?;
        println!(
            "consumer: {} eventId={} keys={}",
            parsed.kind(),
            parsed.event_id(),
            parsed.keys()
        );
    }
    Ok(())
}
