//! The relay Lambda: DynamoDB stream batch → EventBridge events, lossless and in order.
//!
//! For each record, in stream order: look up the mapping for its change type (none: skip and
//! count), turn the chosen image into plain JSON ([`json`]), wrap it in the contract's
//! [`outbox_contract::EventDetail`] ([`event`]), pack entries into PutEvents requests ([`batch`])
//! and publish them, retrying what is retryable while the invocation has time ([`publish`]).
//! The first record that cannot be published is returned in `batchItemFailures`, so the event
//! source mapping redelivers from it; no record after it is reported as done.

pub mod batch;
pub mod emf;
pub mod event;
pub mod json;
pub mod publish;
#[cfg(feature = "stream-records")]
pub mod stream;
pub mod wire;

use std::time::{Duration, SystemTime};

use aws_lambda_events::dynamodb::Event;
use lambda_runtime::LambdaEvent;
use outbox_contract::RelayConfig;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::event::{Disposition, Prepared, prepare};
pub use crate::publish::RetryPolicy;
use crate::publish::{PutEventsApi, StopReason, publish};

/// The partial batch response (`ReportBatchItemFailures`):
/// `{"batchItemFailures": [{"itemIdentifier": "<sequence number>"}]}`, the list empty when the
/// whole batch was published. It is `aws_lambda_events`' own type; the relay only ever names a
/// record by a non-empty sequence number, never with a null `itemIdentifier`.
pub use aws_lambda_events::streams::{
    DynamoDbBatchItemFailure as BatchItemFailure, DynamoDbEventResponse as BatchResponse,
};

/// Errors that fail the whole invocation (Lambda then retries the whole batch).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The first unpublished record has no sequence number, so a partial batch response
    /// cannot name it; failing the batch is the only way not to report it as done.
    #[error("record {index} cannot be published and has no sequence number to report: {reason}")]
    UnreportableRecord { index: usize, reason: String },
    /// The invocation's payload is not a DynamoDB stream batch (the error names the kind and
    /// position of the fault, never a value: the payload holds item data).
    #[error("the event is not a DynamoDB stream batch: {0}")]
    MalformedEvent(#[source] outbox_contract::redact::JsonErrorSummary),
}

/// What one invocation did (also logged as one line).
#[derive(Debug, Default)]
pub struct Report {
    pub response: BatchResponse,
    pub records: usize,
    pub published: usize,
    pub skipped: usize,
    pub calls: usize,
    pub retried: usize,
    /// The earliest `ApproximateCreationDateTime` in the batch (none when no record has one).
    pub oldest_record: Option<chrono::DateTime<chrono::Utc>>,
}

/// Per-invocation inputs that do not come from the event.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// When the invocation must have returned (from the Lambda context).
    pub deadline: Instant,
    /// The X-Ray trace header of the invocation, passed on as each entry's TraceHeader.
    pub trace_header: Option<String>,
}

impl Invocation {
    /// Reads the deadline and trace header from the Lambda context.
    pub fn from_context(ctx: &lambda_runtime::Context) -> Self {
        let left = ctx
            .deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Invocation {
            deadline: Instant::now() + left,
            trace_header: ctx.xray_trace_id.clone().filter(|t| !t.is_empty()),
        }
    }
}

/// The relay: its configuration and PutEvents client, built once per execution environment.
/// The binary publishes with [`wire::SignedClient`]; the SDK's client is the default, for the
/// operator's replay and the tests.
#[derive(Clone, Debug)]
pub struct Relay<C = aws_sdk_eventbridge::Client> {
    config: RelayConfig,
    client: C,
    retry: RetryPolicy,
}

impl<C: PutEventsApi> Relay<C> {
    pub fn new(config: RelayConfig, client: C, retry: RetryPolicy) -> Self {
        Relay {
            config,
            client,
            retry,
        }
    }

    /// The Lambda handler.
    pub async fn handle(&self, event: LambdaEvent<Event>) -> Result<BatchResponse, RelayError> {
        let invocation = Invocation::from_context(&event.context);
        let report = self.process(&event.payload, &invocation).await?;
        Ok(self.publish_metrics(report))
    }

    /// The Lambda handler over the payload as JSON text: what the binary runs. Parsing it here
    /// with serde_json costs less than the runtime's own typed deserialization (which tracks
    /// the path of every value for its error message), and a malformed payload is reported
    /// without quoting it.
    pub async fn handle_raw(
        &self,
        event: LambdaEvent<Box<RawValue>>,
    ) -> Result<BatchResponse, RelayError> {
        let payload: Event = serde_json::from_str(event.payload.get())
            .map_err(|e| RelayError::MalformedEvent(e.into()))?;
        let invocation = Invocation::from_context(&event.context);
        let report = self.process(&payload, &invocation).await?;
        Ok(self.publish_metrics(report))
    }

    /// Writes the invocation's EMF line ([`emf`]) when the pipeline is known; returns the
    /// response.
    fn publish_metrics(&self, report: Report) -> BatchResponse {
        if let Some(pipeline) = &self.config.pipeline {
            emf::emit(&report, pipeline);
        }
        report.response
    }

