//! One parked batch: read, prepared by the relay's record → event function, published by the
//! relay's publisher, then moved (fully published) or its published records recorded (not).

use std::collections::BTreeMap;
use std::time::Instant;

use aws_lambda_events::dynamodb::EventRecord;
use aws_sdk_eventbridge::config::retry::RetryConfig;
use outbox_relay::event::{Disposition, Prepared, prepare};
use outbox_relay::publish::{StopReason, publish};

use super::record::{self, ParkedBatch, sequence_order};
use super::store::{self, Listed, Marks};
use super::target::Target;
use super::{Batch, BatchOutcome, Options, Report};
use crate::engine::{AwsClients, EngineError};

/// What every batch of a run uses.
pub(super) struct Run<'a> {
    s3: &'a aws_sdk_s3::Client,
    /// The S3 failure bucket (empty for destinations that are not S3).
    bucket: &'a str,
    /// The engine's EventBridge client with the SDK's retries off: the relay's publisher does
    /// the retrying, as in the relay.
    events: aws_sdk_eventbridge::Client,
    pub(super) target: &'a Target,
    pub(super) opts: &'a Options,
}

/// A batch read from its object (or why it cannot be read).
struct Loaded {
    listed: Listed,
    body: Vec<u8>,
    parsed: Result<ParkedBatch, record::RecordError>,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        clients: &'a AwsClients,
        bucket: &'a str,
        target: &'a Target,
        opts: &'a Options,
    ) -> Self {
        let events = aws_sdk_eventbridge::Client::from_conf(
            clients
                .eventbridge
                .config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Run {
            s3: &clients.s3,
            bucket,
            events,
            target,
            opts,
        }
    }

    /// Replays a group of batches parked in the same second, in start sequence order; true when
    /// the run must stop (a batch left parked, or an error).
    pub(super) async fn group(
        &self,
        group: Vec<Listed>,
        report: &mut Report,
        started: Instant,
        on_batch: &mut (dyn FnMut(&Report) + Send),
    ) -> bool {
        let mut loaded = Vec::with_capacity(group.len());
        for listed in group {
            match store::read(self.s3, self.bucket, &listed.key).await {
                Ok(Some(body)) => {
                    let parsed = record::parse(&body);
                    loaded.push(Loaded {
                        listed,
                        body,
                        parsed,
                    });
                }
                // Gone since the listing (another run replayed it).
                Ok(None) => report.total = report.total.saturating_sub(1),
                Err(e) => {
                    report.error = Some(e.to_string());
                    return true;
                }
            }
        }
        // A total order: unreadable objects first (the run stops at them), then by start
        // sequence number.
        loaded.sort_by(|a, b| match (&a.parsed, &b.parsed) {
            (Ok(a), Ok(b)) => {
                sequence_order(&a.info.start_sequence_number, &b.info.start_sequence_number)
            }
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => std::cmp::Ordering::Equal,
        });
        for l in loaded {
            let result = self.one(l).await;
            let stop = match result {
                Ok(batch) => {
                    report.events += batch.events;
                    let left = matches!(batch.outcome, BatchOutcome::Left(_));
                    report.batches.push(batch);
                    left
                }
                Err((batch, e)) => {
                    report.batches.push(*batch);
                    report.error = Some(e.to_string());
                    true
                }
            };
            report.elapsed = started.elapsed();
            on_batch(report);
            if stop {
                return true;
            }
        }
        false
    }

    /// One batch; on an AWS error, the batch (Left) and the error.
    async fn one(&self, l: Loaded) -> Result<Batch, (Box<Batch>, EngineError)> {
        let parsed = match l.parsed {
            Ok(p) => p,
            Err(e) => {
                let mut batch = describe(&l.listed, None);
                batch.outcome = BatchOutcome::Left(format!("{}: {e}", l.listed.key));
                return Ok(batch);
            }
        };
        let mut batch = describe(&l.listed, Some(&parsed));
        let fail = |mut batch: Batch, e: EngineError| {
            batch.outcome = BatchOutcome::Left(e.to_string());
            Err((Box::new(batch), e))
        };
        let marks = match store::marks(self.s3, self.bucket, &l.listed.key).await {
            Ok(m) => m,
            Err(e) => return fail(batch, e),
        };
        if marks.done {
            // Replayed by an earlier run whose move was interrupted: finish the move.
            batch.outcome = if self.opts.dry_run {
                BatchOutcome::WouldReplay
            } else if let Err(e) = self.finish(&l.listed.key, None, &marks).await {
                return fail(batch, e);
            } else {
                BatchOutcome::Replayed
            };
            return Ok(batch);
        }
        let records: Vec<&EventRecord> = parsed
            .event
            .records
            .iter()
            .filter(|r| {
                self.opts.republish
                    || !r
                        .change
                        .sequence_number
                        .as_ref()
                        .is_some_and(|s| marks.published.sequence_numbers.contains(s))
            })
            .collect();
        batch.already_published = parsed.event.records.len() - records.len();
        let (ready, skipped, problem) = self.prepare(&records);
        batch.skipped = skipped;
        batch.problem = problem.clone();
        if self.opts.dry_run {
            batch.events = ready.len();
            batch.outcome = BatchOutcome::WouldReplay;
            return Ok(batch);
        }
        match self
            .publish(&l.listed.key, l.body, &ready, problem, marks)
            .await
        {
            Ok((events, outcome)) => {
                batch.events = events;
                batch.outcome = outcome;
                Ok(batch)
            }
            Err((events, e)) => {
                batch.events = events;
                fail(batch, e)
            }
        }
    }

    /// The records in stream order up to the first one the relay cannot publish: the entries,
    /// the records skipped (unmapped change type), and the problem that stopped it.
    pub(super) fn prepare(
        &self,
        records: &[&EventRecord],
    ) -> (Vec<Prepared>, usize, Option<String>) {
        let mut ready = Vec::with_capacity(records.len());
        let mut skipped = 0;
        for r in records {
            match prepare(r, &self.target.relay, None) {
                Disposition::Publish(p) => ready.push(p),
                Disposition::Skip(_) => skipped += 1,
                Disposition::Fail(e) => {
                    let seq = r.change.sequence_number.as_deref().unwrap_or("?");
                    return (ready, skipped, Some(format!("record {seq}: {e}")));
                }
            }
        }
        (ready, skipped, None)
    }

    /// Publishes the entries; moves the batch when all of it is published, else records what
    /// was. Returns the events published and the outcome, or (events published, the S3 error).
    async fn publish(
        &self,
        key: &str,
        body: Vec<u8>,
        ready: &[Prepared],
        problem: Option<String>,
        marks: Marks,
    ) -> Result<(usize, BatchOutcome), (usize, EngineError)> {
        let (published, stopped) = self.send(ready).await;
        let events = published.len();
        let Some(reason) = stopped.or(problem) else {
            self.finish(key, Some(body), &marks)
                .await
                .map_err(|e| (events, e))?;
            return Ok((events, BatchOutcome::Replayed));
        };
        if events > 0 {
            let mut record = marks.published;
            record.sequence_numbers.extend(
                published
                    .iter()
                    .filter_map(|i| ready.get(*i))
                    .map(|p| p.sequence_number.clone()),
            );
            store::record_published(self.s3, self.bucket, key, &record)
                .await
                .map_err(|e| (events, e))?;
        }
        Ok((events, BatchOutcome::Left(reason)))
    }

    /// Publishes the entries with the relay's publisher: the indices published, and why it
    /// stopped before the end (None: all published).
    pub(super) async fn send(&self, ready: &[Prepared]) -> (Vec<usize>, Option<String>) {
        let deadline = tokio::time::Instant::now() + self.opts.batch_deadline;
        let limit = self.target.relay.request_size_limit_bytes;
        let out = publish(&self.events, ready, limit, &self.opts.retry, deadline).await;
        let stopped = out
            .stopped_at
            .map(|(i, reason)| stop_text(ready.get(i), &reason));
        (out.published_entries, stopped)
    }

    async fn finish(
        &self,
        key: &str,
        body: Option<Vec<u8>>,
        marks: &Marks,
    ) -> Result<(), EngineError> {
        store::mark_replayed(self.s3, self.bucket, key, body, marks.has_record).await
    }
}

