//! Publishing prepared entries with PutEvents: in order, retrying what is retryable while the
//! invocation has time left, and stopping at the first record that cannot be published.

use std::collections::VecDeque;
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::operation::put_events::PutEventsError;
use rand::Rng as _;
use tokio::time::Instant;

use crate::batch::next_request_len;
use crate::event::Prepared;

/// Entry error codes PutEvents reports for an entry that may succeed when sent again.
pub const RETRYABLE_ENTRY_CODES: [&str; 2] = ["ThrottlingException", "InternalFailure"];

/// Call-level error codes that are worth another call.
const TRANSIENT_CALL_CODES: [&str; 6] = [
    "ThrottlingException",
    "InternalFailure",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
];

/// How hard to retry.
///
/// After a call that published **some** entries while others failed retryably (throttled), the
/// relay waits in proportion: [`RetryPolicy::proportional_delay`], which slows its sending rate
/// by the share the service refused. The first call in a row that published **nothing** waits
/// the same way, counting one entry as published (a lone retried entry throttled once more says
/// little about the account). From the second such call in a row it backs off exponentially:
/// [`RetryPolicy::delay`]`(n)` for the n-th exponential step. Any progress starts over.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First exponential delay (after the second call in a row that published nothing);
    /// doubles per further such call.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Sends of one entry before it counts as unpublishable.
    pub max_attempts: u32,
    /// Time kept free before the invocation deadline: no call or sleep ends inside it, so the
    /// function always returns its batch response before Lambda times it out.
    pub reserve: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_attempts: 10,
            reserve: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter: a random delay in [d/2, d], d = min(max, base·2^(n-1)).
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let exp = consecutive_failures.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = full / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// The wait after a call that took `call`, in which `failed` entries failed retryably and
    /// `published` were published: `call · failed / published` (`published` counted as at
    /// least 1), at most `max_delay`.
    ///
    /// Sending then takes `1 / (1 - f)` times as long, f = failed / sent: the rate of entries
    /// offered drops by the share the service refused, to the rate it accepted. A few throttled
    /// entries cost a few percent of the time, never a doubling; a mostly throttled call waits
    /// many times its own duration.
    pub fn proportional_delay(&self, call: Duration, failed: usize, published: usize) -> Duration {
        if failed == 0 {
            return Duration::ZERO;
        }
        let ratio = failed as f64 / published.max(1) as f64;
        call.mul_f64(ratio).min(self.max_delay)
    }
}

/// Why publishing stopped before every entry was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// PutEvents rejected the entry with a code that retrying cannot fix.
    Rejected { code: String, message: String },
    /// The whole call failed with an error that retrying cannot fix.
    CallFailed { code: String, message: String },
    /// The entry was sent `max_attempts` times without success.
    RetriesExhausted { last_code: String },
    /// Not enough time left in the invocation for another attempt.
    OutOfTime,
}

/// The result of publishing a queue of entries.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Entries published, counted once each.
    pub published: usize,
    /// The index (in the `entries` given) of each published entry, in the order PutEvents
    /// accepted them. Entries after the stop may be among them (they shared the last request):
    /// a replay records exactly these, so none is published twice.
    pub published_entries: Vec<usize>,
    /// PutEvents calls made.
    pub calls: usize,
    /// Entry sends that were retries.
    pub retried: usize,
    /// The first entry (in stream order) that was not published, and why.
    pub stopped_at: Option<(usize, StopReason)>,
}

struct Pending<'a> {
    index: usize,
    prepared: &'a Prepared,
    attempts: u32,
    last_code: String,
}

impl crate::batch::Packable for Pending<'_> {
    fn item_key(&self) -> &str {
        &self.prepared.item_key
    }
    fn size(&self) -> usize {
        self.prepared.size
    }
}

/// What one PutEvents call came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Per-entry outcome, in request order: None = published, Some(code, message) = failed.
    Entries(Vec<Option<(String, String)>>),
    /// The call failed as a whole and may succeed when made again (the error code).
    Transient(String),
    /// The call failed as a whole and another one cannot fix it (code, message).
    Terminal(String, String),
}

/// Where publishing stopped: the index of the first entry (in stream order) not published, and why.
type Stop = (usize, StopReason);

/// Publishes `entries` (in stream order) and reports how far it got.
pub async fn publish(
    client: &impl PutEventsApi,
    entries: &[Prepared],
    limit_bytes: usize,
    policy: &RetryPolicy,
    deadline: Instant,
) -> PublishOutcome {
    let mut run = Publishing {
        queue: entries
            .iter()
            .enumerate()
            .map(|(index, prepared)| Pending {
                index,
                prepared,
                attempts: 0,
                last_code: String::new(),
            })
            .collect(),
        outcome: PublishOutcome::default(),
        without_progress: 0,
        owed: Duration::ZERO,
    };
    if let Err(stop) = run.until_empty(client, limit_bytes, policy, deadline).await {
        run.outcome.stopped_at = Some(stop);
    }
    run.outcome
}

