//! Batches parked with metadata only (SQS and SNS destinations): each invocation record names a
//! shard and sequence range of the table's stream; the records are read back from the stream
//! ([`super::stream`]) while it still holds them (24 hours), shaped into the event Lambda hands
//! the relay (`outbox_relay::stream::to_lambda_event`, as the event source mapping does), and
//! published through the same relay code as an S3 batch ([`super::batch::Run`]).
//!
//! - **Order.** Oldest first (the record's `timestamp`, ties by start sequence number). The first
//!   batch that cannot be fully published stops the run (later batches stay parked), except a
//!   batch the stream no longer holds: it can never be replayed, so it is reported and left, and
//!   the run goes on.
//! - **Never guessed.** A batch is published only when the stream returns its whole range; a
//!   record naming a stream that is not the pipeline's table's is refused.
//! - **Mark.** An SQS message is deleted once its batch is fully published; left parked, it is
//!   made visible again. There is nowhere to record what part of a batch was published: a re-run
//!   publishes that part again (same `eventId`s; consumers deduplicate).

use std::collections::BTreeMap;
use std::time::Instant;

use aws_lambda_events::dynamodb::EventRecord;

use super::batch::Run;
use super::record::{self, MetadataBatch, sequence_order};
use super::stream::{self, Read};
use super::target::stream_of_table;
use super::{Batch, BatchOutcome, Options, Report};
use crate::engine::EngineError;

/// A parked batch as found: its name, its invocation record, its SQS receipt handle.
#[derive(Clone, Debug)]
pub struct Found {
    pub key: String,
    pub body: Vec<u8>,
    pub handle: Option<String>,
}

/// Where the batches come from: what marks them.
pub(super) enum Source<'a> {
    /// An SQS queue: delete when replayed, release otherwise.
    Queue {
        sqs: &'a aws_sdk_sqs::Client,
        url: String,
    },
    /// Invocation records given by the user (SNS): nothing to mark.
    Given,
}

struct Parsed {
    found: Found,
    parsed: Result<MetadataBatch, record::RecordError>,
}

/// How a batch ends, for the run.
enum Next {
    Go,
    Stop,
}

/// The selected batches, oldest first: unreadable records first (the run stops at them).
fn order(found: Vec<Found>, opts: &Options) -> (Vec<Parsed>, Vec<Found>) {
    let ranged = opts.since.is_some() || opts.until.is_some();
    let (mut keep, mut out) = (Vec::new(), Vec::new());
    for f in found {
        let parsed = record::parse_metadata(&f.body);
        let at = parsed.as_ref().ok().and_then(|p| p.parked_at);
        let inside = match at {
            Some(t) => opts.since.is_none_or(|s| t >= s) && opts.until.is_none_or(|u| t < u),
            None => !ranged,
        };
        if inside {
            keep.push(Parsed { found: f, parsed });
        } else {
            out.push(f);
        }
    }
    keep.sort_by(|a, b| match (&a.parsed, &b.parsed) {
        (Ok(a), Ok(b)) => a.parked_at.cmp(&b.parked_at).then_with(|| {
            sequence_order(&a.info.start_sequence_number, &b.info.start_sequence_number)
        }),
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => std::cmp::Ordering::Equal,
    });
    (keep, out)
}

/// Replays `found` into `report`.
pub(super) async fn replay(
    run: &Run<'_>,
    streams: &aws_sdk_dynamodbstreams::Client,
    source: &Source<'_>,
    found: Vec<Found>,
    report: &mut Report,
    started: Instant,
    on_batch: &mut (dyn FnMut(&Report) + Send),
) -> Result<(), EngineError> {
    let opts = run.opts;
    let (selected, mut untouched) = order(found, opts);
    report.total = selected.len();
    let take = opts.max_batches.unwrap_or(usize::MAX);
    let mut stopped = false;
    for (i, p) in selected.into_iter().enumerate() {
        if stopped || i >= take {
            untouched.push(p.found);
            continue;
        }
        let (batch, next) = one(streams, run, &p).await;
        let mark = match (&batch.outcome, opts.dry_run) {
            (_, true) => Ok(()),
            (BatchOutcome::Replayed, false) => source.done(&p.found).await,
            _ => source.release(&p.found).await,
        };
        report.events += batch.events;
        report.batches.push(batch);
        if let Err(e) = mark {
            report.error = Some(e.to_string());
            stopped = true;
        }
        if let Next::Stop = next {
            stopped = true;
        }
        report.elapsed = started.elapsed();
        on_batch(report);
    }
    if !opts.dry_run {
        for f in &untouched {
            source.release(f).await?;
        }
    }
    Ok(())
}

