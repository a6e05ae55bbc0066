//! A parked batch as Lambda writes it to an S3 on-failure destination (pure: parsing only).
//!
//! Source: AWS Lambda Developer Guide, "Retain discarded records for a DynamoDB event source in
//! Lambda" (<https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>): each
//! record sent to the destination is a JSON document with metadata about the failed
//! invocation; for S3 destinations Lambda also writes the entire invocation record. One object
//! per failed batch:
//!
//! ```text
//! key:  aws/lambda/<mapping UUID>/<shard id>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random UUID>
//! body: {
//!   "version": "1.0",
//!   "timestamp": "2026-11-29T05:00:00.000Z",                // when the batch was given up
//!   "requestContext": {"requestId": "...", "functionArn": "...",
//!                      "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
//!   "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
//!                       "functionError": "Unhandled"},
//!   "responsePayload": ...,                                 // what the function returned
//!   "requestPayload": {"Records": [ ...stream records... ]},  // the batch, S3 only
//!   "DDBStreamBatchInfo": {"shardId": "...", "startSequenceNumber": "...",
//!       "endSequenceNumber": "...", "approximateArrivalOfFirstRecord": "...",
//!       "approximateArrivalOfLastRecord": "...", "batchSize": 3, "streamArn": "..."}
//! }
//! ```
//!
//! SQS and SNS destinations receive the same document without `requestPayload` (same page:
//! "Amazon SQS and Amazon SNS destinations" receive metadata only; its example SQS record has
//! exactly the keys above but `requestPayload`, and `responsePayload` only when it fits). SQS:
//! one message per failed batch, its body the document. SNS: the document is the notification's
//! `Message`. Also modelled by Powertools for AWS Lambda (Python) as
//! `DynamoDBStreamLambdaInvocationModel`
//! (<https://github.com/aws-powertools/powertools-lambda-python/pull/7818>). Replay reads such a
//! batch's records back from `DDBStreamBatchInfo.streamArn` by `shardId` and the sequence range
//! ([`super::stream`]).

use aws_lambda_events::dynamodb::Event;
use chrono::{DateTime, NaiveDateTime, Utc};
use outbox_contract::redact::JsonErrorSummary;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Where Lambda writes parked batches in an S3 destination.
pub const PARKED_PREFIX: &str = "aws/lambda/";
/// Where a fully replayed batch is moved: `replayed/<original key>`.
pub const REPLAYED_PREFIX: &str = "replayed/";
/// Suffix of the record of what was already published of a batch still parked:
/// `replayed/<original key>.published.json`.
pub const PUBLISHED_SUFFIX: &str = ".published.json";

/// The invocation record of one parked batch.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub request_context: Option<RequestContext>,
    #[serde(rename = "DDBStreamBatchInfo")]
    pub batch_info: BatchInfo,
    /// The batch itself (S3 destinations only).
    #[serde(default)]
    pub request_payload: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// Why Lambda gave the batch up, e.g. `RetryAttemptsExhausted`, `RecordAgeExceeded`.
    #[serde(default)]
    pub condition: Option<String>,
}

/// `DDBStreamBatchInfo`: where the batch was in the stream.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    #[serde(default)]
    pub shard_id: String,
    #[serde(default)]
    pub start_sequence_number: String,
    #[serde(default)]
    pub end_sequence_number: String,
    #[serde(default)]
    pub approximate_arrival_of_first_record: Option<String>,
    #[serde(default)]
    pub approximate_arrival_of_last_record: Option<String>,
    #[serde(default)]
    pub batch_size: Option<u64>,
    #[serde(default)]
    pub stream_arn: Option<String>,
}

/// Why a parked object cannot be replayed as it is.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not a Lambda invocation record of a DynamoDB stream batch (the error names the kind and
    /// position of the fault, never a value: the object holds item data).
    #[error("not a Lambda invocation record of a DynamoDB stream batch: {0}")]
    Malformed(JsonErrorSummary),
    /// Metadata only (how SQS and SNS destinations receive it): the records are not in it.
    #[error(
        "the record holds no requestPayload (metadata only): its records must be read back from the stream"
    )]
    NoPayload,
    #[error("requestPayload is not a DynamoDB stream batch: {0}")]
    BadPayload(JsonErrorSummary),
}

/// A parked batch read from its object.
#[derive(Debug)]
pub struct ParkedBatch {
    pub info: BatchInfo,
    pub condition: Option<String>,
    pub event: Event,
}

/// Parses a parked object's body.
pub fn parse(body: &[u8]) -> Result<ParkedBatch, RecordError> {
    let record: InvocationRecord =
        serde_json::from_slice(body).map_err(|e| RecordError::Malformed(e.into()))?;
    let payload = record.request_payload.ok_or(RecordError::NoPayload)?;
    let text = payload.get();
    // The payload is the batch object; accept it also as a JSON string holding that object.
    let event: Event = if text.starts_with('"') {
        let inner: String =
            serde_json::from_str(text).map_err(|e| RecordError::BadPayload(e.into()))?;
        serde_json::from_str(&inner).map_err(|e| RecordError::BadPayload(e.into()))?
    } else {
        serde_json::from_str(text).map_err(|e| RecordError::BadPayload(e.into()))?
    };
    Ok(ParkedBatch {
        info: record.batch_info,
        condition: record.request_context.and_then(|c| c.condition),
        event,
    })
}

