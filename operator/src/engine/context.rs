//! What every resource module gets during one pass: clients, settings, the pipeline, its names
//! and tags, the account/region its ARNs live in, and the list of actions planned or performed.

use std::collections::BTreeMap;

use crate::crd::{OutboxPipeline, OutboxPipelineSpec};

use std::sync::Arc;

use super::artifacts::Artifacts;
use super::driver::Writer;
use super::names::Names;
use super::observe::Seen;
use super::tags::Owner;
use super::{AwsAction, AwsClients, Component, EngineConfig, Verb};

/// Partition, region and account of the pipeline's resources, learnt from the table's ARN.
/// Until the table exists (plan of a new pipeline) they are placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsEnv {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl AwsEnv {
    /// From any ARN `arn:<partition>:<service>:<region>:<account>:...`.
    pub fn from_arn(arn: &str) -> Option<AwsEnv> {
        let mut parts = arn.splitn(6, ':');
        let (_, partition, _, region, account) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if partition.is_empty() || region.is_empty() || account.is_empty() {
            return None;
        }
        Some(AwsEnv {
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
        })
    }

    pub fn placeholder(region: Option<&str>) -> AwsEnv {
        AwsEnv {
            partition: "aws".to_owned(),
            region: region.unwrap_or("<region>").to_owned(),
            account: "<account>".to_owned(),
        }
    }

    /// False while the account is a placeholder (plan of a pipeline whose table is not there).
    pub fn is_known(&self) -> bool {
        self.account != "<account>"
    }

    /// `arn:<partition>:<service>:<region>:<account>:<resource>`.
    pub fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    pub fn bus_arn(&self, bus: &str) -> String {
        self.arn("events", &format!("event-bus/{bus}"))
    }

    pub fn log_group_arn(&self, function: &str) -> String {
        self.arn("logs", &format!("log-group:{}", Names::log_group(function)))
    }

    pub fn bucket_arn(&self, bucket: &str) -> String {
        format!("arn:{}:s3:::{bucket}", self.partition)
    }
}

pub struct Ctx<'a> {
    pub clients: &'a AwsClients,
    pub config: &'a EngineConfig,
    /// The Lambda zips' hashes, kept for the engine's life.
    pub artifacts: &'a Arc<Artifacts>,
    pub pipeline: &'a OutboxPipeline,
    pub spec: &'a OutboxPipelineSpec,
    pub names: Names,
    pub owner: Owner,
    /// Tags every resource gets (spec tags + ownership tags).
    pub tags: BTreeMap<String, String>,
    /// The clients that may change AWS: set for reconcile and delete, None for plan and status
    /// (whose `clients` also refuse every mutating call).
    writable: Option<&'a AwsClients>,
    pub actions: Vec<AwsAction>,
    pub env: AwsEnv,
    /// Reads this pass shares between its steps (never kept beyond the pass).
    pub(super) seen: Seen,
}

impl<'a> Ctx<'a> {
    pub fn new(
        clients: &'a AwsClients,
        config: &'a EngineConfig,
        artifacts: &'a Arc<Artifacts>,
        pipeline: &'a OutboxPipeline,
        apply: bool,
    ) -> Ctx<'a> {
        let owner = Owner {
            cluster_id: config.cluster_id.clone(),
            pipeline: format!(
                "{}/{}",
                pipeline.namespace_or_default(),
                pipeline.name_or_empty()
            ),
        };
        let tags = owner.desired_tags(&pipeline.spec.tags);
        let region = clients
            .dynamodb
            .config()
            .region()
            .map(|r| r.as_ref().to_owned());
        Ctx {
            clients,
            config,
            artifacts,
            pipeline,
            spec: &pipeline.spec,
            names: Names::new(&config.cluster_id, pipeline),
            owner,
            tags,
            writable: apply.then_some(clients),
            actions: Vec::new(),
            env: AwsEnv::placeholder(region.as_deref()),
            seen: Seen::default(),
        }
    }

    /// True for reconcile and delete, false for plan and status.
    pub fn applies(&self) -> bool {
        self.writable.is_some()
    }

    /// The handle for mutating calls; only the driver's steps use it.
    pub(super) fn writer(&self) -> Option<Writer<'a>> {
        self.writable.map(Writer::for_apply)
    }

    /// Records an action (planned, or performed just now).
    pub fn record(
        &mut self,
        component: Component,
        verb: Verb,
        resource: impl Into<String>,
        detail: impl Into<String>,
    ) {
        let action = AwsAction {
            component,
            verb,
            resource: resource.into(),
            detail: detail.into(),
        };
        if self.applies() {
            tracing::info!(action = %action, "applied");
        }
        self.actions.push(action);
    }
}

/// How a resource step ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The resource is as desired.
    Ready,
    /// AWS is still settling it (creating, updating): reconcile again later.
    Waiting(String),
}

impl Progress {
    pub fn is_ready(&self) -> bool {
        matches!(self, Progress::Ready)
    }
}

/// Parses an AWS tag list into a map.
pub fn tag_map<'t, I>(tags: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (&'t str, &'t str)>,
{
    tags.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_from_arn() {
        let env = AwsEnv::from_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/t").unwrap();
        assert_eq!(env.region, "eu-west-1");
        assert_eq!(env.account, "123456789012");
        assert_eq!(
            env.bus_arn("b"),
            "arn:aws:events:eu-west-1:123456789012:event-bus/b"
        );
        assert_eq!(env.bucket_arn("x"), "arn:aws:s3:::x");
        assert!(AwsEnv::from_arn("nope").is_none());
    }
}
