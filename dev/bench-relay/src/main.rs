//! `make bench-relay`: the relay's process-level benchmark (see the library docs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use outbox_bench_relay::records::Records;
use outbox_bench_relay::{Measurement, Scenario, run};

#[derive(Parser, Debug)]
#[command(
    about = "Runs the release relay bootstrap against a local Lambda Runtime API and PutEvents endpoint"
)]
struct Args {
    /// The relay executable (`cargo build --profile lambda -p outbox-relay` builds target/lambda/relay, as `make bench-relay` does).
    #[arg(long, env = "BENCH_RELAY_BOOTSTRAP")]
    bootstrap: PathBuf,
    /// Stream records per run (INSERTs of distinct users).
    #[arg(long, env = "BENCH_RELAY_RECORDS", default_value_t = 10_000)]
    records: usize,
    /// Batch sizes of the event source mapping, one scenario each.
    #[arg(long, env = "BENCH_RELAY_BATCH", value_delimiter = ',', default_values_t = [10, 100])]
    batch: Vec<usize>,
    /// Shares of entries PutEvents throttles at random, one scenario each (1 = sustained).
    #[arg(long, env = "BENCH_RELAY_THROTTLE", value_delimiter = ',', default_values_t = [0.0, 0.05])]
    throttle: Vec<f64>,
    /// Runs per scenario; the table shows the median of each figure.
    #[arg(long, env = "BENCH_RELAY_RUNS", default_value_t = 3)]
    runs: usize,
    /// Seed of the throttling draws (run k uses seed + k).
    #[arg(long, env = "BENCH_RELAY_SEED", default_value_t = 1)]
    seed: u64,
    /// The function timeout in milliseconds (each invocation's deadline).
    #[arg(long, env = "BENCH_RELAY_TIMEOUT_MS", default_value_t = 30_000)]
    timeout_ms: u64,
    /// The relay's RUST_LOG (its default, info, when unset).
    #[arg(long, env = "BENCH_RELAY_RUST_LOG")]
    rust_log: Option<String>,
    /// Let the relay exit after the last batch instead of killing it (for a profiler wrapped
    /// around it as --bootstrap, e.g. a script running `strace -c -f`).
    #[arg(long)]
    exit: bool,
    /// The bootstrap is not our relay and its events are not the contract's (e.g. the AWS
    /// sample's relay, for a comparison on the same harness): count what it publishes, skip the
    /// lossless and per-item order checks.
    #[arg(long)]
    opaque_detail: bool,
    /// Where the harness and the relay run, one table row each: `spread` (wherever the
    /// scheduler puts them, so they wake each other across CPUs) and `same` (both pinned to one
    /// CPU, as a Lambda function of up to 1,769 MB, one vCPU, and the Runtime API server in its
    /// microVM).
    #[arg(long, env = "BENCH_RELAY_CPUS", value_delimiter = ',', default_values_t = [Cpus::Spread, Cpus::Same])]
    cpus: Vec<Cpus>,
    /// Print every run, not just the medians.
    #[arg(long)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let records = Arc::new(Records::users(args.records));
    println!(
        "relay {} · {} records · median of {} runs · function timeout {} ms",
        args.bootstrap.display(),
        records.len(),
        args.runs,
        args.timeout_ms
    );
    println!("{}", Row::header());
    for &cpus in &args.cpus {
        for &batch_size in &args.batch {
            for &throttle in &args.throttle {
                let runs = scenario_runs(&args, &records, cpus, batch_size, throttle).await?;
                println!("{}", Row::of(cpus, batch_size, throttle, &runs).line());
            }
        }
    }
    Ok(())
}

