//! Wire test of the leadership fence on real SDK clients against moto: while the fence is down
//! every mutating call fails with "not leading" before it is sent, reads still work; raised,
//! both work.
//!
//! Needs OUTBOX_TEST_ENDPOINT (as engine_moto.rs); skipped outside CI without it.

mod common;
use common::{emulator_sdk, endpoint, engine_config, record_calls, unique};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use outbox_operator::crd::{OutboxPipeline, Reason};
use outbox_operator::engine::errors::aws_error;
use outbox_operator::engine::{CallInfo, Engine, EngineError, Fence, names::Names};

async fn fenced_engine(
    endpoint: &str,
    cluster: &str,
    fence: &Fence,
) -> (Engine, Arc<Mutex<Vec<CallInfo>>>) {
    let sdk = emulator_sdk(endpoint).await;
    let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
    let sink = calls.clone();
    let engine = Engine::new(&sdk, engine_config(cluster))
        .with_call_observer(record_calls(vec![sink]))
        .with_fence(fence.clone());
    (engine, calls)
}

fn example(id: &str) -> OutboxPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/user-created.yaml");
    let docs =
        outbox_operator::manifest::read_path(&path.to_string_lossy()).expect("example parses");
    let mut p = docs.into_iter().next().expect("one document").pipeline;
    p.metadata.name = Some(format!("{}-{id}", p.metadata.name.unwrap_or_default()));
    p.spec.bus.name = Some(format!(
        "{}-{id}",
        p.spec.bus.name.clone().unwrap_or_default()
    ));
    p.metadata.generation = Some(1);
    p
}

#[tokio::test]
async fn fence_down_stops_mutating_calls_before_the_network_and_lets_reads_through() {
    let Some(endpoint) = endpoint() else { return };
    let fence = Fence::new();
    let (engine, _) = fenced_engine(&endpoint, "fence-sdk", &fence).await;
    let s3 = engine.clients_for(None).s3;
    let bucket = unique("fence-bucket").to_ascii_lowercase();

    // Down: a write fails with the fence's error, mapped to NotLeading (transient, not InvalidSpec).
    assert!(!fence.is_up());
    let err = s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("CreateBucket must not pass a lowered fence");
    let mapped = aws_error(&err, "CreateBucket", &format!("s3 bucket {bucket}"));
    assert!(
        matches!(mapped, EngineError::NotLeading { .. }),
        "{mapped:?}"
    );
    assert!(mapped.is_transient());
    assert_ne!(mapped.reason(), Reason::InvalidSpec);
    assert!(mapped.to_string().contains("not the leader"), "{mapped}");
    // Reads pass, and show the write never reached moto.
    let listed = s3
        .list_buckets()
        .send()
        .await
        .expect("reads pass a lowered fence");
    assert!(
        listed
            .buckets()
            .iter()
            .all(|b| b.name() != Some(bucket.as_str()))
    );
    let head = s3.head_bucket().bucket(&bucket).send().await;
    assert!(head.is_err(), "the bucket must not exist: {head:?}");

    // Up: writes and reads work on the same clients.
    fence.raise();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket passes a raised fence");
    s3.head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("the bucket exists");

    // Lowered again: the delete is refused too, the bucket stays.
    fence.lower();
    let err = s3
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("refused");
    assert!(matches!(
        aws_error(&err, "DeleteBucket", &bucket),
        EngineError::NotLeading { .. }
    ));
    s3.head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("still there");
    fence.raise();
    s3.delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_reconcile_with_the_fence_down_creates_nothing_and_reports_not_leading() {
    let Some(endpoint) = endpoint() else { return };
    let fence = Fence::new();
    let cluster = unique("fence-rec");
    let (engine, calls) = fenced_engine(&endpoint, &cluster, &fence).await;
    let p = example(&unique("f"));
    let table = Names::new(&cluster, &p).table;

    let out = engine.reconcile(&p).await;
    match &out.error {
        Some(EngineError::NotLeading { operation, .. }) => {
            assert!(
                outbox_operator::engine::is_mutating(operation),
                "{operation}"
            )
        }
        other => panic!("expected NotLeading, got {other:?}"),
    }
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    let seen = calls.lock().map(|c| c.clone()).unwrap_or_default();
    assert!(
        seen.iter().any(|c| !c.mutating),
        "the pass observed AWS: {seen:?}"
    );
    // The table was never created.
    let dynamodb = engine.clients_for(None).dynamodb;
    let described = dynamodb.describe_table().table_name(&table).send().await;
    assert!(described.is_err(), "table {table} must not exist");

    // Raised: the same engine creates it.
    fence.raise();
    let out = engine.reconcile(&p).await;
    assert!(
        out.error
            .as_ref()
            .is_none_or(|e| !matches!(e, EngineError::NotLeading { .. })),
        "{:?}",
        out.error
    );
    dynamodb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("created once leading");
    let deleted = engine.delete(&p).await;
    assert!(deleted.is_ok(), "{deleted:?}");
}

/// The clients of `plan` and `status` refuse every mutating call before it is sent, whatever
/// code asks: a read-only pass cannot change AWS. The refusal is an internal error (a defect
/// of ours), never the user's InvalidSpec.
#[tokio::test]
async fn read_only_clients_refuse_every_mutating_call_and_let_reads_through() {
    let Some(endpoint) = endpoint() else { return };
    let sdk = emulator_sdk(&endpoint).await;
    let engine = Engine::new(&sdk, engine_config("read-only"));
    let clients = engine.read_only_clients_for(None);
    let bucket = unique("ro-bucket").to_ascii_lowercase();
    let err = clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("CreateBucket must not pass the read-only guard");
    let mapped = aws_error(&err, "CreateBucket", &format!("s3 bucket {bucket}"));
    assert!(mapped.to_string().contains("read-only"), "{mapped}");
    assert_eq!(mapped.reason(), Reason::InternalError, "a defect of ours");
    assert!(!mapped.is_transient());
    assert!(
        !matches!(
            mapped,
            EngineError::InvalidSpec { .. } | EngineError::NotLeading { .. }
        ),
        "{mapped:?}"
    );
    let err = clients
        .dynamodb
        .delete_table()
        .table_name("anything")
        .send()
        .await
        .expect_err("DeleteTable must not pass the read-only guard");
    let mapped = aws_error(&err, "DeleteTable", "dynamodb table anything");
    assert!(mapped.to_string().contains("read-only"), "{mapped}");
    let listed = clients.s3.list_buckets().send().await.expect("reads pass");
    assert!(
        listed
            .buckets()
            .iter()
            .all(|b| b.name() != Some(bucket.as_str()))
    );
    // The engine's own clients are not read-only.
    let writable = engine.clients_for(None);
    writable
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("reconcile's clients write");
    writable
        .s3
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("clean up");
}
