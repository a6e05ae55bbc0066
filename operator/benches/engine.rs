//! Engine benchmark against moto server (OUTBOX_TEST_ENDPOINT), not a timed test:
//! 1. AWS calls per steady-state reconcile (read and mutating, per resource);
//! 2. wall time to converge 50 pipelines;
//! 3. the process's peak memory (VmHWM) while doing it.
//!
//! `cargo bench -p outbox-operator --bench engine` runs it in full. Under `cargo test` (no
//! `--bench` argument) it runs a 2-pipeline smoke version so the code stays working.
//! Every pipeline it creates is deleted again (table deletion policy Delete).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use outbox_operator::crd::{DeletionPolicy, OutboxPipeline};
use outbox_operator::engine::{CallInfo, Engine, EngineConfig, aws_sdk_config};

const CONCURRENCY: usize = 8;
const MAX_PASSES: usize = 20;

fn resource_kind(service: &str, op: &str) -> &'static str {
    match (service, op) {
        ("DynamoDB", _) => "table",
        ("S3", _) => "failure bucket",
        ("IAM", _) => "roles",
        ("Lambda", o) if o.contains("EventSourceMapping") => "event source mapping",
        ("Lambda", "GetPolicy" | "AddPermission" | "RemovePermission") => "invoke permissions",
        ("Lambda", _) => "functions",
        ("EventBridge", "DescribeEventBus" | "CreateEventBus" | "DeleteEventBus") => "bus",
        ("EventBridge", "ListTargetsByRule" | "PutTargets" | "RemoveTargets") => "targets",
        ("EventBridge", "ListTagsForResource" | "TagResource") => "bus and rule tags",
        ("EventBridge", _) => "rules",
        _ => "other",
    }
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn pipeline(run: &str, i: usize) -> Result<OutboxPipeline, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/user-lifecycle.yaml");
    let docs =
        outbox_operator::manifest::read_path(&path.to_string_lossy()).map_err(|e| e.to_string())?;
    let mut p = docs
        .into_iter()
        .next()
        .ok_or("no document in the example")?
        .pipeline;
    p.metadata.name = Some(format!("bench-{run}-{i}"));
    p.spec.bus.name = Some(format!("bench-{run}-{i}"));
    p.spec.table.deletion_policy = DeletionPolicy::Delete;
    Ok(p)
}

async fn converge(engine: &Engine, p: &OutboxPipeline) -> Result<usize, String> {
    for pass in 1..=MAX_PASSES {
        let out = engine.reconcile(p).await;
        if let Some(e) = out.error.filter(|e| !e.is_transient()) {
            return Err(format!("{}: {e}", p.name_or_empty()));
        }
        if out.status.is_ready() {
            return Ok(pass);
        }
        tokio::time::sleep(
            out.requeue_after
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(200)),
        )
        .await;
    }
    Err(format!(
        "{} not Ready after {MAX_PASSES} passes",
        p.name_or_empty()
    ))
}

async fn run(endpoint: String, count: usize, out: &mut impl Write) -> Result<(), String> {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() & 0xffffff)
            .unwrap_or(0)
    );
    let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
    let sink = calls.clone();
    let sdk = aws_sdk_config(Some("us-east-1".into()), Some(endpoint)).await;
    let engine = Engine::new(
        &sdk,
        EngineConfig {
            cluster_id: format!("bench-{run}"),
            allow_adoption: false,
            allow_delete_adopted_tables: false,
            permissions_boundary_arn: None,
            artifacts_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/artifacts"),
        },
    )
    .with_call_observer(Arc::new(move |c: &CallInfo| {
        if let Ok(mut v) = sink.lock() {
            v.push(c.clone());
        }
    }));
    let take = || {
        calls
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    };

    // 1. Calls per steady-state reconcile.
    let first = pipeline(&run, 0)?;
    converge(&engine, &first).await?;
    take();
    let steady = engine.reconcile(&first).await;
    if !steady.status.is_ready() || !steady.actions.is_empty() {
        return Err(format!(
            "steady-state pass was not clean: {:?}",
            steady.actions
        ));
    }
    let mut per_kind: BTreeMap<&str, (usize, usize, BTreeMap<String, usize>)> = BTreeMap::new();
    let steady_calls = take();
    for c in &steady_calls {
        let e = per_kind
            .entry(resource_kind(&c.service, &c.operation))
            .or_default();
        if c.mutating {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        *e.2.entry(c.operation.clone()).or_default() += 1;
    }
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    w(out, "AWS calls per steady-state reconcile (examples/user-lifecycle.yaml: 2 consumers, writer on)".into())?;
    w(
        out,
        format!(
            "  {:<22} {:>5} {:>8}  operations",
            "resource", "reads", "mutating"
        ),
    )?;
    for (kind, (reads, mutating, ops)) in &per_kind {
        let ops: Vec<String> = ops.iter().map(|(o, n)| format!("{o}×{n}")).collect();
        w(
            out,
            format!("  {kind:<22} {reads:>5} {mutating:>8}  {}", ops.join(" ")),
        )?;
    }
    let total_mutating = steady_calls.iter().filter(|c| c.mutating).count();
    w(
        out,
        format!(
            "  {:<22} {:>5} {:>8}",
            "total",
            steady_calls.len() - total_mutating,
            total_mutating
        ),
    )?;

    // 2. Converge `count` new pipelines.
    let pipelines: Vec<OutboxPipeline> = (1..=count)
        .map(|i| pipeline(&run, i))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let results: Vec<Result<usize, String>> = futures::stream::iter(pipelines.iter())
        .map(|p| converge(&engine, p))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let converge_calls = take();
    let passes: usize = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(e.clone());
    }
    w(
        out,
        format!(
            "\nConverged {count} pipelines in {:.2} s ({CONCURRENCY} at a time; {passes} reconcile passes, {} AWS calls, {} mutating)",
            elapsed.as_secs_f64(),
            converge_calls.len(),
            converge_calls.iter().filter(|c| c.mutating).count()
        ),
    )?;

    // 3. Peak memory.
    match peak_memory_kib() {
        Some(kib) => w(
            out,
            format!("\nPeak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        )?,
        None => w(out, "\nPeak memory: /proc/self/status not readable".into())?,
    }

    // Clean up (not measured).
    let all: Vec<&OutboxPipeline> = std::iter::once(&first).chain(pipelines.iter()).collect();
    let failed: Vec<String> = futures::stream::iter(all)
        .map(|p| async {
            engine
                .delete(p)
                .await
                .err()
                .map(|e| format!("{}: {e}", p.name_or_empty()))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    if !failed.is_empty() {
        return Err(format!("cleanup failed: {}", failed.join("; ")));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    let count = if full { 50 } else { 2 };
    let mut out = std::io::stdout().lock();
    let Some(endpoint) = std::env::var("OUTBOX_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    else {
        let _ = writeln!(
            out,
            "engine bench skipped: OUTBOX_TEST_ENDPOINT is not set (start moto: make moto-start)"
        );
        return std::process::ExitCode::SUCCESS;
    };
    if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
        // SAFETY: single-threaded here, before the runtime starts.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "cannot start tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(endpoint, count, &mut out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "engine bench failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
