//! The DynamoDB table with its stream, point-in-time recovery, deletion protection and billing.
//!
//! Ownership: a table without our tags is never modified unless the spec opts in
//! (`table.adoptExisting`) AND the operator runs with `--allow-adoption`; adoption tags it.
//! Drift: a disabled stream is re-enabled (a new stream with a new ARN: the mapping follows);
//! billing, deletion protection, PITR and tags are set back to the spec.
//! Immutable: a live stream is never disabled or changed (that loses the changes not yet
//! relayed), so another view type than the spec's is refused like another key schema.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as DdbBilling, KeySchemaElement, KeyType as DdbKeyType,
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, ProvisionedThroughput,
    ScalarAttributeType, StreamSpecification, StreamViewType as DdbView, TableDescription,
    TableStatus, Tag,
};

use crate::crd::{BillingMode, DeletionPolicy, KeyType};

use super::context::{AwsEnv, Ctx, Progress};
use super::errors::{AwsResultExt, is_not_found, local};
use super::tags::{self, Ownership};
use super::{Component, EngineError, Verb};

/// The table as the spec wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// (attribute, HASH|RANGE, S|N|B)
    pub keys: Vec<(String, &'static str, &'static str)>,
    pub billing: BillingMode,
    pub throughput: Option<(i64, i64)>,
    pub stream_view: &'static str,
    pub pitr: bool,
    pub deletion_protection: bool,
    pub tags: BTreeMap<String, String>,
    /// Spec opt-in and operator flag both set.
    pub may_adopt: bool,
}

/// The table as AWS has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub arn: String,
    pub status: String,
    pub keys: Vec<(String, &'static str, &'static str)>,
    pub billing: BillingMode,
    pub throughput: Option<(i64, i64)>,
    /// View type of the enabled stream, None when the stream is off.
    pub stream_view: Option<String>,
    pub stream_arn: Option<String>,
    pub deletion_protection: bool,
    pub pitr: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Adopt(BTreeMap<String, String>),
    EnableStream,
    Billing,
    DeletionProtection(bool),
    Pitr(bool),
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
}

impl Change {
    fn verb_detail(&self, d: &Desired) -> (Verb, String) {
        match self {
            Change::Create => (
                Verb::Create,
                format!(
                    "stream {}, {:?}, deletion protection {}",
                    d.stream_view, d.billing, d.deletion_protection
                ),
            ),
            Change::Adopt(t) => (Verb::Adopt, format!("tag {}", tags::describe(t))),
            Change::EnableStream => (
                Verb::Update,
                format!("stream: disabled -> {}", d.stream_view),
            ),
            Change::Billing => (Verb::Update, format!("billing: -> {:?}", d.billing)),
            Change::DeletionProtection(on) => {
                (Verb::Update, format!("deletion protection: -> {on}"))
            }
            Change::Pitr(on) => (Verb::Update, format!("point-in-time recovery: -> {on}")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
        }
    }
}

fn key_type_str(t: KeyType) -> &'static str {
    match t {
        KeyType::S => "S",
        KeyType::N => "N",
        KeyType::B => "B",
    }
}

pub fn desired(ctx: &Ctx<'_>) -> Desired {
    let t = &ctx.spec.table;
    let mut keys = vec![(
        t.partition_key.name.clone(),
        "HASH",
        key_type_str(t.partition_key.attribute_type),
    )];
    if let Some(sk) = &t.sort_key {
        keys.push((sk.name.clone(), "RANGE", key_type_str(sk.attribute_type)));
    }
    Desired {
        name: ctx.names.table.clone(),
        keys,
        billing: t.billing_mode,
        throughput: t
            .provisioned_throughput
            .map(|p| (p.read_capacity_units, p.write_capacity_units)),
        stream_view: t.stream_view_type.as_str(),
        pitr: t.point_in_time_recovery,
        deletion_protection: t.deletion_protection,
        tags: ctx.tags.clone(),
        may_adopt: t.adopt_existing && ctx.config.allow_adoption,
    }
}

