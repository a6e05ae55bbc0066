//! Other AWS accounts: the engine reaches a pipeline's account (`spec.accountRef`) through the
//! SDK's assume-role credentials provider. One SDK configuration per account (so one provider
//! and one credentials cache, refreshed by the SDK before expiry), from which the engine builds
//! one client set per account and region, with the same hooks (call observer, leadership fence,
//! read-only guard) as its own clients.

use std::time::Duration;

use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_types::sdk_config::SharedCredentialsProvider;

use super::errors::aws_error;
use super::{EngineError, ErrorClass};

/// How the engine reaches an account: the role it assumes and with what.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AssumeRole {
    /// The account's name (the OutboxAccount's, or "cli" for the CLI's flags): it is part of
    /// the STS session name, with the cluster id.
    pub name: String,
    pub role_arn: String,
    /// The external id the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// Session lifetime in seconds (None: STS's default, one hour).
    pub session_duration_seconds: Option<i32>,
    /// Region of the account's pipelines that set no spec.region (None: the operator's).
    pub region: Option<String>,
}

impl std::fmt::Debug for AssumeRole {
    // The external id is a shared secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumeRole")
            .field("name", &self.name)
            .field("role_arn", &self.role_arn)
            .field(
                "external_id",
                &self.external_id.as_ref().map(|_| "<secret>"),
            )
            .field("session_duration_seconds", &self.session_duration_seconds)
            .field("region", &self.region)
            .finish()
    }
}

/// Who the assumed credentials belong to (sts:GetCallerIdentity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumedIdentity {
    pub account: String,
    pub arn: String,
}

