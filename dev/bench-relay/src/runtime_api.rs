//! A local Lambda Runtime API that plays a DynamoDB event source mapping: it hands the records
//! out in batches, in order, and checkpoints like Lambda does with `ReportBatchItemFailures`
//! (everything before the reported record is done; the next batch starts at it; a function
//! error redelivers the whole batch).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

use crate::records::Records;

/// Consecutive invocations without progress after which the run stops (sustained failure).
pub const MAX_INVOCATIONS_WITHOUT_PROGRESS: usize = 3;

/// What the mapping saw.
#[derive(Clone, Debug, Default)]
pub struct MappingStats {
    /// Records before this one are checkpointed (done).
    pub checkpointed: usize,
    pub invocations: usize,
    /// Invocations that handed a record back (a partial batch response or a function error).
    pub handed_back: usize,
    pub function_errors: usize,
    /// Responses that arrived after the invocation's deadline (Lambda would have timed it out).
    pub late: usize,
    /// Longest invocation, from handing out the event to receiving the response.
    pub longest: Duration,
    /// When the function first asked for an event (its init is over).
    pub first_next: Option<Instant>,
    /// When the last record was checkpointed, or the run stopped.
    pub finished: Option<Instant>,
    /// Why the run stopped before every record was checkpointed.
    pub stopped: Option<String>,
}

struct InFlight {
    id: String,
    start: usize,
    len: usize,
    handed_out: Instant,
    deadline: Instant,
}

struct Mapping {
    /// The first record not yet checkpointed.
    next: usize,
    in_flight: Option<InFlight>,
    without_progress: usize,
    stats: MappingStats,
}

/// The runtime API's shared state.
pub struct RuntimeApi {
    records: Arc<Records>,
    batch_size: usize,
    timeout: Duration,
    /// When the run is over, answer `next` with an event the runtime cannot read, so the
    /// function exits (for tools that report at exit, e.g. `strace -c`), instead of keeping it
    /// waiting until the harness kills it.
    exit_when_done: bool,
    mapping: Mutex<Mapping>,
    /// Notified once: every record is checkpointed, or the run stopped.
    pub done: Notify,
}

