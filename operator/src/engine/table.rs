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
    BillingMode as DdbBilling, KeyType as DdbKeyType, PointInTimeRecoveryStatus,
    ScalarAttributeType, StreamViewType as DdbView, TableDescription, TableStatus, Tag,
};

use crate::crd::{BillingMode, DeletionPolicy, KeyType, TableSpec};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt};
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
    /// Delete: switch deletion protection off first (deletionPolicy Delete).
    Unprotect,
    Delete,
    /// Delete keeps the table, and says why.
    Keep(String),
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
            Change::Unprotect => (
                Verb::Update,
                "deletion protection: true -> false (deletionPolicy Delete)".to_owned(),
            ),
            Change::Delete => (Verb::Delete, "deletionPolicy Delete".to_owned()),
            Change::Keep(why) => (Verb::Retain, why.clone()),
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

/// Pure: the table the spec asks for (`may_adopt` needs the spec's opt-in and the operator's
/// `--allow-adoption`).
pub fn desired(
    t: &TableSpec,
    name: &str,
    tags: &BTreeMap<String, String>,
    allow_adoption: bool,
) -> Desired {
    let mut keys = vec![(
        t.partition_key.name.clone(),
        "HASH",
        key_type_str(t.partition_key.attribute_type),
    )];
    if let Some(sk) = &t.sort_key {
        keys.push((sk.name.clone(), "RANGE", key_type_str(sk.attribute_type)));
    }
    Desired {
        name: name.to_owned(),
        keys,
        billing: t.billing_mode,
        throughput: t
            .provisioned_throughput
            .map(|p| (p.read_capacity_units, p.write_capacity_units)),
        stream_view: t.stream_view_type.as_str(),
        pitr: t.point_in_time_recovery,
        deletion_protection: t.deletion_protection,
        tags: tags.clone(),
        may_adopt: t.adopt_existing && allow_adoption,
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
    let Some(out) = ddb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .found("DescribeTable", &resource)?
    else {
        return Ok(None);
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

fn to_view(v: &str) -> DdbView {
    DdbView::from(v)
}

fn ddb_tags(t: &BTreeMap<String, String>) -> Result<Vec<Tag>, EngineError> {
    tags::sdk_tags(t, "dynamodb", |k, v| Tag::builder().key(k).value(v).build())
}

/// The pipeline's table.
#[derive(Clone, Debug)]
pub struct Table {
    pub desired: Desired,
    pub deletion_policy: DeletionPolicy,
    /// `--allow-delete-adopted-tables`.
    pub allow_delete_adopted: bool,
}

impl Resource for Table {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Table
    }

    fn resource(&self) -> String {
        format!("dynamodb table {}", self.desired.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.desired.name).await
    }

    /// A table that is not ACTIVE is waited for (plan still lists what differs).
    fn diff(&self, o: &Option<Observed>, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        let changes = diff(&self.desired, o.as_ref(), owner)?;
        Ok(Diff {
            wait: o
                .as_ref()
                .filter(|o| o.status != "ACTIVE")
                .map(|o| format!("{} is {}", self.resource(), o.status)),
            ..Diff::changes(changes)
        })
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        change.verb_detail(&self.desired)
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let ddb = &w.clients().dynamodb;
        let resource = self.resource();
        let arn = state.as_ref().map(|o| o.arn.clone()).unwrap_or_default();
        let after = match change {
            Change::Create => Some(self.create(ddb).await?),
            Change::Adopt(t) | Change::Tag(t) => {
                ddb.tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(ddb_tags(t)?))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
                None
            }
            Change::Untag(keys) => {
                ddb.untag_resource()
                    .resource_arn(arn)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
                None
            }
            Change::Pitr(on) => {
                self.pitr(ddb, *on).await?;
                None
            }
            Change::Delete => {
                ddb.delete_table()
                    .table_name(&self.desired.name)
                    .send()
                    .await
                    .aws("DeleteTable", &resource)?;
                None
            }
            Change::Keep(_) => None,
            other => self.update(ddb, other).await?,
        };
        Ok(match after {
            Some(t) => settle(&resource, &t, state),
            None => Applied::Done,
        })
    }

    /// Honours the deletion policy; never touches a table that is not ours; an adopted table is
    /// kept unless the operator allows deleting adopted tables and its protection is off.
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        let resource = self.resource();
        let Some(o) = o
            .as_ref()
            .filter(|o| !ctx.owner.leaves_alone(&o.tags, &self.resource()))
        else {
            return Ok(Diff::none());
        };
        if self.deletion_policy == DeletionPolicy::Retain {
            return Ok(Diff::changes(vec![Change::Keep(
                "deletionPolicy Retain: the table and its data are kept".to_owned(),
            )]));
        }
        if let Some(reason) = adopted_and_kept(self.allow_delete_adopted, o) {
            return Ok(Diff::changes(vec![Change::Keep(reason.to_owned())]));
        }
        if o.status == "DELETING" {
            return Ok(Diff::wait(format!("{resource} is DELETING")));
        }
        let mut changes = Vec::new();
        if o.deletion_protection {
            changes.push(Change::Unprotect);
        }
        changes.push(Change::Delete);
        Ok(Diff::changes(changes))
    }
}

/// Why an adopted table is kept whatever its deletion policy, if it is: the operator may delete
/// an adopted table only with `--allow-delete-adopted-tables`, and never switches off deletion
/// protection on one (someone else set it).
fn adopted_and_kept(allow_delete_adopted: bool, o: &Observed) -> Option<&'static str> {
    if !o.tags.contains_key(tags::ADOPTED) {
        return None;
    }
    if !allow_delete_adopted {
        return Some(
            "adopted table kept: deletionPolicy Delete applies to an adopted table only when the operator runs with --allow-delete-adopted-tables",
        );
    }
    o.deletion_protection.then_some(
        "adopted table kept: its deletion protection was not set by outbox-operator and is never switched off by it; turn it off yourself to let delete remove the table",
    )
}

mod apply;
use apply::settle;

#[cfg(test)]
mod tests;
