//! One stream record → one PutEvents entry (pure: no I/O, no clock): the first configured
//! entry the record matches ([`route::select`]), its item projected to the entry's fields
//! ([`route::project`]), in the contract's envelope.

pub mod route;

use aws_lambda_events::dynamodb::EventRecord;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chrono::SecondsFormat;
use outbox_contract::{
    ChangeType, EventDetail, EventMapping, Payload, RelayConfig, SCHEMA_VERSION,
};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::json::{ConvertError, item_to_raw};

/// Namespace of event ids: UUID v5 of the URL `urn:outbox-operator:relay-event-id`.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x1f2da0fe_4efc_5ad6_919a_b861ed27eb89);

/// Bytes PutEvents adds to an entry's size when `Time` is set.
const TIME_SIZE_BYTES: usize = 14;

/// The deterministic event id of a stream record: UUID v5 (namespace [`EVENT_ID_NAMESPACE`]) of
/// `<eventSourceARN>#<sequenceNumber>`. A sequence number is unique within its stream and the
/// stream ARN names the stream, so a redelivered record gets the same id and no two records share one.
pub fn event_id(event_source_arn: &str, sequence_number: &str) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{event_source_arn}#{sequence_number}").as_bytes(),
    )
}

/// The table ARN and table name in a stream ARN
/// (`arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`).
pub fn table_of_stream(stream_arn: &str) -> Option<(&str, &str)> {
    let (table_arn, label) = stream_arn.split_once("/stream/")?;
    let (prefix, name) = table_arn.split_once(":table/")?;
    if !prefix.starts_with("arn:") || name.is_empty() || name.contains('/') || label.is_empty() {
        return None;
    }
    Some((table_arn, name))
}

/// Size of an entry as PutEvents counts it: UTF-8 bytes of Source, DetailType, Detail and each
/// Resources string, plus 14 when Time is set. (EventBusName and TraceHeader are not counted.)
pub fn entry_size(entry: &PutEventsRequestEntry) -> usize {
    let text = |s: Option<&str>| s.map_or(0, str::len);
    text(entry.source())
        + text(entry.detail_type())
        + text(entry.detail())
        + entry.resources().iter().map(String::len).sum::<usize>()
        + if entry.time().is_some() {
            TIME_SIZE_BYTES
        } else {
            0
        }
}

/// A record ready to publish.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub sequence_number: String,
    /// The item's keys as canonical JSON: two records with equal `item_key` change the same item.
    pub item_key: String,
    pub entry: PutEventsRequestEntry,
    /// [`entry_size`] of `entry`.
    pub size: usize,
}

/// What the relay does with one record.
#[derive(Debug)]
pub enum Disposition {
    Publish(Prepared),
    /// No entry matches the record (its change type has no mapping, or no entry's conditions
    /// hold): skipped and counted, not an error.
    Skip(ChangeType),
    /// The record can never be published as it is: the batch stops here.
    Fail(RecordError),
}