impl RuntimeApi {
    pub fn new(
        records: Arc<Records>,
        batch_size: usize,
        timeout: Duration,
        exit_when_done: bool,
    ) -> Arc<Self> {
        Arc::new(RuntimeApi {
            records,
            batch_size: batch_size.max(1),
            timeout,
            exit_when_done,
            mapping: Mutex::new(Mapping {
                next: 0,
                in_flight: None,
                without_progress: 0,
                stats: MappingStats::default(),
            }),
            done: Notify::new(),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(self.clone())
    }

    pub fn stats(&self) -> MappingStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mapping> {
        self.mapping.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, mapping: &mut Mapping, stopped: Option<String>) {
        if mapping.stats.finished.is_none() {
            mapping.stats.finished = Some(Instant::now());
            mapping.stats.stopped = stopped;
            self.done.notify_one();
        }
    }

    /// The next event to hand out, or None when the run is over.
    fn hand_out(&self) -> Option<(String, SystemTime, String)> {
        let mut mapping = self.lock();
        let now = Instant::now();
        mapping.stats.first_next.get_or_insert(now);
        if mapping.in_flight.is_some() {
            // The function asked for a new event without answering the last one.
            mapping.stats.function_errors += 1;
        }
        if mapping.next >= self.records.len() || mapping.stats.finished.is_some() {
            self.finish(&mut mapping, None);
            return None;
        }
        mapping.stats.invocations += 1;
        let start = mapping.next;
        let len = self.batch_size.min(self.records.len() - start);
        let id = format!("req-{:08}", mapping.stats.invocations);
        mapping.in_flight = Some(InFlight {
            id: id.clone(),
            start,
            len,
            handed_out: now,
            deadline: now + self.timeout,
        });
        Some((
            id,
            SystemTime::now() + self.timeout,
            self.records.event(start..start + len),
        ))
    }

    /// Checkpoints an answered invocation: up to the reported record, or not at all.
    fn settle(&self, id: &str, failed_at: Result<Option<String>, ()>) {
        let mut mapping = self.lock();
        let Some(flight) = mapping.in_flight.take_if(|f| f.id == id) else {
            return;
        };
        let now = Instant::now();
        let stats = &mut mapping.stats;
        stats.longest = stats.longest.max(now - flight.handed_out);
        stats.late += usize::from(now > flight.deadline);
        let batch = flight.start..flight.start + flight.len;
        let resume = match failed_at {
            Ok(None) => batch.end,
            Ok(Some(seq)) => {
                stats.handed_back += 1;
                // An identifier outside the batch makes Lambda retry the whole batch.
                batch
                    .clone()
                    .find(|&i| self.records.seqs[i] == seq)
                    .unwrap_or(batch.start)
            }
            Err(()) => {
                stats.handed_back += 1;
                stats.function_errors += 1;
                batch.start
            }
        };
        if resume > mapping.next {
            mapping.without_progress = 0;
        } else {
            mapping.without_progress += 1;
        }
        mapping.next = resume;
        mapping.stats.checkpointed = resume;
        if resume >= self.records.len() {
            self.finish(&mut mapping, None);
        } else if mapping.without_progress >= MAX_INVOCATIONS_WITHOUT_PROGRESS {
            let reason = format!(
                "no progress in {} invocations at record {resume}",
                mapping.without_progress
            );
            self.finish(&mut mapping, Some(reason));
        }
    }
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    let Some((id, deadline, body)) = api.hand_out() else {
        if api.exit_when_done {
            // No request id: the runtime fails to read the event and the process exits.
            return StatusCode::OK.into_response();
        }
        // The run is over: keep the function waiting, as Lambda does between invocations,
        // until the harness stops it.
        std::future::pending::<()>().await;
        return StatusCode::GONE.into_response();
    };
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let headers = [
        ("lambda-runtime-aws-request-id", id.clone()),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:relay".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            format!("Root=1-6763a200-{id:0>24};Parent=53995c3f42cd8ad8;Sampled=0"),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    (headers, body).into_response()
}

/// `{"status":"OK"}` with 202, what the Runtime API answers to a response or an error.
fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    api.settle(&id, first_failure(&body));
    accepted()
}

async fn error(State(api): State<Arc<RuntimeApi>>, Path(id): Path<String>) -> Response {
    api.settle(&id, Err(()));
    accepted()
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, body: Bytes) -> Response {
    let mut mapping = api.lock();
    let reason = format!("init error: {}", String::from_utf8_lossy(&body));
    api.finish(&mut mapping, Some(reason));
    accepted()
}

/// The partial batch response's first `itemIdentifier`; Err when it is not one.
fn first_failure(body: &[u8]) -> Result<Option<String>, ()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct BatchResponse {
        batch_item_failures: Vec<Failure>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Failure {
        item_identifier: String,
    }
    let response: BatchResponse = serde_json::from_slice(body).map_err(|_| ())?;
    Ok(response
        .batch_item_failures
        .into_iter()
        .next()
        .map(|f| f.item_identifier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_batch_response_resumes_at_the_reported_record() {
        let records = Arc::new(Records::users(25));
        let api = RuntimeApi::new(records.clone(), 10, Duration::from_secs(5), false);
        let (id, _, _) = api.hand_out().unwrap();
        api.settle(&id, Ok(Some(records.seqs[4].clone())));
        assert_eq!(api.lock().next, 4);
        let (id, _, body) = api.hand_out().unwrap();
        assert!(body.contains(&records.seqs[4]) && body.contains(&records.seqs[13]));
        api.settle(&id, Ok(None));
        assert_eq!(api.lock().next, 14);
        let stats = api.stats();
        assert_eq!((stats.invocations, stats.handed_back), (2, 1));
    }

    #[test]
    fn invocations_without_progress_stop_the_run() {
        let api = RuntimeApi::new(
            Arc::new(Records::users(5)),
            10,
            Duration::from_secs(5),
            false,
        );
        for _ in 0..MAX_INVOCATIONS_WITHOUT_PROGRESS {
            let (id, _, _) = api.hand_out().unwrap();
            api.settle(&id, Err(()));
        }
        assert!(api.stats().stopped.is_some());
        assert!(api.hand_out().is_none());
    }

    #[test]
    fn the_first_failure_is_read_from_the_batch_response() {
        assert_eq!(first_failure(br#"{"batchItemFailures":[]}"#), Ok(None));
        assert_eq!(
            first_failure(br#"{"batchItemFailures":[{"itemIdentifier":"7"}]}"#),
            Ok(Some("7".to_owned()))
        );
        assert_eq!(first_failure(b"null"), Err(()));
    }
}