impl Source<'_> {
    async fn done(&self, f: &Found) -> Result<(), EngineError> {
        match (self, &f.handle) {
            (Source::Queue { sqs, url }, Some(h)) => super::queue::delete(sqs, url, h).await,
            _ => Ok(()),
        }
    }

    async fn release(&self, f: &Found) -> Result<(), EngineError> {
        match (self, &f.handle) {
            (Source::Queue { sqs, url }, Some(h)) => super::queue::release(sqs, url, h).await,
            _ => Ok(()),
        }
    }
}

/// One batch: read back, prepared, published (not in a dry run).
async fn one(
    streams: &aws_sdk_dynamodbstreams::Client,
    run: &Run<'_>,
    p: &Parsed,
) -> (Batch, Next) {
    let (target, opts) = (run.target, run.opts);
    let parsed = match &p.parsed {
        Ok(m) => m,
        Err(e) => {
            let mut batch = describe(&p.found.key, None);
            batch.outcome = BatchOutcome::Left(format!("{}: {e}", p.found.key));
            return (batch, Next::Stop);
        }
    };
    let mut batch = describe(&p.found.key, Some(parsed));
    let left = |mut batch: Batch, why: String, next: Next| {
        batch.outcome = BatchOutcome::Left(why);
        (batch, next)
    };
    let Some(stream_arn) = parsed.info.stream_arn.as_deref() else {
        let why = "the invocation record names no DDBStreamBatchInfo.streamArn".to_owned();
        return left(batch, why, Next::Stop);
    };
    if !stream_of_table(stream_arn, &target.table_arn) {
        let why = format!(
            "refused: DDBStreamBatchInfo.streamArn {stream_arn} is not a stream of the pipeline's table {}",
            target.table_arn
        );
        return left(batch, why, Next::Stop);
    }
    let records = match stream::read(streams, stream_arn, &parsed.info).await {
        Ok(Read::Whole(r)) => r,
        Ok(Read::Gone(why)) => {
            let n = parsed
                .info
                .batch_size
                .map_or_else(|| "its".to_owned(), |n| n.to_string());
            let why = format!(
                "no longer in the stream (24-hour retention): {n} records cannot be replayed ({why})"
            );
            return left(batch, why, Next::Go);
        }
        Err(e) => return left(batch, e.to_string(), Next::Stop),
    };
    let event = match lambda_event(&records, stream_arn) {
        Ok(e) => e,
        Err(e) => return left(batch, e, Next::Stop),
    };
    for r in &event.records {
        *batch.changes.entry(r.event_name.clone()).or_insert(0) += 1;
    }
    let all: Vec<&EventRecord> = event.records.iter().collect();
    let (ready, skipped, problem) = run.prepare(&all);
    batch.skipped = skipped;
    batch.problem = problem.clone();
    if opts.dry_run {
        batch.events = ready.len();
        batch.outcome = BatchOutcome::WouldReplay;
        return (batch, Next::Go);
    }
    let (published, stopped) = run.send(&ready).await;
    batch.events = published.len();
    match stopped.or(problem) {
        None => {
            batch.outcome = BatchOutcome::Replayed;
            (batch, Next::Go)
        }
        Some(why) => left(batch, why, Next::Stop),
    }
}

/// The event exactly as the relay receives it from the event source mapping: shaped by the
/// shared conversion, then through the JSON Lambda delivers (its `ApproximateCreationDateTime`
/// is whole epoch seconds), so the envelope's times are the relay's to the digit.
fn lambda_event(
    records: &[aws_sdk_dynamodbstreams::types::Record],
    stream_arn: &str,
) -> Result<aws_lambda_events::dynamodb::Event, String> {
    let event =
        outbox_relay::stream::to_lambda_event(records, stream_arn).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec(&event).map_err(|e| format!("shaping the batch: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("shaping the batch: {e}"))
}

/// The batch's description from its invocation record.
fn describe(key: &str, parsed: Option<&MetadataBatch>) -> Batch {
    let info = parsed.map(|p| p.info.clone()).unwrap_or_default();
    Batch {
        key: key.to_owned(),
        parked_at: parsed.and_then(|p| p.parked_at),
        shard_id: info.shard_id,
        first_sequence: info.start_sequence_number,
        last_sequence: info.end_sequence_number,
        condition: parsed.and_then(|p| p.condition.clone()),
        first_arrival: info.approximate_arrival_of_first_record,
        last_arrival: info.approximate_arrival_of_last_record,
        changes: BTreeMap::new(),
        events: 0,
        skipped: 0,
        already_published: 0,
        problem: None,
        outcome: BatchOutcome::Left("not read".to_owned()),
    }
}
