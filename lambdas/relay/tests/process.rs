//! The relay binary as Lambda runs it, publishing with its own PutEvents client over HTTP: fed
//! by a local Lambda Runtime API and publishing to a local PutEvents endpoint that throttles a
//! share of the entries (the harness of `make bench-relay`, dev/bench-relay), it publishes every
//! record, keeps per-item order and answers every invocation before its deadline.

use std::sync::Arc;
use std::time::Duration;

use outbox_bench_relay::records::Records;
use outbox_bench_relay::{Scenario, run};

async fn relay_run(batch_size: usize, throttle: f64) -> outbox_bench_relay::Measurement {
    let scenario = Scenario {
        bootstrap: env!("CARGO_BIN_EXE_relay").into(),
        batch_size,
        throttle,
        seed: 11,
        timeout: Duration::from_secs(10),
        rust_log: None,
        exit_when_done: false,
        opaque_detail: false,
        same_cpu: false,
    };
    // `run` fails unless the run was lossless, in per-item order and in time.
    run(&scenario, Arc::new(Records::users(600)))
        .await
        .unwrap_or_else(|e| panic!("batch {batch_size}, throttle {throttle}: {e:#}"))
}

#[tokio::test]
async fn every_record_is_published_in_order_through_throttling() {
    for batch_size in [10, 100] {
        let m = relay_run(batch_size, 0.2).await;
        assert_eq!(m.mapping.checkpointed, 600, "every record checkpointed");
        assert!(m.bus.throttled > 0, "the endpoint throttled some entries");
        assert!(
            m.retried_entries() >= m.bus.throttled,
            "throttled entries sent again"
        );
        assert_eq!(
            m.eventbridge_connections, 1,
            "one kept-alive connection to EventBridge"
        );
        assert!(m.problems.is_empty(), "{:?}", m.problems);
    }
}
