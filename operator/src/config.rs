//! Configuration of `outbox-operator run`: clap flags, each with its environment variable (the
//! Helm chart sets the variables), validated once into a typed [`Config`].
//!
//! [`EngineArgs`] holds the AWS and engine flags on their own so the standalone CLI commands can
//! flatten the same flags and build the same [`EngineConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Args, ValueEnum};

use crate::controller::LeaseTimings;
use crate::engine::EngineConfig;

/// `#[arg(switch = DEFAULT)]`: a boolean flag that also takes a value, as the chart's
/// environment variables need: `--flag` (true), `--flag=true|false`, or its env var.
trait Switch {
    fn switch(self, default: bool) -> Self;
}

impl Switch for Arg {
    fn switch(self, default: bool) -> Self {
        self.action(ArgAction::Set)
            .num_args(0..=1)
            .default_value(if default { "true" } else { "false" })
            .default_missing_value("true")
            .value_name("BOOL")
    }
}

/// AWS and engine flags, shared by `run` and the standalone commands.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// AWS region for every call (default: the AWS SDK's chain: profile, instance metadata).
    /// A pipeline's spec.region overrides it for that pipeline.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Endpoint URL for every AWS call, e.g. LocalStack's http://localhost:4566. Empty for real AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// Directory holding the Lambda zips: <dir>/<arch>/<function>/bootstrap.zip (default:
    /// /artifacts, as in the image; the standalone commands fall back to target/artifacts of the
    /// Cargo workspace around the current directory when /artifacts does not exist).
    #[arg(long, env = "OUTBOX_ARTIFACTS_DIR")]
    pub artifacts_dir: Option<PathBuf>,

    /// Identifies this operator installation in the ownership tags and derived names of every AWS
    /// resource it creates; unique per cluster sharing an AWS account
    /// (1-128 characters: letters, digits and _.:/=+@-).
    #[arg(long, env = "OUTBOX_CLUSTER_ID")]
    pub cluster_id: String,

    /// Let pipelines with spec.table.adoptExisting take over a table the operator did not create.
    #[arg(long, env = "OUTBOX_ALLOW_ADOPTION", switch = false)]
    pub allow_adoption: bool,

    /// Lets `deletionPolicy: Delete` delete a table a pipeline adopted. Off: an adopted table is
    /// always kept on delete, whatever its pipeline says (any namespace may ask for adoption).
    #[arg(long, env = "OUTBOX_ALLOW_DELETE_ADOPTED_TABLES", switch = false)]
    pub allow_delete_adopted_tables: bool,

    /// Permissions boundary (IAM policy ARN) attached to every execution role the operator creates.
    /// Without one the roles have none, which the documented IAM policy refuses: a warning says so
    /// at start.
    #[arg(long, env = "OUTBOX_PERMISSIONS_BOUNDARY_ARN")]
    pub permissions_boundary_arn: Option<String>,
}

impl EngineArgs {
    /// The engine's operator-wide settings.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            cluster_id: self.cluster_id.clone(),
            allow_adoption: self.allow_adoption,
            allow_delete_adopted_tables: self.allow_delete_adopted_tables,
            permissions_boundary_arn: non_empty(self.permissions_boundary_arn.as_deref()),
            artifacts_dir: self
                .artifacts_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(IMAGE_ARTIFACTS_DIR)),
        }
    }

    /// What to warn about at start: settings that work but weaken something.
    pub fn warnings(&self) -> Vec<String> {
        startup_warnings(non_empty(self.permissions_boundary_arn.as_deref()).as_deref())
    }

    /// The region flag, with an empty value meaning "not set" (as the chart may pass it).
    pub fn region(&self) -> Option<String> {
        non_empty(self.region.as_deref())
    }

    /// The endpoint flag, with an empty value meaning "not set".
    pub fn endpoint_url(&self) -> Option<String> {
        non_empty(self.endpoint_url.as_deref())
    }

    /// Checks the flags whose mistakes would otherwise surface only at the first AWS call.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.cluster_id;
        if id.is_empty()
            || id.len() > 128
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:/=+@-".contains(c))
        {
            return Err(ConfigError::ClusterId(id.clone()));
        }
        if let Some(arn) = non_empty(self.permissions_boundary_arn.as_deref())
            && !(arn.starts_with("arn:") && arn.contains(":iam::") && arn.contains(":policy/"))
        {
            return Err(ConfigError::PermissionsBoundary(arn));
        }
        if let Some(url) = self.endpoint_url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::EndpointUrl(url));
        }
        Ok(())
    }
}