/// The runs of one scenario (each printed with --verbose).
async fn scenario_runs(
    args: &Args,
    records: &Arc<Records>,
    cpus: Cpus,
    batch_size: usize,
    throttle: f64,
) -> anyhow::Result<Vec<Measurement>> {
    let mut runs = Vec::with_capacity(args.runs);
    for k in 0..args.runs.max(1) {
        let scenario = Scenario {
            bootstrap: args.bootstrap.clone(),
            batch_size,
            throttle,
            seed: args.seed + k as u64,
            timeout: Duration::from_millis(args.timeout_ms),
            rust_log: args.rust_log.clone(),
            exit_when_done: args.exit,
            opaque_detail: args.opaque_detail,
            same_cpu: cpus == Cpus::Same,
        };
        let m = run(&scenario, records.clone()).await.with_context(|| {
            format!("{cpus:?} CPUs, batch {batch_size}, throttle {throttle}, run {k}")
        })?;
        if args.verbose {
            let row = Row::of(cpus, batch_size, throttle, std::slice::from_ref(&m));
            println!("{}", row.line());
        }
        for problem in &m.problems {
            eprintln!("  relay log: {problem}");
        }
        runs.push(m);
    }
    Ok(runs)
}

/// Where the harness and the relay run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Cpus {
    /// Wherever the scheduler puts them.
    Spread,
    /// Both on one CPU.
    Same,
}

impl std::fmt::Display for Cpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cpus::Spread => "spread",
            Cpus::Same => "same",
        })
    }
}

/// One line of the table: the median of each figure over the runs.
struct Row {
    cpus: Cpus,
    batch: usize,
    throttle: f64,
    cpu_us: f64,
    wall_s: f64,
    longest_ms: f64,
    invocations: f64,
    handed_back: f64,
    calls: f64,
    retried: f64,
    api_conns: f64,
    eb_conns: f64,
    rss_mib: f64,
    cold_ms: f64,
    stopped: usize,
}

impl Row {
    fn header() -> String {
        format!(
            "{:>6} {:>5} {:>6} {:>10} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8} {:>8} {:>7}",
            "cpus",
            "batch",
            "thrtl",
            "cpu µs/rec",
            "wall s",
            "longest",
            "invoc",
            "handbk",
            "calls",
            "retried",
            "api conns",
            "eb conns",
            "rss MiB",
            "cold ms"
        )
    }

    fn of(cpus: Cpus, batch: usize, throttle: f64, runs: &[Measurement]) -> Row {
        let f = |get: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(get).collect());
        Row {
            cpus,
            batch,
            throttle,
            cpu_us: f(&|m| m.cpu_us_per_record()),
            wall_s: f(&|m| m.wall.as_secs_f64()),
            longest_ms: f(&|m| m.mapping.longest.as_secs_f64() * 1e3),
            invocations: f(&|m| m.mapping.invocations as f64),
            handed_back: f(&|m| m.mapping.handed_back as f64),
            calls: f(&|m| m.bus.calls as f64),
            retried: f(&|m| m.retried_entries() as f64),
            api_conns: f(&|m| m.runtime_api_connections as f64),
            eb_conns: f(&|m| m.eventbridge_connections as f64),
            rss_mib: f(&|m| m.usage.max_rss_kib as f64 / 1024.0),
            cold_ms: f(&|m| m.cold_start.as_secs_f64() * 1e3),
            stopped: runs.iter().filter(|m| m.mapping.stopped.is_some()).count(),
        }
    }

    fn line(&self) -> String {
        let stopped = if self.stopped > 0 {
            format!("  ({} runs stopped: no progress)", self.stopped)
        } else {
            String::new()
        };
        format!(
            "{:>6} {:>5} {:>5.0}% {:>10.1} {:>8.2} {:>7.0}ms {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>9.0} {:>8.0} {:>8.1} {:>7.1}{stopped}",
            self.cpus.to_string(),
            self.batch,
            self.throttle * 100.0,
            self.cpu_us,
            self.wall_s,
            self.longest_ms,
            self.invocations,
            self.handed_back,
            self.calls,
            self.retried,
            self.api_conns,
            self.eb_conns,
            self.rss_mib,
            self.cold_ms
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
