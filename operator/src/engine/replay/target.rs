//! What a replay of a pipeline publishes to, and how: the failure destination and the relay's
//! configuration, both built from the spec by the same desired-state builders the reconcile
//! uses (`pipeline::desired`), so a replayed event is the event the deployed relay publishes.

use outbox_contract::RelayConfig;

use super::ReplayError;
use crate::crd::OutboxPipeline;
use crate::engine::context::AwsEnv;
use crate::engine::errors::aws_error;
use crate::engine::names::Names;
use crate::engine::pipeline::desired::{self, Inputs, Known};
use crate::engine::tags::Owner;
use crate::engine::{AwsClients, EngineConfig};

/// Where the pipeline's parked batches are and what the relay would publish them as.
#[derive(Clone, Debug)]
pub struct Target {
    /// The failure destination's ARN.
    pub destination: String,
    /// What kind of destination it is.
    pub parked: Parked,
    /// The pipeline's table: a batch read back from a stream must name one of its streams.
    pub table_arn: String,
    /// The relay's configuration, exactly as the reconcile sets it on the relay function.
    pub relay: RelayConfig,
}

/// The failure destination, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parked {
    /// An S3 bucket: each batch with its records.
    S3 { bucket: String },
    /// An SQS queue: one message per batch, metadata only.
    Sqs { queue_name: String, account: String },
    /// An SNS topic: metadata only, delivered to its subscribers (cannot be listed).
    Sns,
}

impl Parked {
    /// The kind of destination an ARN names; None for anything else.
    pub fn of(arn: &str) -> Option<Parked> {
        if let Some(bucket) = bucket_of(arn) {
            return Some(Parked::S3 {
                bucket: bucket.to_owned(),
            });
        }
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _, "sqs", _, account, name] if !name.is_empty() => Some(Parked::Sqs {
                queue_name: (*name).to_owned(),
                account: (*account).to_owned(),
            }),
            ["arn", _, "sns", _, _, name] if !name.is_empty() => Some(Parked::Sns),
            _ => None,
        }
    }
}

/// True when `stream_arn` is a stream of the table `table_arn` (`<table ARN>/stream/<label>`).
pub fn stream_of_table(stream_arn: &str, table_arn: &str) -> bool {
    stream_arn
        .strip_prefix(table_arn)
        .and_then(|rest| rest.strip_prefix("/stream/"))
        .is_some_and(|label| !label.is_empty() && !label.contains('/'))
}

/// The bucket of an S3 ARN (`arn:<partition>:s3:::<bucket>`).
pub fn bucket_of(arn: &str) -> Option<&str> {
    arn.split_once(":s3:::")
        .map(|(_, b)| b)
        .filter(|b| !b.is_empty() && !b.contains('/'))
}

/// Reads the table (for the account and region the pipeline's names depend on), then builds the
/// destination and the relay's configuration from the spec.
pub async fn resolve(
    clients: &AwsClients,
    config: &EngineConfig,
    pipeline: &OutboxPipeline,
) -> Result<Target, ReplayError> {
    let names = Names::new(&config.cluster_id, pipeline);
    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&names.table)
        .send()
        .await
        .map_err(|e| {
            ReplayError::Aws(aws_error(
                &e,
                "dynamodb:DescribeTable",
                &format!("dynamodb table {}", names.table),
            ))
        })?;
    let table_arn = table
        .table()
        .and_then(|t| t.table_arn())
        .ok_or_else(|| ReplayError::NotProvisioned(format!("table {} has no ARN", names.table)))?
        .to_owned();
    let env = AwsEnv::from_arn(&table_arn).ok_or_else(|| {
        ReplayError::NotProvisioned(format!("table {} has an unexpected ARN", names.table))
    })?;
    let owner = Owner {
        cluster_id: config.cluster_id.clone(),
        pipeline: format!(
            "{}/{}",
            pipeline.namespace_or_default(),
            pipeline.name_or_empty()
        ),
    };
    let tags = owner.desired_tags(&pipeline.spec.tags);
    let inputs = Inputs {
        spec: &pipeline.spec,
        names: &names,
        env: &env,
        config,
        tags: &tags,
        pipeline: &owner.pipeline,
    };
    let destination = desired::failure_destination(&inputs);
    let relay = relay_config(&inputs, &names)?;
    let parked =
        Parked::of(&destination).ok_or_else(|| ReplayError::Unsupported(destination.clone()))?;
    Ok(Target {
        destination,
        parked,
        table_arn,
        relay,
    })
}

/// The relay function's environment as the reconcile builds it, read back the way the relay
/// reads it at start-up.
fn relay_config(inputs: &Inputs<'_>, names: &Names) -> Result<RelayConfig, ReplayError> {
    let env = desired::functions(inputs, &Known::default())
        .into_iter()
        .find(|(_, f)| f.name == names.relay_function)
        .map(|(_, f)| f.env)
        .unwrap_or_default();
    RelayConfig::from_lookup(|k| env.get(k).cloned()).map_err(ReplayError::RelayConfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_destinations_have_a_bucket() {
        assert_eq!(
            bucket_of("arn:aws:s3:::outbox-failures"),
            Some("outbox-failures")
        );
        assert_eq!(bucket_of("arn:aws-cn:s3:::b"), Some("b"));
        assert_eq!(bucket_of("arn:aws:sqs:eu-west-1:1:q"), None);
        assert_eq!(bucket_of("arn:aws:sns:eu-west-1:1:t"), None);
    }

    #[test]
    fn destinations_are_told_apart_by_their_arn() {
        assert_eq!(
            Parked::of("arn:aws:sqs:eu-west-1:123456789012:parked"),
            Some(Parked::Sqs {
                queue_name: "parked".into(),
                account: "123456789012".into()
            })
        );
        assert_eq!(
            Parked::of("arn:aws:sns:eu-west-1:123456789012:t"),
            Some(Parked::Sns)
        );
        assert_eq!(Parked::of("arn:aws:lambda:eu-west-1:1:function:f"), None);
    }

    #[test]
    fn a_stream_belongs_to_its_table_only() {
        let table = "arn:aws:dynamodb:us-east-1:1:table/outbox-a";
        assert!(stream_of_table(
            "arn:aws:dynamodb:us-east-1:1:table/outbox-a/stream/2026-11-29T05:00:00.000",
            table
        ));
        assert!(!stream_of_table(
            "arn:aws:dynamodb:us-east-1:1:table/outbox-ab/stream/2026-11-29T05:00:00.000",
            table
        ));
        assert!(!stream_of_table(
            "arn:aws:dynamodb:us-east-1:1:table/outbox-b/stream/x",
            table
        ));
    }
}