/// Wanted vs observed → changes, in the order they must be applied.
pub fn diff(
    d: &Desired,
    o: Option<&Observed>,
    owner: &tags::Owner,
) -> Result<Vec<Change>, EngineError> {
    let resource = format!("dynamodb table {}", d.name);
    let Some(o) = o else {
        let mut changes = vec![Change::Create];
        if d.pitr {
            changes.push(Change::Pitr(true));
        }
        return Ok(changes);
    };
    let mut changes = Vec::new();
    match owner.classify(&o.tags) {
        Ownership::Ours => {}
        Ownership::Foreign if d.may_adopt => {
            let mut t = d.tags.clone();
            t.insert(tags::ADOPTED.to_owned(), "true".to_owned());
            changes.push(Change::Adopt(t));
        }
        Ownership::Foreign => {
            return Err(EngineError::Conflict {
                resource,
                detail: "it has no outbox-operator ownership tags; to take it over set spec.table.adoptExisting and run the operator with --allow-adoption".to_owned(),
            });
        }
        other => return Err(tags::conflict(&resource, &other)),
    }
    let mut want_keys = d.keys.clone();
    let mut have_keys = o.keys.clone();
    want_keys.sort();
    have_keys.sort();
    if want_keys != have_keys {
        return Err(EngineError::InvalidSpec {
            message: format!(
                "{resource} has key schema {have_keys:?}, spec.table.partitionKey/sortKey ask for {want_keys:?}; a table's keys cannot change"
            ),
        });
    }
    match &o.stream_view {
        None => changes.push(Change::EnableStream),
        Some(v) if v != d.stream_view => {
            return Err(EngineError::InvalidSpec {
                message: format!(
                    "spec.table.streamViewType is {}, but {resource} streams {v}; a live stream's view type cannot change (disabling it loses the changes not yet relayed): set spec.table.streamViewType back to {v}",
                    d.stream_view
                ),
            });
        }
        Some(_) => {}
    }
    if o.billing != d.billing
        || (d.billing == BillingMode::Provisioned && o.throughput != d.throughput)
    {
        changes.push(Change::Billing);
    }
    // On an adopted table the protection was someone else's choice: it may be switched on,
    // never off.
    let adopted =
        o.tags.contains_key(tags::ADOPTED) || matches!(changes.first(), Some(Change::Adopt(_)));
    if o.deletion_protection != d.deletion_protection && !(adopted && o.deletion_protection) {
        changes.push(Change::DeletionProtection(d.deletion_protection));
    }
    if o.pitr != d.pitr {
        changes.push(Change::Pitr(d.pitr));
    }
    if !matches!(changes.first(), Some(Change::Adopt(_))) {
        changes.extend(tags::changes(&d.tags, &o.tags, Change::Untag, Change::Tag));
    }
    Ok(changes)
}

fn parse_description(t: &TableDescription) -> (Observed, bool) {
    let keys = t
        .key_schema()
        .iter()
        .map(|k| {
            let attr = k.attribute_name().to_owned();
            let kt = if *k.key_type() == DdbKeyType::Hash {
                "HASH"
            } else {
                "RANGE"
            };
            let at = t
                .attribute_definitions()
                .iter()
                .find(|a| a.attribute_name() == attr)
                .map(|a| match a.attribute_type() {
                    ScalarAttributeType::N => "N",
                    ScalarAttributeType::B => "B",
                    _ => "S",
                })
                .unwrap_or("S");
            (attr, kt, at)
        })
        .collect();
    let billing = match t.billing_mode_summary().and_then(|b| b.billing_mode()) {
        Some(DdbBilling::PayPerRequest) => BillingMode::PayPerRequest,
        _ => BillingMode::Provisioned,
    };
    let throughput = t
        .provisioned_throughput()
        .and_then(|p| Some((p.read_capacity_units()?, p.write_capacity_units()?)));
    let stream_view = t
        .stream_specification()
        .filter(|s| s.stream_enabled())
        .map(|s| {
            s.stream_view_type()
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        });
    let stream_arn = stream_view
        .as_ref()
        .and_then(|_| t.latest_stream_arn().map(str::to_owned));
    let active = t.table_status() == Some(&TableStatus::Active);
    (
        Observed {
            arn: t.table_arn().unwrap_or_default().to_owned(),
            status: t
                .table_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            keys,
            billing,
            throughput: if billing == BillingMode::Provisioned {
                throughput
            } else {
                None
            },
            stream_view,
            stream_arn,
            deletion_protection: t.deletion_protection_enabled().unwrap_or(false),
            pitr: false,
            tags: BTreeMap::new(),
        },
        active,
    )
}

