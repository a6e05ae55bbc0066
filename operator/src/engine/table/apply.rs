//! The table's mutating calls: CreateTable, UpdateTable (stream, billing, deletion protection)
//! and UpdateContinuousBackups, and how the state follows what they return.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as DdbBilling, KeySchemaElement, KeyType as DdbKeyType,
    PointInTimeRecoverySpecification, ProvisionedThroughput, ScalarAttributeType,
    StreamSpecification, TableDescription,
};

use super::{Change, Observed, Table, ddb_tags, parse_description, to_view};
use crate::crd::BillingMode;
use crate::engine::EngineError;
use crate::engine::driver::{Applied, Resource};
use crate::engine::errors::{AwsResultExt, internal};

/// After a CreateTable/UpdateTable: the state follows the description (ARN, stream), and the
/// step waits while the table is not ACTIVE.
pub(super) fn settle(
    resource: &str,
    t: &TableDescription,
    state: &mut Option<Observed>,
) -> Applied {
    let (o, active) = parse_description(t);
    let status = o.status.clone();
    match state {
        Some(s) => {
            if !o.arn.is_empty() {
                s.arn = o.arn;
            }
            if o.stream_view.is_some() {
                s.stream_arn = o.stream_arn;
                s.stream_view = o.stream_view;
            }
            s.status = o.status;
        }
        None => *state = Some(o),
    }
    if active {
        Applied::Done
    } else {
        Applied::Settling(format!("{resource} is {status}"))
    }
}

impl Table {
    pub(super) async fn create(
        &self,
        ddb: &aws_sdk_dynamodb::Client,
    ) -> Result<TableDescription, EngineError> {
        let d = &self.desired;
        let mut req = ddb
            .create_table()
            .table_name(&d.name)
            .billing_mode(billing(d.billing))
            .stream_specification(stream_spec(true, d.stream_view)?)
            .deletion_protection_enabled(d.deletion_protection)
            .set_tags(Some(ddb_tags(&d.tags)?));
        for (attr, kt, at) in &d.keys {
            req = req
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(DdbKeyType::from(*kt))
                        .build()
                        .map_err(|e| internal("building key schema", e))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attr)
                        .attribute_type(ScalarAttributeType::from(*at))
                        .build()
                        .map_err(|e| internal("building attribute definition", e))?,
                );
        }
        if let Some((r, w)) = d.throughput {
            req = req.provisioned_throughput(throughput(r, w)?);
        }
        let res = req.send().await.aws("CreateTable", &self.resource())?;
        res.table_description()
            .cloned()
            .ok_or_else(|| internal(self.resource(), "CreateTable returned no description"))
    }

    /// UpdateTable for the stream, billing, or deletion protection.
    pub(super) async fn update(
        &self,
        ddb: &aws_sdk_dynamodb::Client,
        change: &Change,
    ) -> Result<Option<TableDescription>, EngineError> {
        let d = &self.desired;
        let mut req = ddb.update_table().table_name(&d.name);
        req = match change {
            Change::EnableStream => req.stream_specification(stream_spec(true, d.stream_view)?),
            Change::Billing => {
                let req = req.billing_mode(billing(d.billing));
                match d.throughput {
                    Some((r, w)) => req.provisioned_throughput(throughput(r, w)?),
                    None => req,
                }
            }
            Change::DeletionProtection(on) => req.deletion_protection_enabled(*on),
            Change::Unprotect => req.deletion_protection_enabled(false),
            _ => return Ok(None),
        };
        let res = req.send().await.aws("UpdateTable", &self.resource())?;
        Ok(res.table_description().cloned())
    }

    pub(super) async fn pitr(
        &self,
        ddb: &aws_sdk_dynamodb::Client,
        on: bool,
    ) -> Result<(), EngineError> {
        ddb.update_continuous_backups()
            .table_name(&self.desired.name)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(on)
                    .build()
                    .map_err(|e| internal("building PITR specification", e))?,
            )
            .send()
            .await
            .aws("UpdateContinuousBackups", &self.resource())?;
        Ok(())
    }
}

fn billing(b: BillingMode) -> DdbBilling {
    match b {
        BillingMode::PayPerRequest => DdbBilling::PayPerRequest,
        BillingMode::Provisioned => DdbBilling::Provisioned,
    }
}

fn stream_spec(enabled: bool, view: &str) -> Result<StreamSpecification, EngineError> {
    StreamSpecification::builder()
        .stream_enabled(enabled)
        .stream_view_type(to_view(view))
        .build()
        .map_err(|e| internal("building stream specification", e))
}

fn throughput(r: i64, w: i64) -> Result<ProvisionedThroughput, EngineError> {
    ProvisionedThroughput::builder()
        .read_capacity_units(r)
        .write_capacity_units(w)
        .build()
        .map_err(|e| internal("building provisioned throughput", e))
}
