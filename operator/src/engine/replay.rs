//! Replay of parked batches: the batches the relay's event source mapping gave up on and wrote
//! to the pipeline's S3 failure destination are published again, through the relay's own code.
//!
//! - **Same events.** Each record goes through the relay library's record → event function
//!   (`outbox_relay::event::prepare`) with the relay's configuration as the reconcile builds it
//!   from the spec ([`target`]), and through its ordered, retrying publisher
//!   (`outbox_relay::publish::publish`, SDK retries off as in the relay): same envelope, same
//!   change-type mapping, same deterministic `eventId`, same throttling and partial-failure
//!   handling. Consumers deduplicate on `eventId`.
//! - **Order.** Batches go oldest first (the time Lambda parked them, from the key; ties by
//!   start sequence number). Within one shard Lambda parks a batch only after the batch before
//!   it, so this keeps every item's order. Within a batch the publisher keeps stream order per
//!   item. The first batch that cannot be fully published stops the run: every later batch stays
//!   parked, so no later change of an item is published before an earlier one.
//! - **Nothing twice.** A fully replayed batch is moved to `replayed/<key>` (copy, then delete the
//!   original: the only copy is never deleted before its events are published). A batch that
//!   fails part-way stays parked, and the sequence numbers whose events were published are
//!   recorded in `replayed/<key>.published.json`; the next run skips them unless
//!   [`Options::republish`].
//! - **Dry run** uses the engine's read-only clients: every mutating call is refused before it is
//!   sent.
//!
//! SQS and SNS destinations receive metadata only (shard and sequence range): the records are
//! read back from the stream while it holds them (24 hours), see [`metadata`]. An SQS queue is
//! read with ReceiveMessage and a replayed batch's message deleted ([`queue`]); an SNS topic
//! delivers to its subscribers and cannot be listed: its batches are replayed from invocation
//! records the user gives ([`Options::invocation_records`]), else replay says so
//! ([`ReplayError::SnsNotListable`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use outbox_contract::ConfigError;
use outbox_relay::RetryPolicy;

use crate::crd::OutboxPipeline;
use crate::engine::{Engine, EngineError};

mod batch;
mod metadata;
mod queue;
pub mod record;
mod store;
mod stream;
pub mod target;

pub use store::Listed;

/// What to replay, and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Read and count only: no event published, no object written or deleted.
    pub dry_run: bool,
    /// Only batches parked at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only batches parked before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many batches (the oldest).
    pub max_batches: Option<usize>,
    /// Publish again the records an earlier run recorded as published.
    pub republish: bool,
    /// The relay's retry policy (its default unless a test shortens it).
    pub retry: RetryPolicy,
    /// How long one batch may take to publish, retries included.
    pub batch_deadline: Duration,
    /// Invocation records to replay instead of listing the destination, as (name, JSON body):
    /// how batches parked to an SNS topic are replayed (saved by a subscriber). Read back from
    /// the stream; nothing is marked.
    pub invocation_records: Vec<(String, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            since: None,
            until: None,
            max_batches: None,
            republish: false,
            retry: RetryPolicy::default(),
            batch_deadline: Duration::from_secs(15 * 60),
            invocation_records: Vec::new(),
        }
    }
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Aws(EngineError),
    #[error("the pipeline is not provisioned: {0}")]
    NotProvisioned(String),
    #[error(
        "the failure destination {0} is an SNS topic: the batches parked there were delivered to its subscribers and cannot be listed; give the invocation records a subscriber saved with --invocation-record FILE to replay them from the stream"
    )]
    SnsNotListable(String),
    #[error("the failure destination {0} is neither an S3 bucket, an SQS queue nor an SNS topic")]
    Unsupported(String),
    #[error("the relay's configuration built from spec.relay is invalid: {0}")]
    RelayConfig(#[source] ConfigError),
    #[error("this reconciler cannot replay parked batches")]
    Unavailable,
}

/// How one batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every event published; the batch moved under `replayed/`.
    Replayed,
    /// Dry run: what would be published.
    WouldReplay,
    /// Still parked, with why (what was published of it is recorded).
    Left(String),
}

/// One parked batch: what it holds and what replay did with it.
#[derive(Clone, Debug)]
pub struct Batch {
    pub key: String,
    pub parked_at: Option<DateTime<Utc>>,
    pub shard_id: String,
    pub first_sequence: String,
    pub last_sequence: String,
    /// Why Lambda parked it (`RetryAttemptsExhausted`, …).
    pub condition: Option<String>,
    pub first_arrival: Option<String>,
    pub last_arrival: Option<String>,
    /// Records per change type (`INSERT`, `MODIFY`, `REMOVE`).
    pub changes: BTreeMap<String, usize>,
    /// Events published by this run (dry run: to be published).
    pub events: usize,
    /// Records whose change type the relay does not map (never published, as by the relay).
    pub skipped: usize,
    /// Records an earlier run published (skipped unless republishing).
    pub already_published: usize,
    /// A record the relay cannot publish as it is (the batch stops there).
    pub problem: Option<String>,
    pub outcome: BatchOutcome,
}