/// Reads the table (None when it does not exist).
pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("dynamodb table {name}");
    let ddb = &ctx.clients.dynamodb;
    let out = match ddb.describe_table().table_name(name).send().await {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(super::errors::aws_error(&e, "DescribeTable", &resource)),
    };
    let Some(t) = out.table() else {
        return Ok(None);
    };
    let (mut observed, _) = parse_description(t);
    let tags = ddb
        .list_tags_of_resource()
        .resource_arn(&observed.arn)
        .send()
        .await
        .aws("ListTagsOfResource", &resource)?;
    observed.tags = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    if observed.status != "ACTIVE" {
        // Backups cannot be described until the table is ACTIVE; the step waits anyway.
        return Ok(Some(observed));
    }
    let backups = ddb
        .describe_continuous_backups()
        .table_name(name)
        .send()
        .await
        .aws("DescribeContinuousBackups", &resource)?;
    observed.pitr = backups
        .continuous_backups_description()
        .and_then(|c| c.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        == Some(&PointInTimeRecoveryStatus::Enabled);
    Ok(Some(observed))
}

/// What the table step hands on.
#[derive(Clone, Debug, Default)]
pub struct TableOut {
    pub arn: Option<String>,
    pub stream_arn: Option<String>,
}

fn to_view(v: &str) -> DdbView {
    DdbView::from(v)
}

fn ddb_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, EngineError> {
    t.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| local("building table tag", e))
        })
        .collect()
}

/// Observe → desired → diff → apply for the table.
pub async fn reconcile(ctx: &mut Ctx<'_>) -> Result<(TableOut, Progress), EngineError> {
    let d = desired(ctx);
    let resource = format!("dynamodb table {}", d.name);
    let observed = observe(ctx, &d.name).await?;
    if let Some(env) = observed.as_ref().and_then(|o| AwsEnv::from_arn(&o.arn)) {
        ctx.env = env;
    }
    let changes = diff(&d, observed.as_ref(), &ctx.owner)?;
    let mut out = TableOut {
        arn: observed.as_ref().map(|o| o.arn.clone()),
        stream_arn: observed.as_ref().and_then(|o| o.stream_arn.clone()),
    };
    if let Some(o) = observed.as_ref().filter(|o| o.status != "ACTIVE") {
        let msg = format!("{resource} is {}", o.status);
        if !ctx.apply {
            for c in &changes {
                let (verb, detail) = c.verb_detail(&d);
                ctx.record(Component::Table, verb, &resource, detail);
            }
        }
        return Ok((out, Progress::Waiting(msg)));
    }
    let ddb = ctx.clients.dynamodb.clone();
    for change in changes {
        let (verb, detail) = change.verb_detail(&d);
        if !ctx.apply {
            ctx.record(Component::Table, verb, &resource, detail);
            continue;
        }
        // The table description after a CreateTable/UpdateTable, to see whether it settles.
        let mut after: Option<TableDescription> = None;
        match &change {
            Change::Create => {
                let mut req = ddb
                    .create_table()
                    .table_name(&d.name)
                    .billing_mode(match d.billing {
                        BillingMode::PayPerRequest => DdbBilling::PayPerRequest,
                        BillingMode::Provisioned => DdbBilling::Provisioned,
                    })
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
                                .map_err(|e| local("building key schema", e))?,
                        )
                        .attribute_definitions(
                            AttributeDefinition::builder()
                                .attribute_name(attr)
                                .attribute_type(ScalarAttributeType::from(*at))
                                .build()
                                .map_err(|e| local("building attribute definition", e))?,
                        );
                }
                if let Some((r, w)) = d.throughput {
                    req = req.provisioned_throughput(throughput(r, w)?);
                }
                let res = req.send().await.aws("CreateTable", &resource)?;
                after = res.table_description().cloned();
            }
            Change::Adopt(t) | Change::Tag(t) => {
                let arn = out.arn.clone().unwrap_or_default();
                ddb.tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(ddb_tags(t)?))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
            }
            Change::Untag(keys) => {
                ddb.untag_resource()
                    .resource_arn(out.arn.clone().unwrap_or_default())
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
            }
            Change::EnableStream => {
                let res = ddb
                    .update_table()
                    .table_name(&d.name)
                    .stream_specification(stream_spec(true, d.stream_view)?)
                    .send()
                    .await
                    .aws("UpdateTable", &resource)?;
                after = res.table_description().cloned();
            }
            Change::Billing => {
                let mut req =
                    ddb.update_table()
                        .table_name(&d.name)
                        .billing_mode(match d.billing {
                            BillingMode::PayPerRequest => DdbBilling::PayPerRequest,
                            BillingMode::Provisioned => DdbBilling::Provisioned,
                        });
                if let Some((r, w)) = d.throughput {
                    req = req.provisioned_throughput(throughput(r, w)?);
                }
                let res = req.send().await.aws("UpdateTable", &resource)?;
                after = res.table_description().cloned();
            }
            Change::DeletionProtection(on) => {
                let res = ddb
                    .update_table()
                    .table_name(&d.name)
                    .deletion_protection_enabled(*on)
                    .send()
                    .await
                    .aws("UpdateTable", &resource)?;
                after = res.table_description().cloned();
            }
            Change::Pitr(on) => {
                ddb.update_continuous_backups()
                    .table_name(&d.name)
                    .point_in_time_recovery_specification(
                        PointInTimeRecoverySpecification::builder()
                            .point_in_time_recovery_enabled(*on)
                            .build()
                            .map_err(|e| local("building PITR specification", e))?,
                    )
                    .send()
                    .await
                    .aws("UpdateContinuousBackups", &resource)?;
            }
        }
        ctx.record(Component::Table, verb, &resource, detail);
        if let Some(t) = after {
            let (o, active) = parse_description(&t);
            if !o.arn.is_empty() {
                if let Some(env) = AwsEnv::from_arn(&o.arn) {
                    ctx.env = env;
                }
                out.arn = Some(o.arn.clone());
            }
            if o.stream_view.is_some() {
                out.stream_arn = o.stream_arn.clone();
            }
            if !active {
                return Ok((
                    out,
                    Progress::Waiting(format!("{resource} is {}", o.status)),
                ));
            }
        }
    }
    Ok((out, Progress::Ready))
}

