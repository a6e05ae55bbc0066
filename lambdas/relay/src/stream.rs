//! Stream records as the DynamoDB Streams API returns them (`GetRecords`), shaped into the event
//! Lambda hands the relay, as the event source mapping does. Used by `outbox-operator replay`
//! (records read back from the stream for a batch parked with metadata only) and by the dev
//! trigger (`make demo`, wire tests). Feature `stream-records`; the relay Lambda does not use it.

use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord, UserIdentity};
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};

/// Why a stream record cannot be shaped into a Lambda event record.
#[derive(Debug, thiserror::Error)]
pub enum StreamRecordError {
    #[error("stream record {0} has no dynamodb section")]
    NoChange(String),
    #[error("stream record {0}: creation time {1} out of range")]
    Time(String, i64),
    #[error("stream record {0}: unknown stream view type {1}")]
    ViewType(String, String),
}

fn item(map: Option<&HashMap<String, AttributeValue>>) -> serde_dynamo::Item {
    map.cloned()
        .map(serde_dynamo::Item::from)
        .unwrap_or_default()
}

/// Shapes stream records into the event Lambda hands the relay, as the event source mapping does.
pub fn to_lambda_event(records: &[Record], stream_arn: &str) -> Result<Event, StreamRecordError> {
    let mut event = Event::default();
    for r in records {
        let id = r.event_id().unwrap_or_default().to_owned();
        let change = r
            .dynamodb()
            .ok_or_else(|| StreamRecordError::NoChange(id.clone()))?;
        let mut rec = EventRecord::default();
        rec.event_name = r
            .event_name()
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        rec.event_version = r.event_version().map(str::to_owned);
        rec.event_source = Some("aws:dynamodb".to_owned());
        rec.aws_region = r.aws_region().unwrap_or("us-east-1").to_owned();
        rec.event_source_arn = Some(stream_arn.to_owned());
        rec.user_identity = r.user_identity().map(|u| {
            let mut id = UserIdentity::default();
            id.type_ = u.r#type().unwrap_or_default().to_owned();
            id.principal_id = u.principal_id().unwrap_or_default().to_owned();
            id
        });
        if let Some(t) = change.approximate_creation_date_time() {
            rec.change.approximate_creation_date_time =
                chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                    .ok_or_else(|| StreamRecordError::Time(id.clone(), t.secs()))?;
        }
        rec.change.keys = item(change.keys());
        rec.change.new_image = item(change.new_image());
        rec.change.old_image = item(change.old_image());
        rec.change.sequence_number = change.sequence_number().map(str::to_owned);
        rec.change.size_bytes = change.size_bytes().unwrap_or_default();
        rec.change.stream_view_type = change
            .stream_view_type()
            .map(|v| {
                serde_json::from_value(serde_json::Value::String(v.as_str().to_owned()))
                    .map_err(|_| StreamRecordError::ViewType(id.clone(), v.as_str().to_owned()))
            })
            .transpose()?;
        rec.event_id = id;
        event.records.push(rec);
    }
    Ok(event)
}
