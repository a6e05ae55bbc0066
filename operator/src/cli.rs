//! The `outbox-operator` command line: the standalone commands run the same engine as the
//! controller, without a cluster (CI pipelines, GitOps checks, the quickstart).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{EngineArgs, LogFormat};
use crate::crd::{ConditionType, DataPlaneStatus, OutboxPipeline, OutboxPipelineStatus};
use crate::engine::{AwsAction, Engine, Outcome};
use crate::manifest::{self, Document};

#[path = "cli/accounts.rs"]
mod accounts;
pub mod replay;
use accounts::cli_accounts;

/// Kubernetes operator and standalone CLI for a lossless transactional outbox on AWS.
#[derive(Debug, Parser)]
#[command(name = "outbox-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a CustomResourceDefinition as YAML (OutboxPipeline unless named).
    Crd {
        /// Which CRD: outboxpipelines (default) or outboxaccounts.
        #[arg(value_enum, default_value_t = CrdKind::Outboxpipelines)]
        kind: CrdKind,
    },
    #[command(flatten)]
    Manifests(Box<ManifestCommand>),
    /// Run the Kubernetes controller
    Run(Box<crate::config::RunArgs>),
    /// Republish the batches parked in a pipeline's failure destination through the relay's
    /// code (same events, same ids, oldest first); exit 0 all replayed, 1 error, 2 some left.
    Replay(Box<replay::ReplayArgs>),
}

/// The standalone commands that work on manifests.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Reconcile pipelines from manifests until Ready (or the timeout).
    Apply(ApplyArgs),
    /// Show what apply would change; changes nothing.
    Plan(PlanArgs),
    /// Tear pipelines down, honouring their deletion policies (tables are kept by default).
    Delete(ApplyArgs),
    /// Show the conditions and AWS identifiers of pipelines.
    Status(StatusArgs),
}

/// Manifests to read.
#[derive(Debug, Args)]
pub struct Files {
    /// Manifest file (YAML 1.2, multi-document, at most 4 MiB); repeatable; `-` reads standard
    /// input. A pipeline (namespace/name) may appear once across all of them.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,

    #[command(flatten)]
    pub account: accounts::AccountFlags,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: Files,
    /// Give up after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "OUTBOX_TIMEOUT")]
    pub timeout: Duration,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub files: Files,
    /// Exit 0 when in sync, 2 when changes are pending, 1 on error.
    #[arg(long)]
    pub exit_code: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub files: Files,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format on standard error: text or json.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text, env = "OUTBOX_LOG_FORMAT")]
    pub format: LogFormat,
}

/// The CRDs `crd` prints.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CrdKind {
    Outboxpipelines,
    Outboxaccounts,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// Logs go to standard error, so standard output stays the command's result.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_CHANGES_PENDING: i32 = 2;

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Crd { kind } => {
            match kind {
                CrdKind::Outboxpipelines => print!("{}", crate::crd_yaml()?),
                CrdKind::Outboxaccounts => print!("{}", crate::account_crd_yaml()?),
            }
            Ok(EXIT_OK)
        }
        Command::Manifests(command) => command.run().await,
        Command::Run(args) => crate::controller::run(*args).await,
        Command::Replay(args) => replay::run(&args).await,
    }
}

impl ManifestCommand {
    /// What every manifest command takes: the manifests, the AWS and engine flags, the log
    /// format.
    fn common(&self) -> (&Files, &EngineArgs, &LogArgs) {
        match self {
            ManifestCommand::Apply(a) | ManifestCommand::Delete(a) => (&a.files, &a.engine, &a.log),
            ManifestCommand::Plan(a) => (&a.files, &a.engine, &a.log),
            ManifestCommand::Status(a) => (&a.files, &a.engine, &a.log),
        }
    }

