//! How the relay packs entries into PutEvents requests: at most ten, within the size limit as AWS
//! counts it, and a record too large on its own stops the batch at that record.

mod common;

use common::*;

#[tokio::test(start_paused = true)]
async fn requests_hold_at_most_ten_entries() {
    let bus = always_ok();
    let report = run(users(), &bus, &distinct(25, 10)).await;
    assert_eq!(bus.log.lock().unwrap().call_sizes(), [10, 10, 5]);
    assert_eq!(report.calls, 3);
}

#[tokio::test(start_paused = true)]
async fn requests_stay_within_the_size_limit_as_aws_counts_it() {
    let bus = always_ok();
    let mut config = users();
    config.request_size_limit_bytes = 4096;
    let report = run(config, &bus, &distinct(20, 900)).await;
    assert!(failures(&report).is_empty());
    let log = bus.log.lock().unwrap();
    let sizes: Vec<usize> = log
        .calls
        .iter()
        .map(|(sent, _)| sent.iter().map(Sent::aws_size).sum())
        .collect();
    assert!(sizes.iter().all(|s| *s <= 4096), "{sizes:?}");
    // Each entry is a bit over 1 KB: three fit, a fourth does not, so the limit (not the count
    // of 10) decides, and no request could take one more entry.
    assert!(
        log.call_sizes().iter().all(|n| *n == 3 || *n == 2),
        "{:?}",
        log.call_sizes()
    );
    assert_eq!(log.published().len(), 20);
}

#[tokio::test(start_paused = true)]
async fn a_record_larger_than_the_limit_stops_the_batch_at_that_record() {
    let bus = always_ok();
    let mut config = users();
    config.request_size_limit_bytes = 4096;
    let event = batch(vec![
        record(0, "a", 10),
        record(1, "b", 10),
        record(2, "c", 5000),
        record(3, "d", 10),
    ]);
    let report = run(config, &bus, &event).await;
    assert_eq!(failures(&report), [seq(2)]);
    assert_eq!(bus.log.lock().unwrap().published_seqs(), [seq(0), seq(1)]);
}
