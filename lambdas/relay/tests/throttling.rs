//! The relay's backoff under throttling: a call that published something resets the exponential
//! backoff and waits only in proportion to the share of entries refused (so a few throttled
//! entries cost little time, however many calls in a row have one); calls in a row that publish
//! nothing back off exponentially from the second one, and the batch response still comes back
//! before the deadline. Time is tokio's paused clock, in which the mocked calls take no time (so
//! every proportional wait is zero).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use outbox_relay::{Invocation, Relay, RetryPolicy};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::time::Instant;

/// What a timed run gives: the report, when each call was made and when the batch response
/// came back (both from the start), and the bus.
struct Timed {
    report: outbox_relay::Report,
    calls: Vec<Duration>,
    returned: Duration,
    bus: Bus,
}

/// Runs `event` with `policy` and a deadline `deadline` from now.
async fn timed_run(
    policy: RetryPolicy,
    deadline: Duration,
    event: &aws_lambda_events::dynamodb::Event,
    mut reply: impl FnMut(usize, &[Sent]) -> Reply + Send + 'static,
) -> Timed {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    let bus = bus(move |call, sent| {
        seen.lock().unwrap().push(start.elapsed());
        reply(call, sent)
    });
    let invocation = Invocation {
        deadline: start + deadline,
        trace_header: None,
    };
    let report = Relay::new(users(), bus.client.clone(), policy)
        .process(event, &invocation)
        .await
        .expect("batch response");
    let returned = start.elapsed();
    let calls = times.lock().unwrap().clone();
    Timed {
        report,
        calls,
        returned,
        bus,
    }
}

/// Throttles the last entry of a call of several (it goes first in the next call, and passes).
fn throttle_last(sent: &[Sent]) -> Reply {
    Reply::Codes(
        (0..sent.len())
            .map(|i| (i + 1 == sent.len() && i > 0).then_some("ThrottlingException"))
            .collect(),
    )
}

#[tokio::test(start_paused = true)]
async fn one_throttled_entry_among_ten_does_not_double_the_delay() {
    // Every call of ten has its last entry throttled (it is sent again first in the next call,
    // which again has one throttled): twenty calls in a row with a failure, each with progress.
    let policy = RetryPolicy::default();
    let Timed {
        report,
        calls: times,
        bus,
        ..
    } = timed_run(
        policy.clone(),
        Duration::from_secs(60),
        &distinct(200, 5),
        |_, sent| throttle_last(sent),
    )
    .await;
    assert!(failures(&report).is_empty(), "{report:?}");
    assert_eq!(bus.log.lock().unwrap().published().len(), 200);
    assert!(report.calls >= 20, "{} calls", report.calls);
    let elapsed = *times.last().unwrap();
    assert!(
        elapsed < policy.base_delay,
        "calls that made progress must not escalate the backoff: {elapsed:?} spent sleeping"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_publishes_something_resets_the_exponential_backoff() {
    let policy = RetryPolicy::default();
    let Timed {
        report,
        calls: times,
        ..
    } = timed_run(
        policy.clone(),
        Duration::from_secs(60),
        &distinct(5, 5),
        |call, sent| match call {
            // Three calls publish nothing (waits 0, then exponential 25–50 and 50–100 ms), one
            // makes progress, then two more publish nothing: the exponential backoff starts
            // over (0, then 25–50 ms), it does not continue at 100–200 ms.
            0..=2 | 4 | 5 => Reply::Codes(vec![Some("ThrottlingException"); sent.len()]),
            3 => throttle_last(sent),
            _ => Reply::AllOk,
        },
    )
    .await;
    assert!(failures(&report).is_empty(), "{report:?}");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[2] >= policy.base_delay, "{gaps:?}");
    assert!(
        gaps[4].is_zero() && gaps[5] <= policy.base_delay,
        "after progress the backoff starts over: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn sustained_throttling_backs_off_exponentially_and_returns_before_the_deadline() {
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        ..RetryPolicy::default()
    };
    let deadline = Duration::from_secs(5);
    let Timed {
        report,
        calls: times,
        returned,
        ..
    } = timed_run(policy.clone(), deadline, &distinct(3, 5), |_, sent| {
        Reply::Codes(vec![Some("ThrottlingException"); sent.len()])
    })
    .await;
    assert_eq!(failures(&report), [seq(0)]);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 5, "{gaps:?}");
    assert!(gaps[0].is_zero(), "the first waits in proportion: {gaps:?}");
    for (n, gap) in gaps.iter().enumerate().skip(1) {
        // The n-th delay (from 1) is in [d/2, d], d = min(max, base·2^(n-1)).
        let full = (policy.base_delay * 2u32.pow(n as u32 - 1)).min(policy.max_delay);
        assert!(
            *gap >= full / 2 && *gap <= full,
            "delay {n} is {gap:?}, outside [{:?}, {full:?}]: {gaps:?}",
            full / 2
        );
    }
    assert!(
        returned + policy.reserve <= deadline,
        "the batch response comes back before the reserve: {returned:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn random_partial_throttling_is_lossless_in_order_and_fast() {
    // 50 users changed 10 times each, interleaved; 5% of the entries throttled at random.
    let records = (0..500)
        .map(|i| record(i, &format!("u{}", i % 50), 5))
        .collect();
    let event = batch(records);
    let mut rng = StdRng::seed_from_u64(14);
    let policy = RetryPolicy::default();
    let Timed {
        report,
        calls: times,
        bus,
        ..
    } = timed_run(
        policy.clone(),
        Duration::from_secs(60),
        &event,
        move |_, sent| {
            Reply::Codes(
                sent.iter()
                    .map(|_| rng.random_bool(0.05).then_some("ThrottlingException"))
                    .collect(),
            )
        },
    )
    .await;
    assert!(failures(&report).is_empty(), "{report:?}");
    assert!(report.retried > 0, "some entries were throttled");
    let log = bus.log.lock().unwrap();
    assert_per_item_order(&log);
    let mut seqs = log.published_seqs();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..500).map(seq).collect::<Vec<_>>(),
        "each record once"
    );
    let elapsed = *times.last().unwrap();
    assert!(
        elapsed < policy.base_delay,
        "partial throttling costs time only in proportion to the calls: {elapsed:?}"
    );
}
