//! Reads one parked batch's records back from the DynamoDB stream, by the shard and sequence
//! range its invocation record names (destinations that receive metadata only: SQS, SNS).
//!
//! Calls: GetShardIterator (`AT_SEQUENCE_NUMBER` the batch's first sequence number), then
//! GetRecords until past its last one. The stream keeps records 24 hours: a batch is replayed
//! only when the stream still holds the whole range — the first record returned is the batch's
//! first, the last one read is its last. Anything else (a trimmed range, an expired iterator, a
//! shard or stream gone, fewer records than the range) is [`Read::Gone`]: never a partial batch
//! guessed from what remains.

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

use super::record::{BatchInfo, sequence_order};
use crate::engine::EngineError;
use crate::engine::errors::aws_error;

/// The most GetRecords pages read for one batch (a batch holds at most 10,000 records; a page up
/// to 1,000), and the most empty pages in a row before the range is taken as not all there.
const MAX_PAGES: usize = 64;
const MAX_EMPTY_PAGES: usize = 5;

/// What the stream holds of a batch.
#[derive(Debug)]
pub enum Read {
    /// Every record of the range, in stream order.
    Whole(Vec<Record>),
    /// The stream no longer holds (all of) the range: why.
    Gone(String),
}

/// Error codes that mean the stream no longer holds the records.
fn is_gone(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "TrimmedDataAccessException" | "ExpiredIteratorException" | "ResourceNotFoundException"
        )
    )
}

fn seq(r: &Record) -> &str {
    r.dynamodb()
        .and_then(|d| d.sequence_number())
        .unwrap_or_default()
}

/// Reads the records of the range `info` names from `stream_arn`.
pub async fn read(
    client: &Client,
    stream_arn: &str,
    info: &BatchInfo,
) -> Result<Read, EngineError> {
    let (start, end) = (
        info.start_sequence_number.as_str(),
        info.end_sequence_number.as_str(),
    );
    let resource = format!("dynamodb stream {stream_arn} shard {}", info.shard_id);
    let iterator = client
        .get_shard_iterator()
        .stream_arn(stream_arn)
        .shard_id(&info.shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(start)
        .send()
        .await;
    let mut iterator = match iterator {
        Ok(out) => out.shard_iterator,
        Err(e) if is_gone(e.code()) => {
            return Ok(Read::Gone(format!(
                "GetShardIterator: {}",
                e.code().unwrap_or_default()
            )));
        }
        Err(e) => return Err(aws_error(&e, "dynamodb:GetShardIterator", &resource)),
    };
    let mut records: Vec<Record> = Vec::new();
    let mut empty = 0;
    for _ in 0..MAX_PAGES {
        let Some(it) = iterator.take() else { break };
        let page = match client.get_records().shard_iterator(it).send().await {
            Ok(p) => p,
            Err(e) if is_gone(e.code()) => {
                return Ok(Read::Gone(format!(
                    "GetRecords: {}",
                    e.code().unwrap_or_default()
                )));
            }
            Err(e) => return Err(aws_error(&e, "dynamodb:GetRecords", &resource)),
        };
        empty = if page.records().is_empty() {
            empty + 1
        } else {
            0
        };
        let mut past = false;
        for r in page.records() {
            if sequence_order(seq(r), end).is_gt() {
                past = true;
                break;
            }
            records.push(r.clone());
        }
        if past
            || records
                .last()
                .is_some_and(|r| sequence_order(seq(r), end).is_eq())
            || empty >= MAX_EMPTY_PAGES
        {
            break;
        }
        iterator = page.next_shard_iterator;
    }
    Ok(whole(records, info))
}

/// The records when they are exactly the batch's range, else why not.
pub fn whole(records: Vec<Record>, info: &BatchInfo) -> Read {
    let (start, end) = (
        info.start_sequence_number.as_str(),
        info.end_sequence_number.as_str(),
    );
    let first = records.first().map(seq);
    let last = records.last().map(seq);
    if first.is_none_or(|f| !sequence_order(f, start).is_eq()) {
        return Read::Gone(format!(
            "the stream has no record at the batch's first sequence number {start}"
        ));
    }
    if last.is_none_or(|l| !sequence_order(l, end).is_eq()) {
        return Read::Gone(format!(
            "the stream holds the range only up to {} of {start}..{end}",
            last.unwrap_or("?")
        ));
    }
    if let Some(size) = info.batch_size
        && (records.len() as u64) < size
    {
        return Read::Gone(format!(
            "the stream holds {} of the batch's {size} records",
            records.len()
        ));
    }
    Read::Whole(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::StreamRecord;

    fn rec(seq: &str) -> Record {
        Record::builder()
            .dynamodb(StreamRecord::builder().sequence_number(seq).build())
            .build()
    }

    fn info(start: &str, end: &str, size: u64) -> BatchInfo {
        BatchInfo {
            shard_id: "s".into(),
            start_sequence_number: start.into(),
            end_sequence_number: end.into(),
            batch_size: Some(size),
            ..BatchInfo::default()
        }
    }

    #[test]
    fn only_the_whole_range_is_replayed() {
        let all = || vec![rec("900"), rec("950"), rec("1000")];
        assert!(matches!(whole(all(), &info("900", "1000", 3)), Read::Whole(r) if r.len() == 3));
        // The first record is trimmed: the stream starts after the batch did.
        assert!(matches!(
            whole(all(), &info("800", "1000", 3)),
            Read::Gone(_)
        ));
        // The range goes beyond what the stream returned.
        assert!(matches!(
            whole(all(), &info("900", "1100", 3)),
            Read::Gone(_)
        ));
        assert!(matches!(
            whole(vec![], &info("900", "1000", 3)),
            Read::Gone(_)
        ));
        // Fewer records than the batch held.
        assert!(matches!(
            whole(all(), &info("900", "1000", 4)),
            Read::Gone(_)
        ));
    }

    #[test]
    fn gone_errors_are_the_retention_ones() {
        assert!(is_gone(Some("TrimmedDataAccessException")));
        assert!(is_gone(Some("ExpiredIteratorException")));
        assert!(!is_gone(Some("ThrottlingException")));
        assert!(!is_gone(None));
    }
}