    /// Prepares ([`prepare`]; exit 1 when that fails, having said why on standard error), then
    /// runs the command, writing its result to standard output.
    async fn run(&self) -> anyhow::Result<i32> {
        let (files, args, log) = self.common();
        // Apply is the command that creates IAM roles.
        let warnings = match self {
            ManifestCommand::Apply(_) => args.warnings(),
            _ => Vec::new(),
        };
        let Some((engine, docs)) = prepare(files, args, log, &warnings).await else {
            return Ok(EXIT_FAILED);
        };
        let (engine, docs, out) = (&engine, &docs, &mut std::io::stdout());
        match self {
            ManifestCommand::Apply(a) => apply(engine, docs, a.timeout, out).await,
            ManifestCommand::Plan(a) => plan(engine, docs, a.exit_code, out).await,
            ManifestCommand::Delete(a) => delete(engine, docs, a.timeout, out).await,
            ManifestCommand::Status(a) => status(engine, docs, a.output, out).await,
        }
    }
}

/// Logging, the flags checked as `run` checks them, then every manifest read and checked (one
/// bad document: nothing is touched), then the engine from the standard AWS configuration, then
/// `warnings`.
async fn prepare(
    files: &Files,
    args: &EngineArgs,
    log: &LogArgs,
    warnings: &[String],
) -> Option<(Engine, Vec<Document>)> {
    init_logging(log.format);
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return None;
    }
    let mut docs = load(files)?;
    let accounts = match cli_accounts(files, &mut docs) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let mut config = args.engine_config();
    let cwd = std::env::current_dir().unwrap_or_default();
    let artifacts = crate::config::cli_artifacts_dir(
        args.artifacts_dir.as_deref(),
        Path::new(crate::config::IMAGE_ARTIFACTS_DIR),
        &cwd,
    );
    if let Some(note) = &artifacts.note {
        eprintln!("note: {note}");
    }
    config.artifacts_dir = artifacts.path;
    let sdk = crate::engine::aws_sdk_config(args.region(), args.endpoint_url()).await;
    let engine = Engine::new(&sdk, config);
    accounts::register(&engine, accounts).await?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Some((engine, docs))
}