/// One run of [`publish`]: what is still to send, in order, and what happened so far.
struct Publishing<'a> {
    queue: VecDeque<Pending<'a>>,
    outcome: PublishOutcome,
    /// Calls in a row that published nothing.
    without_progress: u32,
    /// Proportional waits not yet taken: each is taken once they add up to [`MIN_SLEEP`].
    owed: Duration,
}

/// The shortest sleep: tokio's timer counts whole milliseconds, so a shorter sleep would last
/// up to a full tick, many times what a proportional wait after a fast call asks for.
const MIN_SLEEP: Duration = Duration::from_millis(1);

impl<'a> Publishing<'a> {
    /// Sends request after request, packed from the front of the queue, until the queue is
    /// empty or an entry cannot be published.
    async fn until_empty(
        &mut self,
        client: &impl PutEventsApi,
        limit_bytes: usize,
        policy: &RetryPolicy,
        deadline: Instant,
    ) -> Result<(), Stop> {
        while let Some(front) = self.queue.front().map(|p| p.index) {
            let n = next_request_len(self.queue.iter(), limit_bytes).max(1);
            let budget = call_budget(policy, deadline).ok_or((front, StopReason::OutOfTime))?;
            let request: Vec<Pending<'a>> = self.queue.drain(..n).collect();
            self.outcome.calls += 1;
            self.outcome.retried += request.iter().filter(|p| p.attempts > 0).count();
            let started = Instant::now();
            let entries: Vec<&Prepared> = request.iter().map(|p| p.prepared).collect();
            let result = match tokio::time::timeout(budget, client.put_entries(&entries)).await {
                Ok(result) => result,
                Err(_) => CallResult::Transient("client-side timeout".to_owned()),
            };
            let call = started.elapsed();
            let published_before = self.outcome.published;
            let failed = self.settle(request, result, front)?;
            if failed.is_empty() {
                self.without_progress = 0;
                continue;
            }
            let published = self.outcome.published - published_before;
            self.without_progress = if published > 0 {
                0
            } else {
                self.without_progress + 1
            };
            self.owed += match self.without_progress {
                0 | 1 => policy.proportional_delay(call, failed.len(), published),
                n => policy.delay(n - 1),
            };
            let delay = if self.owed >= MIN_SLEEP {
                std::mem::take(&mut self.owed)
            } else {
                Duration::ZERO
            };
            self.requeue(failed, policy)?;
            self.back_off(delay, policy, deadline).await?;
        }
        Ok(())
    }