/// The STS session name: `outbox-<cluster id>-<account name>`, in STS's character set
/// (`[\w+=,.@-]`) and at most 64 characters, so CloudTrail in the target account tells which
/// operator installation and which OutboxAccount made a call.
pub fn session_name(cluster_id: &str, account: &str) -> String {
    let raw = format!("outbox-{cluster_id}-{account}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    clean
}

/// The SDK configuration whose credentials come from assuming `target.role_arn` with `base`'s
/// credentials (the operator's identity). Build it once per account and keep it: its provider's
/// credentials are cached and refreshed by the SDK's identity cache.
pub async fn assumed_sdk_config(
    base: &aws_config::SdkConfig,
    cluster_id: &str,
    target: &AssumeRole,
) -> aws_config::SdkConfig {
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(target.role_arn.clone())
        .session_name(session_name(cluster_id, &target.name))
        .configure(base);
    if let Some(id) = &target.external_id {
        builder = builder.external_id(id.clone());
    }
    if let Some(secs) = target
        .session_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
    {
        builder = builder.session_length(Duration::from_secs(secs));
    }
    let provider = builder.build().await;
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

/// Assumes the role (through `sdk`, an [`assumed_sdk_config`]) and asks STS who that is. The
/// error names the role and STS's error code and message.
pub async fn identity(
    sdk: &aws_config::SdkConfig,
    target: &AssumeRole,
) -> Result<AssumedIdentity, EngineError> {
    let sts = aws_sdk_sts::Client::new(sdk);
    match sts.get_caller_identity().send().await {
        Ok(out) => Ok(AssumedIdentity {
            account: out.account().unwrap_or_default().to_owned(),
            arn: out.arn().unwrap_or_default().to_owned(),
        }),
        Err(e) if e.code().is_some() => Err(aws_error(
            &e,
            "GetCallerIdentity",
            &format!("assumed role {}", target.role_arn),
        )),
        // Credentials could not be had: the STS AssumeRole error is in the error's sources.
        Err(e) => Err(assume_failed(target, &DisplayErrorContext(&e).to_string())),
    }
}

/// The error of a role that could not be assumed: AccessDenied when STS said so (the trust
/// policy, the external id, or the operator's own sts:AssumeRole permission), AwsError otherwise.
pub fn assume_failed(target: &AssumeRole, detail: &str) -> EngineError {
    let resource = format!("iam role {}", target.role_arn);
    let message = format!(
        "sts:AssumeRole of {} for OutboxAccount {} failed: {detail}",
        target.role_arn, target.name
    );
    let denied = ["AccessDenied", "not authorized", "InvalidClientTokenId"]
        .iter()
        .any(|m| detail.contains(m));
    if denied {
        EngineError::AccessDenied {
            operation: "AssumeRole".to_owned(),
            resource,
            code: "AccessDenied".to_owned(),
            message,
        }
    } else {
        EngineError::Aws {
            code: "AssumeRoleFailed".to_owned(),
            operation: "AssumeRole".to_owned(),
            resource,
            message,
            class: ErrorClass::Transient,
        }
    }
}

impl super::Engine {
    /// Makes an account available to pipelines whose `spec.accountRef` names it (replacing an
    /// earlier version of it). The controller calls this once the account's role was assumed;
    /// the CLI with its `--account-role-arn`.
    pub fn set_account(&self, target: AssumeRole) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.insert(target.name.clone(), target);
        }
    }

    /// Forgets an account (deleted, or no longer Ready): its pipelines wait.
    pub fn forget_account(&self, name: &str) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.remove(name);
        }
    }

    /// The account registered under `name`, if any.
    pub fn account(&self, name: &str) -> Option<AssumeRole> {
        self.accounts.lock().ok()?.get(name).cloned()
    }

    /// The clients of the operator's account (`assumed` None) or of an account reached through
    /// its assumed-role SDK configuration, built once per (account, region, read-only).
    pub(super) fn cached_clients_in(
        &self,
        assumed: Option<(&AssumeRole, &aws_config::SdkConfig)>,
        region: Option<&str>,
        read_only: bool,
    ) -> super::AwsClients {
        let key = (
            assumed.map(|(t, _)| t.clone()),
            region.map(str::to_owned),
            read_only,
        );
        if let Some(c) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return c;
        }
        let hooks = if read_only {
            self.hooks.read_only()
        } else {
            self.hooks.clone()
        };
        let clients = match (&self.source, assumed) {
            (_, Some((_, sdk))) => super::AwsClients::build(sdk, region, &hooks),
            (super::ClientSource::Sdk(sdk), None) => super::AwsClients::build(sdk, region, &hooks),
            (super::ClientSource::Fixed(c), None) if hooks.is_empty() => c.clone(),
            (super::ClientSource::Fixed(c), None) => c.with_hooks(&hooks),
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, clients.clone());
        }
        clients
    }

    /// The SDK configuration of an account, built once (one provider, one credentials cache).
    async fn assumed_config(&self, target: &AssumeRole) -> Option<aws_config::SdkConfig> {
        let super::ClientSource::Sdk(base) = &self.source else {
            return None; // fixed (mocked) clients serve every account
        };
        if let Some(c) = self.assumed.lock().ok()?.get(target).cloned() {
            return Some(c);
        }
        let conf = assumed_sdk_config(base, &self.config.cluster_id, target).await;
        if let Ok(mut assumed) = self.assumed.lock() {
            // Versions of this account with other settings are dropped with their clients.
            assumed.retain(|t, _| t.name != target.name);
            assumed.insert(target.clone(), conf.clone());
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(t, _, _), _| {
                t.as_ref()
                    .is_none_or(|t| t == target || t.name != target.name)
            });
        }
        Some(conf)
    }

    /// Assumes the account's role and returns who that is (sts:GetCallerIdentity with the
    /// assumed credentials): the OutboxAccount's status, and the CLI's check before a pass.
    pub async fn account_identity(
        &self,
        target: &AssumeRole,
    ) -> Result<AssumedIdentity, EngineError> {
        match self.assumed_config(target).await {
            Some(conf) => identity(&conf, target).await,
            None => Ok(AssumedIdentity {
                account: String::new(),
                arn: target.role_arn.clone(),
            }),
        }
    }

    /// The clients of a pipeline: its account's (assumed role) when it names one, the
    /// operator's otherwise; in the pipeline's region, else the account's, else the operator's.
    pub(super) async fn pipeline_clients(
        &self,
        pipeline: &crate::crd::OutboxPipeline,
        read_only: bool,
    ) -> Result<super::AwsClients, EngineError> {
        let region = pipeline.spec.region.as_deref();
        let Some(r) = &pipeline.spec.account_ref else {
            return Ok(self.cached_clients(region, read_only));
        };
        let Some(target) = self.account(&r.name) else {
            return Err(EngineError::Aws {
                resource: format!("OutboxAccount {}", r.name),
                operation: "AssumeRole".to_owned(),
                code: "AccountNotReady".to_owned(),
                message: format!(
                    "spec.accountRef: OutboxAccount {} is not Ready yet (its role was not assumed)",
                    r.name
                ),
                class: ErrorClass::Transient,
            });
        };
        let region = region.or(target.region.as_deref());
        Ok(match self.assumed_config(&target).await {
            Some(conf) => self.cached_clients_in(Some((&target, &conf)), region, read_only),
            None => self.cached_clients(region, read_only),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_name_names_cluster_and_account_within_sts_limits() {
        assert_eq!(session_name("c1", "team-a"), "outbox-c1-team-a");
        let long = session_name("cluster/x", &"a".repeat(100));
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("outbox-cluster-x-"));
    }

    #[test]
    fn the_external_id_is_never_in_debug_output() {
        let t = AssumeRole {
            name: "a".into(),
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            external_id: Some("s3cr3t".into()),
            session_duration_seconds: None,
            region: None,
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