/// Why a record cannot be published (each stops the batch at that record).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record has no sequence number")]
    MissingSequenceNumber,
    #[error("record has unknown eventName {0:?}")]
    UnknownEventName(String),
    #[error("record has no eventSourceARN of a DynamoDB stream (got {0:?})")]
    BadSourceArn(Option<String>),
    #[error(
        "mapping for {change} wants {payload} but the record has none (stream view type {view_type})"
    )]
    MissingImage {
        change: ChangeType,
        payload: Payload,
        view_type: String,
    },
    #[error(
        "a mapping for {change} has attribute conditions on the {image} but the record has none (stream view type {view_type})"
    )]
    MissingConditionImage {
        change: ChangeType,
        image: &'static str,
        view_type: String,
    },
    #[error("the item cannot be written as JSON: {0}")]
    Convert(#[from] ConvertError),
    #[error("the event Detail cannot be serialised: {0}")]
    Serialize(#[source] outbox_contract::redact::JsonErrorSummary),
    #[error("the event is {size} bytes, over the {limit}-byte PutEvents request limit")]
    TooLarge { size: usize, limit: usize },
}

/// Turns one stream record into its PutEvents entry, a skip, or the reason it cannot be published.
pub fn prepare(
    record: &EventRecord,
    config: &RelayConfig,
    trace_header: Option<&str>,
) -> Disposition {
    match try_prepare(record, config, trace_header) {
        Ok(Some(p)) => Disposition::Publish(p),
        Ok(None) => match ChangeType::from_event_name(&record.event_name) {
            Some(change) => Disposition::Skip(change),
            None => Disposition::Fail(RecordError::UnknownEventName(record.event_name.clone())),
        },
        Err(e) => Disposition::Fail(e),
    }
}

fn try_prepare(
    record: &EventRecord,
    config: &RelayConfig,
    trace_header: Option<&str>,
) -> Result<Option<Prepared>, RecordError> {
    let sequence_number = sequence_number(record)?;
    let change = ChangeType::from_event_name(&record.event_name)
        .ok_or_else(|| RecordError::UnknownEventName(record.event_name.clone()))?;
    let Some(mapping) = route::select(record, change, config)? else {
        return Ok(None);
    };
    let stream_arn = record.event_source_arn.as_deref().unwrap_or_default();
    let (table_arn, table) = table_of_stream(stream_arn)
        .ok_or_else(|| RecordError::BadSourceArn(record.event_source_arn.clone()))?;
    let image = chosen_image(record, change, mapping.payload)?;
    let keys = item_to_raw(&record.change.keys)?;
    let item = item_to_raw(&route::project(
        image,
        &record.change.keys,
        mapping.fields.as_ref(),
    ))?;
    let item_key = keys.get().to_owned();

    let created = record.change.approximate_creation_date_time;
    let detail = EventDetail::<Box<RawValue>, Box<RawValue>> {
        event_id: event_id(stream_arn, &sequence_number).to_string(),
        schema_version: SCHEMA_VERSION.to_owned(),
        change,
        sequence_number: sequence_number.clone(),
        table: table.to_owned(),
        keys,
        payload: mapping.payload,
        item,
        approximate_creation_time: created.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        ttl_expired: is_ttl_expiry(record, change),
    };
    let detail = serde_json::to_string(&detail).map_err(|e| RecordError::Serialize(e.into()))?;
    let entry = entry(config, mapping, detail, table_arn, created, trace_header);
    let size = entry_size(&entry);
    if size > config.request_size_limit_bytes {
        return Err(RecordError::TooLarge {
            size,
            limit: config.request_size_limit_bytes,
        });
    }
    Ok(Some(Prepared {
        sequence_number,
        item_key,
        entry,
        size,
    }))
}

/// The record's sequence number; a record without one cannot be published or reported.
fn sequence_number(record: &EventRecord) -> Result<String, RecordError> {
    record
        .change
        .sequence_number
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or(RecordError::MissingSequenceNumber)
}

/// The image the mapping's payload names, or why the record does not carry it.
fn chosen_image(
    record: &EventRecord,
    change: ChangeType,
    payload: Payload,
) -> Result<&serde_dynamo::Item, RecordError> {
    let stream = &record.change;
    let image = match payload {
        Payload::NewImage => &stream.new_image,
        Payload::OldImage => &stream.old_image,
        Payload::Keys => &stream.keys,
    };
    // Every image holds at least the key attributes, so an empty one is an absent one
    // (the stream's view type does not carry it).
    if image.is_empty() {
        return Err(RecordError::MissingImage {
            change,
            payload,
            view_type: stream
                .stream_view_type
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |v| format!("{v:?}")),
        });
    }
    Ok(image)
}

/// True when the record is a REMOVE by DynamoDB's TTL process rather than by a caller.
fn is_ttl_expiry(record: &EventRecord, change: ChangeType) -> bool {
    change == ChangeType::Remove
        && record
            .user_identity
            .as_ref()
            .is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

/// The PutEvents entry of a record: the mapping's source and detail type on the configured bus,
/// the table as the resource, the change's creation time and the invocation's trace header.
fn entry(
    config: &RelayConfig,
    mapping: &EventMapping,
    detail: String,
    table_arn: &str,
    created: chrono::DateTime<chrono::Utc>,
    trace_header: Option<&str>,
) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(&config.bus_name)
        .source(&mapping.source)
        .detail_type(&mapping.detail_type)
        .detail(detail)
        .resources(table_arn)
        .time(DateTime::from_secs_and_nanos(
            created.timestamp(),
            created.timestamp_subsec_nanos(),
        ))
        .set_trace_header(trace_header.map(str::to_owned))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_namespace_is_the_documented_derivation() {
        assert_eq!(
            EVENT_ID_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:outbox-operator:relay-event-id")
        );
    }

    #[test]
    fn table_arn_and_name_come_from_the_stream_arn() {
        let arn =
            "arn:aws:dynamodb:eu-west-1:123456789012:table/users/stream/2026-01-01T00:00:00.000";
        assert_eq!(
            table_of_stream(arn),
            Some((
                "arn:aws:dynamodb:eu-west-1:123456789012:table/users",
                "users"
            ))
        );
        assert_eq!(
            table_of_stream("arn:aws:dynamodb:eu-west-1:1:table/users"),
            None
        );
        assert_eq!(table_of_stream("users/stream/x"), None);
    }

    #[test]
    fn entry_size_counts_what_aws_counts() {
        let entry = || {
            PutEventsRequestEntry::builder()
                .event_bus_name("a-bus-name-that-is-not-counted")
                .source("ab")
                .detail_type("cd€")
                .detail("{}")
                .resources("r1")
                .resources("r22")
                .trace_header("Root=not-counted")
        };
        assert_eq!(entry_size(&entry().build()), 2 + 5 + 2 + 2 + 3);
        let timed = entry().time(DateTime::from_secs(0)).build();
        assert_eq!(entry_size(&timed), 14 + 14);
    }
}