    /// Publishes a stream batch; returns what happened, with the partial batch response.
    pub async fn process(
        &self,
        event: &Event,
        invocation: &Invocation,
    ) -> Result<Report, RelayError> {
        let mut report = Report {
            records: event.records.len(),
            oldest_record: oldest_record(event),
            ..Report::default()
        };
        let batch = self.prepare_batch(event, invocation, &mut report);
        let outcome = publish(
            &self.client,
            &batch.ready,
            self.config.request_size_limit_bytes,
            &self.retry,
            invocation.deadline,
        )
        .await;
        report.published = outcome.published;
        report.calls = outcome.calls;
        report.retried = outcome.retried;
        if let Some((index, reason)) = batch.first_unpublished(outcome.stopped_at) {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = Some(sequence_number_to_report(event, index, reason)?);
            report.response.batch_item_failures.push(failure);
        }
        log_report(&report);
        Ok(report)
    }

    /// Prepares the records in stream order up to the first one that cannot be prepared,
    /// counting the skipped ones.
    fn prepare_batch(
        &self,
        event: &Event,
        invocation: &Invocation,
        report: &mut Report,
    ) -> PreparedBatch {
        let mut batch = PreparedBatch {
            ready: Vec::with_capacity(event.records.len()),
            record_index: Vec::with_capacity(event.records.len()),
            unpreparable: None,
        };
        for (index, record) in event.records.iter().enumerate() {
            match prepare(record, &self.config, invocation.trace_header.as_deref()) {
                Disposition::Publish(p) => {
                    batch.ready.push(p);
                    batch.record_index.push(index);
                }
                Disposition::Skip(change) => {
                    report.skipped += 1;
                    tracing::debug!(%change, "no relay.events entry matches the record: skipped");
                }
                Disposition::Fail(reason) => {
                    tracing::error!(
                        record = index,
                        sequence_number = record.change.sequence_number.as_deref().unwrap_or(""),
                        error = %reason,
                        "record cannot be published"
                    );
                    batch.unpreparable = Some((index, reason.to_string()));
                    break;
                }
            }
        }
        batch
    }
}

/// The records of a batch before the first one that cannot be prepared; that one (if any) is
/// where publishing stops even when everything before it succeeds.
struct PreparedBatch {
    ready: Vec<Prepared>,
    /// The record index (in the event) of each entry of `ready`.
    record_index: Vec<usize>,
    /// The first record that cannot be prepared, and why.
    unpreparable: Option<(usize, String)>,
}

impl PreparedBatch {
    /// The first record in stream order that was not published, and why: where publishing
    /// stopped (logged here, by record index and sequence number), or else the first record
    /// that could not be prepared (logged when it was prepared).
    fn first_unpublished(
        &self,
        stopped_at: Option<(usize, StopReason)>,
    ) -> Option<(usize, String)> {
        match stopped_at {
            Some((entry, reason)) => {
                let record = self.record_index.get(entry).copied().unwrap_or(0);
                log_stop(&reason, record, self.ready.get(entry));
                Some((record, format!("{reason:?}")))
            }
            None => self.unpreparable.clone(),
        }
    }
}

/// The earliest creation time in the batch; a record without one deserializes as the epoch.
fn oldest_record(event: &Event) -> Option<chrono::DateTime<chrono::Utc>> {
    event
        .records
        .iter()
        .map(|r| r.change.approximate_creation_date_time)
        .filter(|t| t.timestamp() > 0)
        .min()
}

/// The sequence number that names record `index` in the partial batch response; without one
/// the whole invocation fails, so the record is never reported as done.
fn sequence_number_to_report(
    event: &Event,
    index: usize,
    reason: String,
) -> Result<String, RelayError> {
    event
        .records
        .get(index)
        .and_then(|r| r.change.sequence_number.clone())
        .filter(|s| !s.is_empty())
        .ok_or(RelayError::UnreportableRecord { index, reason })
}

/// The one log line per invocation.
fn log_report(report: &Report) {
    tracing::info!(
        records = report.records,
        published = report.published,
        skipped = report.skipped,
        calls = report.calls,
        retried = report.retried,
        failed_sequence_number = report
            .response
            .batch_item_failures
            .first()
            .and_then(|f| f.item_identifier.as_deref()),
        "stream batch relayed"
    );
}

fn log_stop(reason: &StopReason, record: usize, prepared: Option<&Prepared>) {
    let sequence_number = prepared.map_or("", |p| p.sequence_number.as_str());
    match reason {
        StopReason::Rejected { code, message } | StopReason::CallFailed { code, message } => {
            tracing::error!(
                record,
                sequence_number,
                code,
                message,
                "PutEvents rejected the event; the batch stops here"
            );
        }
        StopReason::RetriesExhausted { last_code } => {
            tracing::error!(
                record,
                sequence_number,
                last_code,
                "retries exhausted; the batch stops here"
            );
        }
        StopReason::OutOfTime => {
            tracing::warn!(
                record,
                sequence_number,
                "invocation deadline near; the batch stops here"
            );
        }
    }
}