/// Where the image puts the Lambda zips; `run`'s default.
pub const IMAGE_ARTIFACTS_DIR: &str = "/artifacts";

/// Said at start (a WARN log line; one stderr line for the CLI's apply) when no boundary is set.
pub const NO_BOUNDARY_WARNING: &str = "no --permissions-boundary-arn (OUTBOX_PERMISSIONS_BOUNDARY_ARN): \
     the Lambda execution roles are created without a permissions boundary, which works only if \
     the operator's IAM policy allows creating roles without one; the documented policy \
     (docs/operator-iam-policy.json) requires a boundary, so under it role creation is denied";

fn startup_warnings(permissions_boundary_arn: Option<&str>) -> Vec<String> {
    match permissions_boundary_arn {
        None => vec![NO_BOUNDARY_WARNING.to_owned()],
        Some(_) => Vec::new(),
    }
}

/// The Lambda zips directory of the standalone commands, and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactsDir {
    pub path: PathBuf,
    /// One line for standard error when the choice is not the explicit one; `None` otherwise.
    pub note: Option<String>,
}

/// The CLI's `--artifacts-dir`: the flag (or OUTBOX_ARTIFACTS_DIR) when given; else the image's
/// /artifacts when it exists; else `target/artifacts` of the nearest Cargo workspace at or above
/// `cwd` (a developer's checkout, where `make lambdas` puts the zips).
pub fn cli_artifacts_dir(flag: Option<&Path>, image_dir: &Path, cwd: &Path) -> ArtifactsDir {
    if let Some(dir) = flag.filter(|d| !d.as_os_str().is_empty()) {
        return ArtifactsDir {
            path: dir.to_owned(),
            note: None,
        };
    }
    if image_dir.is_dir() {
        return ArtifactsDir {
            path: image_dir.to_owned(),
            note: None,
        };
    }
    match workspace_root(cwd) {
        Some(root) => {
            let path = root.join("target").join("artifacts");
            let note = format!(
                "using Lambda zips from {} ({} does not exist; --artifacts-dir / OUTBOX_ARTIFACTS_DIR chooses another)",
                path.display(),
                image_dir.display()
            );
            ArtifactsDir {
                path,
                note: Some(note),
            }
        }
        None => ArtifactsDir {
            path: image_dir.to_owned(),
            note: Some(format!(
                "{} does not exist and {} is not inside a Cargo workspace: set --artifacts-dir / \
                 OUTBOX_ARTIFACTS_DIR to the directory `make lambdas` filled",
                image_dir.display(),
                cwd.display()
            )),
        },
    }
}

/// The nearest directory at or above `start` whose Cargo.toml has a `[workspace]` table.
fn workspace_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|dir| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
        manifest
            .lines()
            .any(|l| l.trim() == "[workspace]")
            .then(|| dir.to_owned())
    })
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    Text,
}

/// Flags of `outbox-operator run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,

    /// How often every pipeline is reconciled even without a change, to repair drift in AWS
    /// (humantime: 90s, 5m, 1h).
    #[arg(long, env = "OUTBOX_RESYNC_PERIOD", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,

    /// Pipelines reconciled in parallel (at least 1).
    #[arg(long, env = "OUTBOX_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,

    /// Port serving /metrics, /healthz and /readyz.
    #[arg(long, env = "OUTBOX_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Log format.
    #[arg(long, env = "OUTBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Watch OutboxPipelines in this namespace only (empty: all namespaces).
    #[arg(long, env = "OUTBOX_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Run the controller only while holding a coordination.k8s.io Lease, so several replicas
    /// are safe (true|false).
    #[arg(long, env = "OUTBOX_LEADER_ELECTION", switch = true)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "OUTBOX_LEASE_NAME", default_value = "outbox-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (the operator's own namespace; default: the
    /// kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Identity of this replica as the Lease holder and Event reporter (default: the hostname).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// How long the Lease is valid after its last renewal: a standby takes it over only after
    /// seeing it unrenewed this long (humantime; more than --renew-deadline).
    #[arg(long, env = "OUTBOX_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps acting without a successful renew; then it stops all AWS
    /// writes at once and exits to restart as a standby (humantime; less than --lease-duration,
    /// more than --retry-period).
    #[arg(long, env = "OUTBOX_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,

    /// Time between two attempts to acquire or renew the Lease (humantime; at least 100ms).
    #[arg(long, env = "OUTBOX_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

