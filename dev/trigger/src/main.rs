//! `outbox-local-trigger demo`: the second half of `make demo`. Given the status that
//! `outbox-operator status -o json` printed, it creates a user through the writer's handler,
//! plays the event source mapping (stream → relay handler, with the mapping's filter), and picks
//! the resulting event off an SQS tap rule on the bus to hand it to the consumer's handler —
//! the three deliveries a local emulator without Lambda cannot make.
//!
//! `demo --fail-publish` (for `make demo-replay`) makes the relay's publishing fail, so the
//! mapping parks the batch in the failure bucket as Lambda does after its retries, and leaves
//! the tap in place; `deliver` later hands what reached the tap (the replayed event) to the
//! consumer's handler.

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
        /// Make the relay's publishing fail (its bus unreachable), so the event source mapping
        /// parks the batch in the failure bucket as Lambda does; the tap stays for `deliver`.
        #[arg(long)]
        fail_publish: bool,
    },
    /// Hand what reached the tap left by `demo --fail-publish` to the consumer's handler, then
    /// remove the tap.
    Deliver {
        /// JSON printed by `outbox-operator status -o json`.
        #[arg(long)]
        status: String,
        /// How many events to wait for.
        #[arg(long, default_value_t = 1)]
        want: usize,
    },
}

/// The tap `demo --fail-publish` leaves for `deliver`.
const REPLAY_TAP: &str = "demo-replay-tap";

/// The user to create: (username, email, fail publishing).
type Demo = (String, String, bool);

struct Clients {
    lambda: aws_sdk_lambda::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    events: aws_sdk_eventbridge::Client,
    /// The relay's own PutEvents client, the one the deployed relay publishes with.
    relay_events: outbox_relay::wire::SignedClient,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
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
    let (status, command): (String, Result<Demo, usize>) = match Cli::parse().command {
        Command::Demo {
            status,
            username,
            email,
            fail_publish,
        } => (status, Ok((username, email, fail_publish))),
        Command::Deliver { status, want } => (status, Err(want)),
    };
    let text = std::fs::read_to_string(&status).with_context(|| format!("read {status}"))?;
    let all: serde_json::Map<String, Value> =
        serde_json::from_str(&text).with_context(|| format!("{status} is not status JSON"))?;
    let (pipeline, status) = all
        .iter()
        .next()
        .ok_or_else(|| anyhow!("{status} holds no pipeline"))?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let c = Clients {
        lambda: aws_sdk_lambda::Client::new(&sdk),
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
        events: aws_sdk_eventbridge::Client::new(&sdk),
        relay_events: outbox_relay::wire::SignedClient::from_sdk(&sdk).await?,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        // Path-style addressing, as the engine uses against an emulator.
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        ),
    };
    let bus = field(status, "busName")?;
    let (username, email, fail_publish) = match command {
        Ok(demo) => demo,
        Err(want) => return deliver_from_tap(&c, bus, want).await,
    };
    let (consumer, rule_arn) = status
        .get("ruleArns")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .ok_or_else(|| anyhow!("status has no consumer rule"))?;
    let rule_arn = rule_arn.as_str().unwrap_or_default();
    println!("pipeline {pipeline}: bus {bus}, consumer {consumer}");

    // The tap sees exactly what the consumer's rule matches.
    let pattern = c
        .events
        .describe_rule()
        .name(name_from_arn(rule_arn))
        .event_bus_name(bus)
        .send()
        .await
        .context("DescribeRule")?
        .event_pattern
        .ok_or_else(|| anyhow!("rule {rule_arn} has no event pattern"))?;
    let tap_name = if fail_publish {
        REPLAY_TAP.to_owned()
    } else {
        format!("demo-tap-{}", std::process::id())
    };
    let tap = trigger::Tap::create(&c.events, &c.sqs, bus, &tap_name, &pattern).await?;
    let result = run(&c, &tap, status, &username, &email, fail_publish).await;
    if !fail_publish || result.is_err() {
        tap.remove(&c.events, &c.sqs).await?;
    }
    result
}

