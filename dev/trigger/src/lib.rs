//! Dev tooling: plays, against a local AWS emulator that cannot run Lambda functions, the two
//! deliveries AWS would make — the event source mapping (stream → relay) and a rule's delivery
//! (bus → consumer, through an SQS "tap" queue on the same bus). Used by `make demo` and the
//! wire-level tests. Never part of the engine or the operator image.

pub mod metrics;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

/// Reads every record currently in the stream, shard by shard, in stream order.
pub async fn read_stream(
    client: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
) -> Result<Vec<Record>> {
    let description = client
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await
        .with_context(|| format!("DescribeStream {stream_arn}"))?;
    let shards = description
        .stream_description()
        .map(|d| d.shards().to_vec())
        .unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let Some(shard_id) = shard.shard_id() else {
            continue;
        };
        let mut iterator = client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .with_context(|| format!("GetShardIterator {shard_id}"))?
            .shard_iterator;
        // Bounded: an open shard always hands out a next iterator.
        for _ in 0..100 {
            let Some(it) = iterator.take() else { break };
            let page = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .with_context(|| format!("GetRecords {shard_id}"))?;
            let got = page.records().len();
            records.extend(page.records().iter().cloned());
            if got == 0 {
                break;
            }
            iterator = page.next_shard_iterator;
        }
    }
    Ok(records)
}

/// Shapes stream records into the event Lambda hands the relay, as the event source mapping does
/// (the relay crate's shared conversion, which `outbox-operator replay` uses too).
pub fn to_lambda_event(records: &[Record], stream_arn: &str) -> Result<Event> {
    Ok(outbox_relay::stream::to_lambda_event(records, stream_arn)?)
}

/// The change types an event source mapping's FilterCriteria lets through, when its patterns
/// are the `{"eventName": [...]}` shape the operator writes. `None`: no filter.
pub fn filtered_event_names(patterns: &[String]) -> Result<Option<Vec<String>>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut names = Vec::new();
    for p in patterns {
        let v: serde_json::Value =
            serde_json::from_str(p).with_context(|| format!("filter pattern {p}"))?;
        let list = v
            .get("eventName")
            .and_then(|n| n.as_array())
            .ok_or_else(|| anyhow!("filter pattern {p} does not filter on eventName"))?;
        names.extend(list.iter().filter_map(|n| n.as_str().map(str::to_owned)));
    }
    Ok(Some(names))
}

/// Keeps the records whose change type passes the filter.
pub fn apply_filter(event: &mut Event, names: Option<&[String]>) {
    if let Some(names) = names {
        event.records.retain(|r| names.contains(&r.event_name));
    }
}

/// Receives what arrived at the tap queue within `wait` (until `want` arrived): the EventBridge
/// events as the raw JSON text delivered, so callers can check numbers digit for digit.
pub async fn receive_events(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    want: usize,
    wait: Duration,
) -> Result<Vec<String>> {
    let deadline = std::time::Instant::now() + wait;
    let mut events = Vec::new();
    while events.len() < want && std::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .context("ReceiveMessage")?;
        for m in out.messages() {
            events.push(m.body().unwrap_or_default().to_owned());
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .context("DeleteMessage")?;
            }
        }
    }
    Ok(events)
}

/// A tap: an SQS queue and a rule with the same pattern as a consumer's rule on the same bus,
/// so the test or demo sees what EventBridge would deliver to that consumer.
pub struct Tap {
    pub queue_url: String,
    pub queue_arn: String,
    pub rule_name: String,
    pub bus_name: String,
}

impl Tap {
    pub async fn create(
        events: &aws_sdk_eventbridge::Client,
        sqs: &aws_sdk_sqs::Client,
        bus_name: &str,
        rule_name: &str,
        pattern: &str,
    ) -> Result<Tap> {
        let queue_url = sqs
            .create_queue()
            .queue_name(rule_name)
            .send()
            .await
            .context("CreateQueue (tap)")?
            .queue_url
            .ok_or_else(|| anyhow!("CreateQueue returned no URL"))?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes (tap)")?;
        let queue_arn = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| anyhow!("tap queue has no ARN"))?;
        events
            .put_rule()
            .name(rule_name)
            .event_bus_name(bus_name)
            .event_pattern(pattern)
            .send()
            .await
            .context("PutRule (tap)")?;
        events
            .put_targets()
            .rule(rule_name)
            .event_bus_name(bus_name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("tap")
                    .arn(&queue_arn)
                    .build()
                    .context("tap target")?,
            )
            .send()
            .await
            .context("PutTargets (tap)")?;
        Ok(Tap {
            queue_url,
            queue_arn,
            rule_name: rule_name.to_owned(),
            bus_name: bus_name.to_owned(),
        })
    }

    /// Removes the tap rule and queue (so the operator can delete its bus).
    pub async fn remove(
        &self,
        events: &aws_sdk_eventbridge::Client,
        sqs: &aws_sdk_sqs::Client,
    ) -> Result<()> {
        events
            .remove_targets()
            .rule(&self.rule_name)
            .event_bus_name(&self.bus_name)
            .ids("tap")
            .send()
            .await
            .context("RemoveTargets (tap)")?;
        events
            .delete_rule()
            .name(&self.rule_name)
            .event_bus_name(&self.bus_name)
            .send()
            .await
            .context("DeleteRule (tap)")?;
        sqs.delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .context("DeleteQueue (tap)")?;
        Ok(())
    }
}