/// Problems with the flags, found before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "--cluster-id / OUTBOX_CLUSTER_ID {0:?}: must be 1-128 characters of letters, digits and _.:/=+@-"
    )]
    ClusterId(String),
    #[error(
        "--permissions-boundary-arn / OUTBOX_PERMISSIONS_BOUNDARY_ARN {0:?}: not an IAM policy ARN"
    )]
    PermissionsBoundary(String),
    #[error("--endpoint-url / AWS_ENDPOINT_URL {0:?}: must start with http:// or https://")]
    EndpointUrl(String),
    #[error("--resync-period / OUTBOX_RESYNC_PERIOD must be at least 1s")]
    ResyncPeriod,
    #[error("--concurrency / OUTBOX_CONCURRENCY must be at least 1")]
    Concurrency,
    #[error("--lease-name / OUTBOX_LEASE_NAME {0:?}: must be a DNS subdomain name")]
    LeaseName(String),
    #[error(
        "--renew-deadline / OUTBOX_RENEW_DEADLINE ({renew:?}) must be less than --lease-duration / \
         OUTBOX_LEASE_DURATION ({lease:?}), so a cut-off leader stops before its lease expires"
    )]
    RenewDeadline { renew: Duration, lease: Duration },
    #[error(
        "--retry-period / OUTBOX_RETRY_PERIOD ({retry:?}) must be at least 100ms and less than \
         --renew-deadline / OUTBOX_RENEW_DEADLINE ({renew:?})"
    )]
    RetryPeriod { retry: Duration, renew: Duration },
    #[error("--lease-duration / OUTBOX_LEASE_DURATION must be whole seconds, at least 1s: {0:?}")]
    LeaseDuration(Duration),
}

/// Leader election settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    pub lease_name: String,
    /// `None`: the client's default namespace.
    pub lease_namespace: Option<String>,
    /// Lease duration, renew deadline, retry period.
    pub timings: LeaseTimings,
}

/// The validated configuration of `outbox-operator run`.
#[derive(Clone, Debug)]
pub struct Config {
    pub engine: EngineConfig,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub resync_period: Duration,
    pub concurrency: u16,
    pub metrics_port: u16,
    pub log_format: LogFormat,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    /// `None`: leader election off (this replica always reconciles).
    pub leader_election: Option<LeaderElection>,
    /// Lease holder identity and Event reporting instance.
    pub identity: String,
}

impl Config {
    /// What `run` logs at WARN when it starts (see [`EngineArgs::warnings`]).
    pub fn warnings(&self) -> Vec<String> {
        startup_warnings(self.engine.permissions_boundary_arn.as_deref())
    }
}

impl RunArgs {
    /// Validates the flags once into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.engine.validate()?;
        if self.resync_period < Duration::from_secs(1) {
            return Err(ConfigError::ResyncPeriod);
        }
        if self.concurrency == 0 {
            return Err(ConfigError::Concurrency);
        }
        let leader_election = if self.leader_election {
            if !is_dns_subdomain(&self.lease_name) {
                return Err(ConfigError::LeaseName(self.lease_name));
            }
            Some(LeaderElection {
                lease_name: self.lease_name,
                lease_namespace: non_empty(self.lease_namespace.as_deref()),
                timings: lease_timings(
                    self.lease_duration,
                    self.renew_deadline,
                    self.retry_period,
                )?,
            })
        } else {
            None
        };
        let identity = non_empty(self.pod_name.as_deref()).unwrap_or_else(hostname);
        Ok(Config {
            engine: self.engine.engine_config(),
            region: self.engine.region(),
            endpoint_url: self.engine.endpoint_url(),
            resync_period: self.resync_period,
            concurrency: self.concurrency,
            metrics_port: self.metrics_port,
            log_format: self.log_format,
            namespace: non_empty(Some(&self.namespace)),
            leader_election,
            identity,
        })
    }
}

/// Checks `retry < renew deadline < lease duration`: the leader must give up (and stop writing
/// to AWS) before its lease can expire for the others.
pub fn lease_timings(
    lease: Duration,
    renew: Duration,
    retry: Duration,
) -> Result<LeaseTimings, ConfigError> {
    if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
        return Err(ConfigError::LeaseDuration(lease));
    }
    if renew >= lease {
        return Err(ConfigError::RenewDeadline { renew, lease });
    }
    if retry < Duration::from_millis(100) || retry >= renew {
        return Err(ConfigError::RetryPeriod { retry, renew });
    }
    Ok(LeaseTimings {
        lease_duration: lease,
        renew_deadline: renew,
        retry_period: retry,
    })
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The host name (a pod's name in Kubernetes), or a random identity when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .and_then(|h| non_empty(Some(&h)))
        .unwrap_or_else(|| format!("outbox-operator-{:08x}", rand::random::<u32>()))
}

#[cfg(test)]
mod tests;