    /// Counts what the call published; the entries to send again, in order, or where to stop
    /// (a rejected entry, or a call that failed for good; `front` is the request's first entry).
    fn settle(
        &mut self,
        request: Vec<Pending<'a>>,
        result: CallResult,
        front: usize,
    ) -> Result<Vec<Pending<'a>>, Stop> {
        let mut failed: Vec<Pending<'a>> = Vec::new();
        match result {
            CallResult::Entries(results) => {
                let mut rejected: Option<(usize, String, String)> = None;
                for (mut pending, result) in request.into_iter().zip(results) {
                    pending.attempts += 1;
                    match result {
                        None => {
                            self.outcome.published += 1;
                            self.outcome.published_entries.push(pending.index);
                        }
                        Some((code, _)) if RETRYABLE_ENTRY_CODES.contains(&code.as_str()) => {
                            pending.last_code = code;
                            failed.push(pending);
                        }
                        Some((code, message)) => {
                            rejected.get_or_insert((pending.index, code, message));
                        }
                    }
                }
                if let Some((index, code, message)) = rejected {
                    // Report the earliest unpublished entry: a retryable one before the
                    // rejected one in this request, or the rejected one.
                    let index = failed.first().map_or(index, |p| p.index.min(index));
                    return Err((index, StopReason::Rejected { code, message }));
                }
            }
            CallResult::Terminal(code, message) => {
                return Err((front, StopReason::CallFailed { code, message }));
            }
            CallResult::Transient(code) => {
                for mut pending in request {
                    pending.attempts += 1;
                    pending.last_code.clone_from(&code);
                    failed.push(pending);
                }
            }
        }
        Ok(failed)
    }

    /// Puts failed entries back at the front, in order, ahead of everything not yet sent; stops
    /// when one of them has been sent `max_attempts` times.
    fn requeue(&mut self, failed: Vec<Pending<'a>>, policy: &RetryPolicy) -> Result<(), Stop> {
        if let Some(p) = failed.iter().find(|p| p.attempts >= policy.max_attempts) {
            let index = failed.first().map_or(p.index, |f| f.index);
            let last_code = p.last_code.clone();
            return Err((index, StopReason::RetriesExhausted { last_code }));
        }
        for pending in failed.into_iter().rev() {
            self.queue.push_front(pending);
        }
        Ok(())
    }

    /// Sleeps `delay` before the next call after a failing one, or stops at the front of the
    /// queue (the first failed entry) when the sleep would end inside the reserve before the
    /// deadline.
    async fn back_off(
        &mut self,
        delay: Duration,
        policy: &RetryPolicy,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let first_failed = self.queue.front().map_or(0, |p| p.index);
        if Instant::now() + delay + policy.reserve >= deadline {
            return Err((first_failed, StopReason::OutOfTime));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

/// How long the next call may take: the time left before the deadline minus the reserve, or
/// None when nothing is left.
fn call_budget(policy: &RetryPolicy, deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .and_then(|left| left.checked_sub(policy.reserve))
        .filter(|b| !b.is_zero())
}

/// A PutEvents client: one call with the given entries, in order, read into a [`CallResult`].
///
/// The relay binary (and `make demo`'s local trigger) publishes with its own client
/// ([`crate::wire::SignedClient`]); the SDK's client serves the operator's replay and the
/// tests' scripted bus. Both read the same outcomes through [`entry_results`] and
/// [`call_failed`].
pub trait PutEventsApi {
    fn put_entries(&self, entries: &[&Prepared]) -> impl Future<Output = CallResult>;
}

impl PutEventsApi for Client {
    async fn put_entries(&self, entries: &[&Prepared]) -> CallResult {
        let request = entries.iter().map(|p| p.entry.clone()).collect();
        match self.put_events().set_entries(Some(request)).send().await {
            Ok(output) => entry_results(
                entries.len(),
                output.entries().iter().map(|r| {
                    r.error_code().map(|code| {
                        let message = r.error_message().unwrap_or_default();
                        (code.to_owned(), message.to_owned())
                    })
                }),
            ),
            Err(err) => classify(&err),
        }
    }
}

/// The per-entry outcome of a call that sent `sent` entries, from its result entries in order
/// (each `Some((code, message))` for a failed one).
pub fn entry_results(
    sent: usize,
    results: impl ExactSizeIterator<Item = Option<(String, String)>>,
) -> CallResult {
    if results.len() != sent {
        // Which entries were published is unknown: send them all again (duplicates carry the
        // same event id).
        return CallResult::Transient(format!(
            "PutEvents answered {} results for {sent} entries",
            results.len()
        ));
    }
    CallResult::Entries(results.collect())
}

/// A call that failed as a whole, by its error code and HTTP status: worth another call when
/// the code is a transient one or the status says so (5xx, 429), final otherwise.
pub fn call_failed(code: String, message: String, status: u16) -> CallResult {
    if TRANSIENT_CALL_CODES.contains(&code.as_str()) || status >= 500 || status == 429 {
        CallResult::Transient(code)
    } else {
        CallResult::Terminal(code, message)
    }
}

fn classify(err: &SdkError<PutEventsError>) -> CallResult {
    match err {
        SdkError::ServiceError(ctx) => {
            let err = ctx.err();
            let code = err
                .code()
                .or(err.is_internal_exception().then_some("InternalException"))
                .unwrap_or("Unknown")
                .to_owned();
            let message = err.message().unwrap_or_default().to_owned();
            call_failed(code, message, ctx.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => CallResult::Transient("TimeoutError".to_owned()),
        SdkError::DispatchFailure(_) => CallResult::Transient("DispatchFailure".to_owned()),
        SdkError::ResponseError(_) => CallResult::Transient("ResponseError".to_owned()),
        other => CallResult::Terminal("ConstructionFailure".to_owned(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        for n in 1..=12 {
            let full = (policy.base_delay * 2u32.pow(n - 1)).min(policy.max_delay);
            let d = policy.delay(n);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {n}: {d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
        assert!(policy.delay(100) <= policy.max_delay);
    }

    #[test]
    fn proportional_delay_is_in_proportion_to_the_share_refused() {
        let policy = RetryPolicy::default();
        let call = Duration::from_millis(90);
        // One throttled among ten: a ninth of the call's time, far below a doubling.
        assert_eq!(
            policy.proportional_delay(call, 1, 9),
            Duration::from_millis(10)
        );
        assert_eq!(policy.proportional_delay(call, 5, 5), call);
        assert_eq!(policy.proportional_delay(call, 9, 1), call * 9);
        assert_eq!(policy.proportional_delay(call, 0, 10), Duration::ZERO);
        assert_eq!(
            policy.proportional_delay(Duration::from_secs(1), 9, 1),
            policy.max_delay
        );
        // Nothing published counts as one published entry.
        assert_eq!(policy.proportional_delay(call, 1, 0), call);
    }
}
