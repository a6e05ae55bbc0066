//! The operator at scale: the real `outbox-operator run` process against the fake Kubernetes API
//! (this crate) and a local AWS emulator. N pipelines (relay and one bundled consumer each,
//! writer off) are created at once; it prints the time until all are Ready, the operator's peak
//! and steady resident memory, and the AWS calls (all, and mutating) and Kubernetes writes of one
//! resync pass over the converged pipelines.
//!
//! `make bench-scale` runs it (starting and stopping its own emulator). A benchmark, not a test:
//! the figures go to docs/controller.md.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outbox_fake_kube::FakeApi;
use serde_json::{Value, json};

struct Args {
    pipelines: usize,
    concurrency: usize,
    resync: u64,
    endpoint: String,
    operator: PathBuf,
    artifacts: PathBuf,
    timeout: u64,
    /// The emulator's process, whose CPU time is reported beside the operator's.
    emulator_pid: Option<u32>,
    /// Whether to watch a steady resync window after convergence (`--steady 0`: convergence
    /// figures only, e.g. to compare `--concurrency` settings).
    steady: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-scale --endpoint URL [--pipelines N] [--concurrency C] [--resync-seconds S] \
         [--operator PATH] [--artifacts-dir DIR] [--timeout-seconds T] [--emulator-pid PID] \
         [--steady 0|1]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        pipelines: 100,
        concurrency: 4,
        resync: 30,
        endpoint: String::new(),
        operator: PathBuf::from("target/release/outbox-operator"),
        artifacts: PathBuf::from("target/artifacts"),
        timeout: 600,
        emulator_pid: None,
        steady: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--pipelines" => a.pipelines = number() as usize,
            "--concurrency" => a.concurrency = number() as usize,
            "--resync-seconds" => a.resync = number(),
            "--timeout-seconds" => a.timeout = number(),
            "--endpoint" => a.endpoint = value,
            "--operator" => a.operator = PathBuf::from(value),
            "--artifacts-dir" => a.artifacts = PathBuf::from(value),
            "--emulator-pid" => a.emulator_pid = Some(number() as u32),
            "--steady" => a.steady = number() != 0,
            _ => usage(),
        }
    }
    if a.endpoint.is_empty() {
        usage()
    }
    a
}

fn pipeline(name: &str) -> Value {
    json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "table": {"partitionKey": {"name": "id", "type": "S"}, "streamViewType": "NEW_IMAGE",
                      "deletionProtection": false, "deletionPolicy": "Delete"},
            "bus": {"name": format!("{name}-bus")},
            "relay": {"events": [{"change": "INSERT", "source": "bench", "detailType": "Created",
                                  "payload": "newImage"}]},
            "writer": {"enabled": false},
            "consumers": [{"name": "c", "eventPattern": {"source": ["bench"]}}]
        }
    })
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// (VmRSS, VmHWM) of a process in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "VmRSS:")?, status_kib(pid, "VmHWM:")?))
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) the process used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Lambda's control-plane quota: every API but invocations, GetFunction and GetPolicy shares
/// 15 requests per second per account and Region, and it cannot be raised.
const LAMBDA_CONTROL_PLANE_RPS: f64 = 15.0;

/// What the operator counted so far, from its metrics endpoint.
#[derive(Clone, Debug, Default)]
struct Counted {
    /// Calls by operation (`service:Operation`).
    calls: std::collections::BTreeMap<String, u64>,
    passes: u64,
}

impl Counted {
    fn since(&self, before: &Counted) -> Counted {
        let calls = self
            .calls
            .iter()
            .map(|(op, n)| (op.clone(), n - before.calls.get(op).copied().unwrap_or(0)))
            .collect();
        Counted {
            calls,
            passes: self.passes - before.passes,
        }
    }

    fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    fn mutating(&self) -> u64 {
        let reads = ["Describe", "Get", "List", "Head"];
        self.calls
            .iter()
            .filter(|(op, _)| {
                let name = op.split(':').nth(1).unwrap_or("");
                !reads.iter().any(|p| name.starts_with(p))
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls that count against Lambda's shared 15 requests per second.
    fn lambda_control_plane(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(op, _)| {
                op.strip_prefix("lambda:")
                    .is_some_and(|name| !["GetFunction", "GetPolicy", "Invoke"].contains(&name))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

fn scrape(metrics_port: u16) -> Counted {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", metrics_port)) else {
        return Counted::default();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let mut c = Counted::default();
    for line in text.lines() {
        if line.starts_with("outbox_aws_calls_total{") {
            let op = line
                .split_once("operation=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map_or("", |(op, _)| op);
            *c.calls.entry(op.to_owned()).or_default() += value(line);
        } else if line.starts_with("outbox_reconciles_total") {
            c.passes += value(line);
        }
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_operator(a: &Args, dir: &std::path::Path, api_port: u16, metrics_port: u16) -> Child {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let log = std::fs::File::create(dir.join("operator.log")).expect("log file");
    let mut command = Command::new(&a.operator);
    command
        .args([
            "run",
            "--cluster-id",
            &format!("bench-{}", std::process::id()),
        ])
        .args(["--region", "us-east-1", "--endpoint-url", &a.endpoint])
        .args(["--resync-period", &format!("{}s", a.resync)])
        .args(["--concurrency", &a.concurrency.to_string()])
        .args(["--metrics-port", &metrics_port.to_string()])
        .args(["--leader-election", "false", "--log-format", "json"])
        .arg("--artifacts-dir")
        .arg(&a.artifacts)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    // The operator dies with this process, whatever ends it (a timeout's signal, ^C): an
    // orphaned operator would keep calling the emulator and spoil the next run's figures.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", a.operator.display()))
}

/// Waits until every pipeline is Ready (or the timeout), printing progress every 15 s.
async fn wait_until_ready(
    a: &Args,
    api: &FakeApi,
    child: &mut Child,
    dir: &std::path::Path,
    started: Instant,
) -> Option<Duration> {
    let mut next_report = Duration::from_secs(15);
    while started.elapsed() < Duration::from_secs(a.timeout) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "the operator exited ({status}); see {}",
                dir.join("operator.log").display()
            );
            std::process::exit(1);
        }
        let ready = api.pipelines().iter().filter(|p| is_ready(p)).count();
        if ready == a.pipelines {
            return Some(started.elapsed());
        }
        if started.elapsed() >= next_report {
            let emulator = a
                .emulator_pid
                .and_then(cpu_seconds)
                .map_or(String::new(), |c| format!(", emulator CPU {c:.0} s"));
            eprintln!(
                "{:>4} s: {ready}/{} Ready, operator CPU {:.0} s{emulator}",
                next_report.as_secs(),
                a.pipelines,
                cpu_seconds(child.id()).unwrap_or(0.0)
            );
            next_report += Duration::from_secs(15);
        }
    }
    None
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let dir = std::env::temp_dir().join(format!("bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let api = FakeApi::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let api_port = listener.local_addr().expect("addr").port();
    api.serve(listener);
    let run = format!("{:x}", std::process::id());
    for i in 0..a.pipelines {
        api.create(pipeline(&format!("p{i}-{run}")));
    }
    let metrics_port = free_port();
    let started = Instant::now();
    let mut child = start_operator(&a, &dir, api_port, metrics_port);
    let pid = child.id();
    let cpu = |pid: Option<u32>| pid.and_then(cpu_seconds).unwrap_or(0.0);
    let emulator_cpu_at_start = cpu(a.emulator_pid);
    let converged = wait_until_ready(&a, &api, &mut child, &dir, started).await;
    let Some(converged) = converged else {
        let ready = api.pipelines().iter().filter(|p| is_ready(p)).count();
        eprintln!("only {ready}/{} Ready after {}s", a.pipelines, a.timeout);
        let _ = child.kill();
        std::process::exit(1);
    };
    let (_, peak_converging) = memory(pid).unwrap_or_default();
    let operator_cpu = cpu(Some(pid));
    let emulator_cpu = cpu(a.emulator_pid) - emulator_cpu_at_start;
    let converging = scrape(metrics_port);
    // One full resync over the converged pipelines (plus a margin for the passes to finish).
    let writes_before = api.writes.snapshot();
    if let Ok(mut changed) = api.writes.changed.lock() {
        changed.clear();
    }
    if a.steady {
        tokio::time::sleep(Duration::from_secs(a.resync + a.resync / 2 + 2)).await;
    }
    let steady_calls = scrape(metrics_port).since(&converging);
    let writes_after = api.writes.snapshot();
    let (steady, peak) = memory(pid).unwrap_or_default();
    // Heap and stacks (anonymous) apart from the binary's own pages (file-backed).
    let anon = status_kib(pid, "RssAnon:").unwrap_or_default();
    let file = status_kib(pid, "RssFile:").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    print_converged(
        &a,
        converged,
        [operator_cpu, emulator_cpu],
        &converging,
        peak_converging,
    );
    if !a.steady {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let changed = api
        .writes
        .changed
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let writes = [
        writes_after.0 - writes_before.0,
        writes_after.1 - writes_before.1,
        writes_after.2 - writes_before.2,
    ];
    print_steady(
        &a,
        [steady, peak, anon, file],
        &steady_calls,
        writes,
        &changed,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The steady window's figures: memory ([VmRSS, VmHWM, RssAnon, RssFile] in KiB), the calls of
/// its passes, the Kubernetes writes (status, patches, events) and the status fields they changed.
fn print_steady(
    a: &Args,
    [steady, peak, anon, file]: [u64; 4],
    steady_calls: &Counted,
    writes: [u64; 3],
    changed: &std::collections::BTreeMap<String, u64>,
) {
    println!(
        "peak RSS overall               {:.1} MiB",
        peak as f64 / 1024.0
    );
    println!(
        "steady RSS                     {:.1} MiB ({:.1} anonymous, {:.1} file-backed)",
        steady as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    let passes = steady_calls.passes;
    println!(
        "steady passes observed         {passes} over {} s (resync every {} s)",
        a.resync + a.resync / 2 + 2,
        a.resync
    );
    println!(
        "AWS calls per pass             {:.1} ({} mutating in all; Lambda control plane {:.1})",
        steady_calls.total() as f64 / passes.max(1) as f64,
        steady_calls.mutating(),
        steady_calls.lambda_control_plane() as f64 / passes.max(1) as f64,
    );
    let mut by_op: Vec<(&String, &u64)> =
        steady_calls.calls.iter().filter(|(_, n)| **n > 0).collect();
    by_op.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let per_pass = |n: u64| n as f64 / passes.max(1) as f64;
    let ops: Vec<String> = by_op
        .iter()
        .map(|(op, n)| format!("{op} {:.1}", per_pass(**n)))
        .collect();
    println!("  by operation                 {}", ops.join(", "));
    println!(
        "Kubernetes writes in steady    status {} patches {} events {}",
        writes[0], writes[1], writes[2]
    );
    if !changed.is_empty() {
        let fields: Vec<String> = changed.iter().map(|(f, n)| format!("{f} {n}")).collect();
        println!("  status fields they changed  {}", fields.join(", "));
    }
}

/// Convergence figures: time to all Ready, CPU of the operator and the emulator, AWS calls and
/// the peak RSS (KiB) until then.
fn print_converged(
    a: &Args,
    converged: Duration,
    [operator_cpu, emulator_cpu]: [f64; 2],
    converging: &Counted,
    peak_converging: u64,
) {
    println!("pipelines                      {}", a.pipelines);
    println!("concurrency                    {}", a.concurrency);
    println!(
        "all Ready after                {:.1} s",
        converged.as_secs_f64()
    );
    println!(
        "CPU while converging           operator {operator_cpu:.1} s, emulator {}",
        a.emulator_pid
            .map_or("not measured".to_owned(), |_| format!(
                "{emulator_cpu:.1} s"
            ))
    );
    let lambda = converging.lambda_control_plane();
    println!(
        "AWS calls while converging     {} ({} mutating); Lambda control plane {lambda}: \
         at least {:.0} s at its fixed {LAMBDA_CONTROL_PLANE_RPS} requests/s",
        converging.total(),
        converging.mutating(),
        lambda as f64 / LAMBDA_CONTROL_PLANE_RPS
    );
    println!(
        "peak RSS while converging      {:.1} MiB",
        peak_converging as f64 / 1024.0
    );
}
