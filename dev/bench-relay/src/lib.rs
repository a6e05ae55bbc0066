//! The relay's process-level benchmark (`make bench-relay`).
//!
//! The release relay `bootstrap` runs as a child process against two local endpoints in this
//! process: a Lambda Runtime API that plays the DynamoDB event source mapping
//! ([`runtime_api`]) and an EventBridge PutEvents endpoint that throttles a share of the entries
//! at random ([`bus`]). One [`Scenario`] feeds it every record at one batch size and measures the
//! whole process: CPU (user + system, from `wait4`, so init and every runtime API round trip
//! count), peak RSS, wall time, cold start (spawn to the first `next` request), invocations,
//! PutEvents calls, retried entries and TCP connections opened to each endpoint. Then it checks
//! the run was lossless (every record published) and kept per-item order.

pub mod bus;
pub mod child;
pub mod cpu;
pub mod records;
pub mod runtime_api;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::serve::ListenerExt as _;

use crate::bus::{Bus, BusStats};
use crate::child::{Logs, Relay, Usage};
use crate::records::Records;
use crate::runtime_api::{MappingStats, RuntimeApi};

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub bootstrap: PathBuf,
    pub batch_size: usize,
    /// Probability that PutEvents throttles an entry.
    pub throttle: f64,
    pub seed: u64,
    /// The function timeout (each invocation's deadline is this far after it starts).
    pub timeout: Duration,
    /// The child's `RUST_LOG` (the relay's default when None).
    pub rust_log: Option<String>,
    /// Let the function exit at the end (for a profiler wrapped around it) instead of killing
    /// it; peak RSS then comes from `wait4` and also counts the harness's memory.
    pub exit_when_done: bool,
    /// The relay under test does not publish the contract's events (e.g. the AWS sample's
    /// relay, for a comparison): PutEvents counts its entries and the lossless and order checks
    /// are skipped.
    pub opaque_detail: bool,
    /// Run the harness and the relay on one CPU ([`cpu`]).
    pub same_cpu: bool,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub records: usize,
    pub usage: Usage,
    pub cold_start: Duration,
    pub wall: Duration,
    pub mapping: MappingStats,
    pub bus: BusStats,
    pub runtime_api_connections: usize,
    pub eventbridge_connections: usize,
    pub log_lines: usize,
    pub problems: Vec<String>,
}

impl Measurement {
    pub fn cpu_us_per_record(&self) -> f64 {
        self.usage.cpu().as_secs_f64() * 1e6 / self.records.max(1) as f64
    }

    /// Entries sent more than once (throttled ones sent again, or redelivered records).
    pub fn retried_entries(&self) -> usize {
        self.bus.entries.saturating_sub(self.records)
    }
}

/// Runs `scenario` over `records` and checks the result.
pub async fn run(scenario: &Scenario, records: Arc<Records>) -> anyhow::Result<Measurement> {
    let _pinned = if scenario.same_cpu {
        Some(cpu::Pinned::first_cpu()?)
    } else {
        None
    };
    let api = RuntimeApi::new(
        records.clone(),
        scenario.batch_size,
        scenario.timeout,
        scenario.exit_when_done,
    );
    let bus = Bus::new(scenario.throttle, scenario.seed, scenario.opaque_detail);
    let (api_addr, api_connections) = serve(api.router()).await?;
    let (bus_addr, bus_connections) = serve(bus.router()).await?;

    let spawned = Instant::now();
    let relay = Relay::start(
        &scenario.bootstrap,
        api_addr,
        bus_addr,
        scenario.rust_log.as_deref(),
    )?;
    let limit = Duration::from_secs(600);
    let finished = loop {
        if tokio::time::timeout(Duration::from_millis(200), api.done.notified())
            .await
            .is_ok()
        {
            break true;
        }
        if !relay.running() || spawned.elapsed() > limit {
            break false;
        }
    };
    if scenario.exit_when_done {
        let exit_by = Instant::now() + Duration::from_secs(10);
        while relay.running() && Instant::now() < exit_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (usage, logs) = relay.stop()?;
    let mapping = api.stats();
    if !finished {
        bail!(
            "the relay exited or hung before the run finished; logs: {:?}",
            logs.problems
        );
    }
    let measurement = measurement(
        records.len(),
        usage,
        spawned,
        mapping,
        bus.stats(),
        [&api_connections, &bus_connections],
        logs,
    )?;
    if !scenario.opaque_detail {
        check(&measurement, &records)?;
    }
    Ok(measurement)
}

fn measurement(
    records: usize,
    usage: Usage,
    spawned: Instant,
    mapping: MappingStats,
    bus: BusStats,
    connections: [&AtomicUsize; 2],
    logs: Logs,
) -> anyhow::Result<Measurement> {
    let first_next = mapping
        .first_next
        .context("the relay never asked for an event")?;
    let finished = mapping.finished.unwrap_or(first_next);
    Ok(Measurement {
        records,
        usage,
        cold_start: first_next - spawned,
        wall: finished - first_next,
        mapping,
        bus,
        runtime_api_connections: connections[0].load(Ordering::Relaxed),
        eventbridge_connections: connections[1].load(Ordering::Relaxed),
        log_lines: logs.lines,
        problems: logs.problems,
    })
}

/// Serves `router` on a fresh local port; the address and a count of accepted connections.
async fn serve(router: axum::Router) -> anyhow::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = listener.tap_io(move |tcp| {
        counter.fetch_add(1, Ordering::Relaxed);
        // Lambda's runtime API and EventBridge both answer without Nagle delays.
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((addr, accepted))
}

/// Lossless: every checkpointed record was published (all of them, unless the run stopped
/// under sustained failure). In time: every invocation answered before its deadline. Per-item
/// order: no change of an item was published after a later one.
fn check(m: &Measurement, records: &Records) -> anyhow::Result<()> {
    if m.bus.bad_requests > 0 {
        bail!("{} PutEvents requests were unreadable", m.bus.bad_requests);
    }
    let index: HashMap<&str, usize> = records
        .seqs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut published = vec![false; records.len()];
    let mut last_of_item: HashMap<&str, usize> = HashMap::new();
    for (seq, keys) in &m.bus.published {
        let i = *index
            .get(seq.as_str())
            .with_context(|| format!("published an unknown sequence number {seq}"))?;
        if let Some(&last) = last_of_item.get(keys.as_str())
            && last > i
        {
            bail!("record {i} of item {keys} was published after record {last}");
        }
        last_of_item.insert(keys, i);
        published[i] = true;
    }
    let done = &published[..m.mapping.checkpointed.min(records.len())];
    if let Some(missing) = done.iter().position(|p| !p) {
        bail!(
            "record {missing} was checkpointed but never published ({} missing)",
            done.iter().filter(|p| !**p).count()
        );
    }
    if m.mapping.late > 0 {
        bail!(
            "{} invocations answered after their deadline",
            m.mapping.late
        );
    }
    Ok(())
}