/// A function's environment variables, read back from Lambda (what the deployed code sees).
pub async fn function_env(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<HashMap<String, String>> {
    let conf = lambda
        .get_function_configuration()
        .function_name(function)
        .send()
        .await
        .with_context(|| format!("GetFunctionConfiguration {function}"))?;
    Ok(conf
        .environment()
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default())
}

/// Parks a batch the relay could not publish the way the event source mapping does once its
/// retries are exhausted, for an S3 on-failure destination (format and source:
/// operator/src/engine/replay/record.rs): the invocation record, batch included, as
/// `aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`. Returns the key.
pub async fn park_batch(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    mapping: &str,
    shard_id: &str,
    stream_arn: &str,
    event: &Event,
) -> Result<String> {
    let now = chrono::Utc::now();
    let key = format!(
        "aws/lambda/{mapping}/{shard_id}/{}/{}-{}",
        now.format("%Y/%m/%d"),
        now.format("%Y-%m-%dT%H.%M.%S"),
        uuid::Uuid::new_v4()
    );
    let seq = |r: Option<&EventRecord>| {
        r.and_then(|r| r.change.sequence_number.clone())
            .unwrap_or_default()
    };
    let arrival = |r: Option<&EventRecord>| {
        r.map(|r| {
            r.change
                .approximate_creation_date_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
    };
    let body = serde_json::json!({
        "version": "1.0",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "requestContext": {
            "requestId": uuid::Uuid::new_v4().to_string(),
            "functionArn": "",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": null},
        "responsePayload": null,
        "requestPayload": event,
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": seq(event.records.first()),
            "endSequenceNumber": seq(event.records.last()),
            "approximateArrivalOfFirstRecord": arrival(event.records.first()),
            "approximateArrivalOfLastRecord": arrival(event.records.last()),
            "batchSize": event.records.len(),
            "streamArn": stream_arn
        }
    });
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from(
            serde_json::to_vec(&body)?,
        ))
        .send()
        .await
        .with_context(|| format!("PutObject s3://{bucket}/{key}"))?;
    Ok(key)
}

/// The first shard of a stream (where the demo's records are).
pub async fn first_shard(
    client: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
) -> Result<String> {
    client
        .describe_stream()
        .stream_arn(stream_arn)
        .send()
        .await
        .with_context(|| format!("DescribeStream {stream_arn}"))?
        .stream_description()
        .and_then(|d| d.shards().first())
        .and_then(|s| s.shard_id())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("stream {stream_arn} has no shard"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_patterns_written_by_the_operator_give_their_change_types() {
        let names = filtered_event_names(&[r#"{"eventName":["INSERT","REMOVE"]}"#.to_owned()])
            .expect("valid pattern");
        assert_eq!(names, Some(vec!["INSERT".to_owned(), "REMOVE".to_owned()]));
        assert_eq!(filtered_event_names(&[]).expect("no filter"), None);
        assert!(filtered_event_names(&[r#"{"dynamodb":{}}"#.to_owned()]).is_err());
    }

    #[test]
    fn filter_keeps_only_mapped_change_types() {
        let mut event = Event::default();
        for name in ["INSERT", "MODIFY", "REMOVE"] {
            let mut r = EventRecord::default();
            r.event_name = name.to_owned();
            event.records.push(r);
        }
        apply_filter(&mut event, Some(&["MODIFY".to_owned()]));
        let left: Vec<&str> = event
            .records
            .iter()
            .map(|r| r.event_name.as_str())
            .collect();
        assert_eq!(left, ["MODIFY"]);
    }
}