/// Reads and checks every manifest first: one bad document changes nothing at all.
fn load(files: &Files) -> Option<Vec<Document>> {
    match read_all(&files.files) {
        Ok(docs) if docs.is_empty() => {
            eprintln!(
                "error: no OutboxPipeline found in {}",
                files.files.join(", ")
            );
            None
        }
        Ok(docs) => Some(docs),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// Reads every file; fails on the first invalid document, and on a pipeline named twice.
pub fn read_all(files: &[String]) -> Result<Vec<Document>, manifest::ManifestError> {
    let mut docs = Vec::new();
    for f in files {
        docs.extend(manifest::read_path(f)?);
    }
    manifest::reject_duplicates(&docs)?;
    Ok(docs)
}

fn key(p: &OutboxPipeline) -> String {
    format!("{}/{}", p.namespace_or_default(), p.name_or_empty())
}

fn print_actions(
    out: &mut dyn Write,
    pipeline: &str,
    actions: &[AwsAction],
) -> std::io::Result<()> {
    for a in actions {
        writeln!(out, "{pipeline}: {}: {a}", a.component.as_str())?;
    }
    Ok(())
}

/// Runs `one` on each pipeline in order, with its `namespace/name`; exit 1 when it failed for
/// any (it said why in `out`).
async fn each_pipeline(
    docs: &[Document],
    out: &mut dyn Write,
    mut one: impl AsyncFnMut(&OutboxPipeline, &str, &mut dyn Write) -> anyhow::Result<bool>,
) -> anyhow::Result<i32> {
    let mut code = EXIT_OK;
    for doc in docs {
        if !one(&doc.pipeline, &key(&doc.pipeline), &mut *out).await? {
            code = EXIT_FAILED;
        }
    }
    Ok(code)
}

/// `apply`: reconcile each pipeline until Ready, a terminal error, or the timeout.
pub async fn apply(
    engine: &Engine,
    docs: &[Document],
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + timeout;
    each_pipeline(docs, out, async |pipeline, name, out| {
        let outcome = apply_one(engine, pipeline, name, deadline, out).await?;
        print_status(out, name, &outcome.status)?;
        if outcome.status.is_ready() {
            writeln!(out, "{name}: Ready")?;
            return Ok(true);
        }
        match &outcome.error {
            Some(e) => writeln!(out, "{name}: not Ready: {} ({e})", e.reason())?,
            None => writeln!(
                out,
                "{name}: not Ready after {}",
                humantime::format_duration(timeout)
            )?,
        }
        Ok(false)
    })
    .await
}

async fn apply_one(
    engine: &Engine,
    pipeline: &OutboxPipeline,
    name: &str,
    deadline: Instant,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    loop {
        let outcome = engine.reconcile(pipeline).await;
        print_actions(out, name, &outcome.actions)?;
        if outcome.status.is_ready() && outcome.requeue_after.is_none() {
            return Ok(outcome);
        }
        if let Some(e) = &outcome.error
            && !e.is_transient()
        {
            return Ok(outcome);
        }
        let wait = outcome.requeue_after.unwrap_or(Duration::from_secs(2));
        if Instant::now() + wait > deadline {
            return Ok(outcome);
        }
        if let Some(e) = &outcome.error {
            tracing::info!(pipeline = name, error = %e, "transient error; retrying");
        }
        tokio::time::sleep(wait).await;
    }
}

/// `plan`: print what apply would change.
pub async fn plan(
    engine: &Engine,
    docs: &[Document],
    exit_code: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut pending = false;
    for doc in docs {
        let name = key(&doc.pipeline);
        match engine.plan(&doc.pipeline).await {
            Ok(plan) if plan.in_sync() => writeln!(out, "{name}: in sync")?,
            Ok(plan) => {
                pending = true;
                writeln!(out, "{name}: {} change(s) pending", plan.actions.len())?;
                print_actions(out, &name, &plan.actions)?;
            }
            Err(e) => {
                writeln!(out, "{name}: error: {e}")?;
                return Ok(EXIT_FAILED);
            }
        }
    }
    Ok(if exit_code && pending {
        EXIT_CHANGES_PENDING
    } else {
        EXIT_OK
    })
}

/// `delete`: tear down each pipeline, honouring deletion policies.
pub async fn delete(
    engine: &Engine,
    docs: &[Document],
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let deadline = Instant::now() + timeout;
    each_pipeline(docs, out, async |pipeline, name, out| {
        delete_one(engine, pipeline, name, deadline, timeout, out).await
    })
    .await
}

/// Deletes one pipeline, retrying until done, a non-transient error or the deadline (`timeout`
/// after the start); false when it is not deleted.
async fn delete_one(
    engine: &Engine,
    pipeline: &OutboxPipeline,
    name: &str,
    deadline: Instant,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    loop {
        match engine.delete(pipeline).await {
            Ok(outcome) => {
                print_actions(out, name, &outcome.actions)?;
                if outcome.done {
                    writeln!(out, "{name}: deleted")?;
                    return Ok(true);
                }
                let wait = outcome.requeue_after.unwrap_or(Duration::from_secs(2));
                if Instant::now() + wait > deadline {
                    writeln!(
                        out,
                        "{name}: not deleted after {}",
                        humantime::format_duration(timeout)
                    )?;
                    return Ok(false);
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) if e.is_transient() && Instant::now() + Duration::from_secs(2) < deadline => {
                tracing::info!(pipeline = %name, error = %e, "transient error; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                writeln!(out, "{name}: delete failed: {} ({e})", e.reason())?;
                return Ok(false);
            }
        }
    }
}

/// `status`: observe and print conditions and identifiers.
pub async fn status(
    engine: &Engine,
    docs: &[Document],
    output: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut all = serde_json::Map::new();
    let code = each_pipeline(docs, out, async |pipeline, name, out| {
        match engine.status(pipeline).await {
            Ok(status) => {
                if output == OutputFormat::Table {
                    print_status(out, name, &status)?;
                }
                all.insert(name.to_owned(), serde_json::to_value(&status)?);
                Ok(true)
            }
            Err(e) => {
                writeln!(out, "{name}: error: {} ({e})", e.reason())?;
                Ok(false)
            }
        }
    })
    .await?;
    match output {
        OutputFormat::Table => {}
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?,
        OutputFormat::Yaml => write!(out, "{}", serde_saphyr::to_string(&all)?)?,
    }
    Ok(code)
}

/// Conditions as a table, then the identifiers.
pub fn print_status(
    out: &mut dyn Write,
    name: &str,
    status: &OutboxPipelineStatus,
) -> std::io::Result<()> {
    writeln!(out, "{name}")?;
    writeln!(
        out,
        "  {:<16} {:<7} {:<13} MESSAGE",
        "CONDITION", "STATUS", "REASON"
    )?;
    let order = std::iter::once(ConditionType::Ready)
        .chain(ConditionType::COMPONENTS)
        .chain([ConditionType::Healthy]);
    for t in order {
        if let Some(c) = status.condition(t) {
            writeln!(
                out,
                "  {:<16} {:<7} {:<13} {}",
                c.type_, c.status, c.reason, c.message
            )?;
        }
    }
    let ids: [(&str, Option<&String>); 8] = [
        ("table", status.table_name.as_ref()),
        ("tableArn", status.table_arn.as_ref()),
        ("streamArn", status.stream_arn.as_ref()),
        ("relayFunctionArn", status.relay_function_arn.as_ref()),
        ("writerFunctionArn", status.writer_function_arn.as_ref()),
        (
            "eventSourceMapping",
            status.event_source_mapping_uuid.as_ref(),
        ),
        ("busArn", status.bus_arn.as_ref()),
        (
            "failureDestination",
            status.failure_destination_arn.as_ref(),
        ),
    ];
    for (label, value) in ids {
        if let Some(v) = value {
            writeln!(out, "  {label}: {v}")?;
        }
    }
    for (consumer, arn) in &status.rule_arns {
        writeln!(out, "  rule[{consumer}]: {arn}")?;
    }
    for (consumer, arn) in &status.consumer_function_arns {
        writeln!(out, "  consumerFunction[{consumer}]: {arn}")?;
    }
    for action in &status.required_actions {
        writeln!(out, "  action required: {action}")?;
    }
    if let Some(d) = &status.data_plane {
        print_data_plane(out, d)?;
    }
    Ok(())
}

/// The data-plane figures behind the Healthy condition (absent ones: no datapoint).
fn print_data_plane(out: &mut dyn Write, d: &DataPlaneStatus) -> std::io::Result<()> {
    writeln!(out, "  data plane (checked {}):", d.checked_at)?;
    let none = || "-".to_owned();
    let num = |v: Option<i64>| v.map_or_else(none, |v| v.to_string());
    let mapping = match (&d.mapping_state, &d.last_processing_result) {
        (Some(s), Some(r)) => format!("{s}, last result: {r}"),
        (Some(s), None) => s.clone(),
        _ => none(),
    };
    writeln!(out, "    mapping: {mapping}")?;
    let lag = d
        .iterator_age_seconds
        .map_or_else(none, |s| format!("{s} s"));
    writeln!(out, "    iterator age (max, 5 min): {lag}")?;
    writeln!(
        out,
        "    relay errors / throttles (15 min): {} / {}",
        num(d.relay_errors),
        num(d.relay_throttles)
    )?;
    for (consumer, n) in &d.consumer_failed_invocations {
        writeln!(out, "    failed deliveries[{consumer}] (15 min): {n}")?;
    }
    if let Some(p) = &d.parked_batches {
        let newest = d
            .newest_parked_at
            .as_deref()
            .map(|t| format!(", newest {t}"))
            .unwrap_or_default();
        writeln!(out, "    parked batches: {p}{newest}")?;
    }
    for u in &d.unreadable {
        writeln!(out, "    unreadable: {u}")?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "cli/tests.rs"]
mod tests;