async fn run(
    c: &Clients,
    tap: &trigger::Tap,
    status: &Value,
    username: &str,
    email: &str,
    fail_publish: bool,
) -> Result<()> {
    let stream_arn = field(status, "streamArn")?;
    let mapping = field(status, "eventSourceMappingUuid")?;
    // 1. The writer, configured from its deployed environment.
    let env = trigger::function_env(&c.lambda, field(status, "writerFunctionArn")?).await?;
    let writer = Writer::new(
        WriterConfig::from_lookup(|k| env.get(k).cloned()).context("writer environment")?,
        c.dynamodb.clone(),
    );
    let response = writer
        .handle(json!({"username": username, "email": email}))
        .await;
    println!("writer: {response}");
    if response.get("statusCode").and_then(Value::as_u64) != Some(201) {
        bail!("the writer did not create the user");
    }

    // 2. The event source mapping: the stream's records, filtered like the mapping filters.
    let batch = mapped_batch(c, stream_arn, mapping).await?;

    // 3. The relay, configured from its deployed environment.
    let relay_fn = field(status, "relayFunctionArn")?;
    let env = trigger::function_env(&c.lambda, relay_fn).await?;
    let mut config =
        RelayConfig::from_lookup(|k| env.get(k).cloned()).context("relay environment")?;
    if fail_publish {
        // An outage of the bus as the relay sees it: every PutEvents call fails.
        config.bus_name = format!("{}-unreachable", config.bus_name);
    }
    let pipeline = config.pipeline.clone();
    let relay = Relay::new(config, c.relay_events.clone(), RetryPolicy::default());
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
    if fail_publish {
        return park(c, status, stream_arn, mapping, &batch, &report).await;
    }
    if !report.response.batch_item_failures.is_empty() {
        bail!("the relay reported unpublished records");
    }
    // 4. The rule's delivery, through the tap, to the consumer's handler.
    deliver(&c.sqs, &tap.queue_url, report.published).await
}

/// The stream's records as the event source mapping hands them to the relay: filtered by the
/// mapping's filter criteria.
async fn mapped_batch(
    c: &Clients,
    stream_arn: &str,
    mapping: &str,
) -> Result<aws_lambda_events::event::dynamodb::Event> {
    let filter = c
        .lambda
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
    let records = trigger::read_stream(&c.streams, stream_arn).await?;
    let mut batch = trigger::to_lambda_event(&records, stream_arn)?;
    trigger::apply_filter(&mut batch, names.as_deref());
    Ok(batch)
}

/// After the relay failed, what the event source mapping does once its retries are exhausted:
/// the batch goes to the failure bucket.
async fn park(
    c: &Clients,
    status: &Value,
    stream_arn: &str,
    mapping: &str,
    batch: &aws_lambda_events::event::dynamodb::Event,
    report: &outbox_relay::Report,
) -> Result<()> {
    if report.response.batch_item_failures.is_empty() {
        bail!("the relay published everything although its bus was unreachable");
    }
    let destination = field(status, "failureDestinationArn")?;
    let bucket = destination
        .split_once(":s3:::")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("the failure destination {destination} is not a bucket"))?;
    let shard = trigger::first_shard(&c.streams, stream_arn).await?;
    let key = trigger::park_batch(&c.s3, bucket, mapping, &shard, stream_arn, batch).await?;
    println!(
        "event source mapping: retries exhausted; batch of {} record(s) parked at s3://{bucket}/{key}",
        batch.records.len()
    );
    Ok(())
}

/// What reached the tap, to the consumer's handler.
async fn deliver(sqs: &aws_sdk_sqs::Client, queue_url: &str, want: usize) -> Result<()> {
    let delivered = trigger::receive_events(sqs, queue_url, want, Duration::from_secs(15)).await?;
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

/// `deliver`: the tap `demo --fail-publish` left, to the consumer; then the tap goes.
async fn deliver_from_tap(c: &Clients, bus: &str, want: usize) -> Result<()> {
    let queue_url = c
        .sqs
        .get_queue_url()
        .queue_name(REPLAY_TAP)
        .send()
        .await
        .context("GetQueueUrl (tap): run `demo --fail-publish` first")?
        .queue_url
        .ok_or_else(|| anyhow!("GetQueueUrl returned no URL"))?;
    let result = deliver(&c.sqs, &queue_url, want).await;
    let tap = trigger::Tap {
        queue_url,
        queue_arn: String::new(),
        rule_name: REPLAY_TAP.to_owned(),
        bus_name: bus.to_owned(),
    };
    tap.remove(&c.events, &c.sqs).await?;
    result
}