/// Why publishing stopped, naming the record.
fn stop_text(entry: Option<&Prepared>, reason: &StopReason) -> String {
    let seq = entry.map_or("?", |p| p.sequence_number.as_str());
    match reason {
        StopReason::Rejected { code, message } => {
            format!("record {seq}: PutEvents rejected the event: {code} {message}")
        }
        StopReason::CallFailed { code, message } => {
            format!("record {seq}: PutEvents failed: {code} {message}")
        }
        StopReason::RetriesExhausted { last_code } => {
            format!("record {seq}: retries exhausted (last error {last_code})")
        }
        StopReason::OutOfTime => format!("record {seq}: out of time for this batch"),
    }
}

/// The batch's description from its key and invocation record.
fn describe(listed: &Listed, parsed: Option<&ParkedBatch>) -> Batch {
    let mut changes = BTreeMap::new();
    let info = parsed.map(|p| p.info.clone()).unwrap_or_default();
    if let Some(p) = parsed {
        for r in &p.event.records {
            *changes.entry(r.event_name.clone()).or_insert(0) += 1;
        }
    }
    Batch {
        key: listed.key.clone(),
        parked_at: listed.parked_at,
        shard_id: info.shard_id,
        first_sequence: info.start_sequence_number,
        last_sequence: info.end_sequence_number,
        condition: parsed.and_then(|p| p.condition.clone()),
        first_arrival: info.approximate_arrival_of_first_record,
        last_arrival: info.approximate_arrival_of_last_record,
        changes,
        events: 0,
        skipped: 0,
        already_published: 0,
        problem: None,
        outcome: BatchOutcome::Left("not read".to_owned()),
    }
}