fn stream_spec(enabled: bool, view: &str) -> Result<StreamSpecification, EngineError> {
    StreamSpecification::builder()
        .stream_enabled(enabled)
        .stream_view_type(to_view(view))
        .build()
        .map_err(|e| local("building stream specification", e))
}

fn throughput(r: i64, w: i64) -> Result<ProvisionedThroughput, EngineError> {
    ProvisionedThroughput::builder()
        .read_capacity_units(r)
        .write_capacity_units(w)
        .build()
        .map_err(|e| local("building provisioned throughput", e))
}

/// Why an adopted table is kept whatever its deletion policy, if it is: the operator may delete
/// an adopted table only with `--allow-delete-adopted-tables`, and never switches off deletion
/// protection on one (someone else set it).
fn adopted_and_kept(ctx: &Ctx<'_>, o: &Observed) -> Option<&'static str> {
    if !o.tags.contains_key(tags::ADOPTED) {
        return None;
    }
    if !ctx.config.allow_delete_adopted_tables {
        return Some(
            "adopted table kept: deletionPolicy Delete applies to an adopted table only when the operator runs with --allow-delete-adopted-tables",
        );
    }
    o.deletion_protection.then_some(
        "adopted table kept: its deletion protection was not set by outbox-operator and is never switched off by it; turn it off yourself to let delete remove the table",
    )
}

/// Delete step: honours the deletion policy; never touches a table that is not ours.
/// Returns Ready when nothing of ours is left (a retained table counts as done).
pub async fn delete(ctx: &mut Ctx<'_>) -> Result<Progress, EngineError> {
    let name = ctx.names.table.clone();
    let resource = format!("dynamodb table {name}");
    let Some(o) = observe(ctx, &name).await? else {
        return Ok(Progress::Ready);
    };
    if ctx.owner.leaves_alone(&o.tags, &resource) {
        return Ok(Progress::Ready);
    }
    if ctx.spec.table.deletion_policy == DeletionPolicy::Retain {
        ctx.record(
            Component::Table,
            Verb::Retain,
            &resource,
            "deletionPolicy Retain: the table and its data are kept",
        );
        return Ok(Progress::Ready);
    }
    if let Some(reason) = adopted_and_kept(ctx, &o) {
        ctx.record(Component::Table, Verb::Retain, &resource, reason);
        return Ok(Progress::Ready);
    }
    if o.status == "DELETING" {
        return Ok(Progress::Waiting(format!("{resource} is DELETING")));
    }
    let ddb = ctx.clients.dynamodb.clone();
    if o.deletion_protection {
        ddb.update_table()
            .table_name(&name)
            .deletion_protection_enabled(false)
            .send()
            .await
            .aws("UpdateTable", &resource)?;
        ctx.record(
            Component::Table,
            Verb::Update,
            &resource,
            "deletion protection: true -> false (deletionPolicy Delete)",
        );
    }
    ddb.delete_table()
        .table_name(&name)
        .send()
        .await
        .aws("DeleteTable", &resource)?;
    ctx.record(
        Component::Table,
        Verb::Delete,
        &resource,
        "deletionPolicy Delete",
    );
    Ok(Progress::Ready)
}

#[cfg(test)]
mod tests;