/// A batch parked with metadata only (SQS, SNS), read from its invocation record.
#[derive(Clone, Debug)]
pub struct MetadataBatch {
    pub info: BatchInfo,
    pub condition: Option<String>,
    /// When Lambda gave the batch up (the record's `timestamp`).
    pub parked_at: Option<DateTime<Utc>>,
}

/// An SNS notification as a subscriber without raw message delivery receives it (an SQS queue
/// subscribed to the topic, an HTTPS endpoint): the invocation record is its `Message`.
#[derive(Deserialize)]
struct SnsNotification {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
}

/// Parses a metadata-only invocation record (an SQS message body, an SNS `Message`, a file).
/// A saved SNS notification is unwrapped. A record that carries its payload anyway is read the
/// same way: replay reads the stream.
pub fn parse_metadata(body: &[u8]) -> Result<MetadataBatch, RecordError> {
    let record: InvocationRecord = match serde_json::from_slice::<SnsNotification>(body) {
        Ok(n) if n.kind == "Notification" => serde_json::from_str(&n.message),
        _ => serde_json::from_slice(body),
    }
    .map_err(|e| RecordError::Malformed(e.into()))?;
    Ok(MetadataBatch {
        parked_at: record
            .timestamp
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        condition: record.request_context.and_then(|c| c.condition),
        info: record.batch_info,
    })
}

/// When Lambda parked the batch, from the key's last segment (`YYYY-MM-DDTHH.MM.SS-<uuid>`).
pub fn parked_at(key: &str) -> Option<DateTime<Utc>> {
    let last = key.rsplit('/').next()?;
    let stamp = last.get(..19)?;
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H.%M.%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Orders stream sequence numbers (decimal strings of up to 40 digits) numerically.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Where a fully replayed batch goes.
pub fn replayed_key(key: &str) -> String {
    format!("{REPLAYED_PREFIX}{key}")
}

/// Where what was published of a batch still parked is recorded.
pub fn published_key(key: &str) -> String {
    format!("{REPLAYED_PREFIX}{key}{PUBLISHED_SUFFIX}")
}

/// The record of what was published of a batch that is still parked.
#[derive(Debug, Default, serde::Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Sequence numbers of the records whose events were published.
    pub sequence_numbers: std::collections::BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parking_time_comes_from_the_key() {
        let key = "aws/lambda/6f1c/shardId-0001/2026/11/29/2026-11-29T05.04.03-8e3f1b2a";
        assert_eq!(
            parked_at(key).map(|t| t.to_rfc3339()),
            Some("2026-11-29T05:04:03+00:00".to_owned())
        );
        assert_eq!(parked_at("aws/lambda/batch-1"), None);
    }

    #[test]
    fn sequence_numbers_order_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(sequence_order("900", "1000"), Less);
        assert_eq!(sequence_order("1000", "0999"), Greater);
        assert_eq!(sequence_order("42", "42"), Equal);
    }

    #[test]
    fn a_metadata_only_record_says_the_records_are_not_in_it() {
        let body = br#"{"version":"1.0","DDBStreamBatchInfo":{"shardId":"s","startSequenceNumber":"1","endSequenceNumber":"2"}}"#;
        assert!(matches!(parse(body), Err(RecordError::NoPayload)));
    }

    #[test]
    fn an_sqs_invocation_record_gives_its_range_and_time() {
        // As Lambda sends it to an SQS destination (no requestPayload).
        let body = br#"{"requestContext":{"requestId":"316aa6d0-8154-xmpl-9af7-85d5f4a6bc81","functionArn":"arn:aws:lambda:us-east-2:123456789012:function:myfunction","condition":"RetryAttemptsExhausted","approximateInvokeCount":1},"responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},"version":"1.0","timestamp":"2019-11-14T00:13:49.717Z","DDBStreamBatchInfo":{"shardId":"shardId-00000001573689847184-864758bb","startSequenceNumber":"800000000003126276362","endSequenceNumber":"800000000003126276362","approximateArrivalOfFirstRecord":"2019-11-14T00:13:19Z","approximateArrivalOfLastRecord":"2019-11-14T00:13:19Z","batchSize":1,"streamArn":"arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388"}}"#;
        let b = parse_metadata(body).unwrap();
        assert_eq!(b.info.start_sequence_number, "800000000003126276362");
        assert_eq!(b.info.batch_size, Some(1));
        assert_eq!(b.condition.as_deref(), Some("RetryAttemptsExhausted"));
        assert_eq!(
            b.parked_at.map(|t| t.to_rfc3339()),
            Some("2019-11-14T00:13:49.717+00:00".to_owned())
        );
        assert!(matches!(
            parse_metadata(b"{}"),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn a_malformed_object_is_reported_without_its_content() {
        let err = parse(br#"{"requestPayload": {"Records": "secret-value"}}"#).unwrap_err();
        assert!(!err.to_string().contains("secret-value"), "{err}");
    }
}