/// A replay run: the batches handled, in order, and the totals.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub destination: String,
    pub dry_run: bool,
    /// Parked batches selected (time range applied) before `max_batches`.
    pub total: usize,
    pub batches: Vec<Batch>,
    /// Events published (dry run: to be published).
    pub events: usize,
    pub elapsed: Duration,
    /// An error that stopped the run (the batch it stopped at is Left).
    pub error: Option<String>,
}

impl Report {
    pub fn replayed(&self) -> usize {
        self.batches
            .iter()
            .filter(|b| b.outcome == BatchOutcome::Replayed)
            .count()
    }

    /// Batches still parked after the run (all of them after a dry run).
    pub fn left(&self) -> usize {
        self.total.saturating_sub(self.replayed())
    }

    /// Events per second over the run so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        }
    }
}

/// Replays the parked batches of `pipeline` (see the module documentation). `on_batch` sees the
/// report after each batch (progress). An AWS error while replaying stops the run and is in
/// [`Report::error`]; an error before any batch is [`ReplayError`].
pub async fn replay(
    engine: &Engine,
    pipeline: &OutboxPipeline,
    opts: &Options,
    on_batch: &mut (dyn FnMut(&Report) + Send),
) -> Result<Report, ReplayError> {
    let started = Instant::now();
    // The pipeline's own account and region (spec.accountRef), read-only for a dry run.
    let clients = engine
        .pipeline_clients(pipeline, opts.dry_run)
        .await
        .map_err(ReplayError::Aws)?;
    let target = target::resolve(&clients, engine.config(), pipeline).await?;
    let mut report = Report {
        destination: target.destination.clone(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let (source, found) = match &target.parked {
        _ if !opts.invocation_records.is_empty() => (metadata::Source::Given, given(opts)),
        target::Parked::S3 { bucket } => {
            let listed = store::parked(&clients.s3, bucket)
                .await
                .map_err(ReplayError::Aws)?;
            let run = batch::Run::new(&clients, bucket, &target, opts);
            s3(&run, listed, &mut report, started, on_batch).await;
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        target::Parked::Sqs {
            queue_name,
            account,
        } => {
            let url = queue::url(&clients.sqs, queue_name, account)
                .await
                .map_err(ReplayError::Aws)?;
            let found = queue::receive(&clients.sqs, &url, opts.dry_run)
                .await
                .map_err(ReplayError::Aws)?;
            let sqs = &clients.sqs;
            (metadata::Source::Queue { sqs, url }, found)
        }
        target::Parked::Sns => return Err(ReplayError::SnsNotListable(target.destination)),
    };
    let run = batch::Run::new(&clients, "", &target, opts);
    let streams = &clients.dynamodbstreams;
    let result = metadata::replay(
        &run,
        streams,
        &source,
        found,
        &mut report,
        started,
        on_batch,
    )
    .await;
    if let Err(e) = result {
        report.error.get_or_insert(e.to_string());
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The invocation records the user gave, as parked batches.
fn given(opts: &Options) -> Vec<metadata::Found> {
    opts.invocation_records
        .iter()
        .map(|(name, body)| metadata::Found {
            key: name.clone(),
            body: body.clone(),
            handle: None,
        })
        .collect()
}

/// The S3 failure bucket's batches.
async fn s3(
    run: &batch::Run<'_>,
    listed: Vec<Listed>,
    report: &mut Report,
    started: Instant,
    on_batch: &mut (dyn FnMut(&Report) + Send),
) {
    let selected = select(listed, run.opts);
    report.total = selected.len();
    let take = run.opts.max_batches.unwrap_or(usize::MAX);
    for group in same_second(selected.into_iter().take(take).collect()) {
        let stop = run.group(group, report, started, on_batch).await;
        if stop {
            break;
        }
    }
}

/// The batches parked within the time range, oldest first (unknown times first; with a time
/// range, a batch whose time is unknown is left out).
pub fn select(mut listed: Vec<Listed>, opts: &Options) -> Vec<Listed> {
    let ranged = opts.since.is_some() || opts.until.is_some();
    listed.retain(|l| match l.parked_at {
        Some(t) => opts.since.is_none_or(|s| t >= s) && opts.until.is_none_or(|u| t < u),
        None => !ranged,
    });
    listed.sort_by(|a, b| {
        a.parked_at
            .cmp(&b.parked_at)
            .then_with(|| a.key.cmp(&b.key))
    });
    listed
}

/// Consecutive batches parked in the same second: their order is settled by their start
/// sequence numbers once read.
fn same_second(listed: Vec<Listed>) -> Vec<Vec<Listed>> {
    let mut groups: Vec<Vec<Listed>> = Vec::new();
    for l in listed {
        match groups.last_mut() {
            Some(g) if l.parked_at.is_some() && g[0].parked_at == l.parked_at => g.push(l),
            _ => groups.push(vec![l]),
        }
    }
    groups
}

#[cfg(test)]
#[path = "replay/tests.rs"]
mod tests;
