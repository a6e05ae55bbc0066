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
    /// The S3 bucket of the failure destination.
    pub bucket: String,
    /// The relay's configuration, exactly as the reconcile sets it on the relay function.
    pub relay: RelayConfig,
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
    let env = table
        .table()
        .and_then(|t| t.table_arn())
        .and_then(AwsEnv::from_arn)
        .ok_or_else(|| ReplayError::NotProvisioned(format!("table {} has no ARN", names.table)))?;
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
    let bucket = bucket_of(&destination)
        .ok_or_else(|| ReplayError::MetadataOnly(destination.clone()))?
        .to_owned();
    Ok(Target {
        destination,
        bucket,
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
}
