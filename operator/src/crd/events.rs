//! Routing and projection of `spec.relay.events[]`: the conditions a record must meet for an
//! entry to apply (`match`) and the attributes its event carries (`fields`). The relay reads the
//! same values from its environment ([`outbox_contract::RecordMatch`], [`outbox_contract::Fields`]).

use kube::KubeSchema;
use outbox_contract::{AttributeCondition, EventMapping, Fields, KeyPrefix, RecordMatch};
use serde::{Deserialize, Serialize};

use super::EventMappingSpec;

/// Conditions on a stream record; the entry applies only when its change type and every
/// condition hold. Entries are tried in order and the first that applies wins; a record no
/// entry applies to is skipped (and never invokes the relay where the filter can tell).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(
    validation = Rule::new("(has(self.keyPrefix) ? size(self.keyPrefix) : 0) + (has(self.attributes) ? size(self.attributes) : 0) > 0")
        .message("needs at least one keyPrefix or attributes condition (omit match to take every record of the change type)")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventMatchSpec {
    /// The string value of a key attribute (spec.table.partitionKey or sortKey, type S) starts
    /// with a prefix, e.g. `{key: pk, prefix: "ORDER#"}`. At most one per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[x_kube(
        validation = Rule::new("self.all(k, self.exists_one(l, l.key == k.key))")
            .message("at most one prefix per key attribute")
    )]
    pub key_prefix: Vec<KeyPrefixSpec>,

    /// Conditions on top-level attributes of the image the entry reads: the image of its
    /// payload, or for payload keys NewImage (INSERT, MODIFY) / OldImage (REMOVE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub attributes: Vec<AttributeConditionSpec>,
}

/// A prefix condition on a key attribute's string value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyPrefixSpec {
    /// Name of the key attribute: the table's partition key or sort key (a string key).
    #[schemars(length(min = 1, max = 255))]
    pub key: String,
    /// The prefix, e.g. "USER#".
    #[schemars(length(min = 1, max = 256))]
    pub prefix: String,
}

/// A condition on one top-level attribute: exactly one of equals or exists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.equals) != has(self.exists)")
        .message("exactly one of equals or exists")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeConditionSpec {
    /// Attribute name (top level).
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// The attribute is a string (S) with exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub equals: Option<String>,
    /// true: the attribute is present (any type); false: it is absent. Not expressible in the
    /// event source mapping's filter: the relay decides (see docs/engine.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// Which top-level attributes of the image the event's item carries: exactly one of include
/// or exclude. Key attributes are always kept; the others are dropped inside the relay, so they
/// never reach the bus. Absent: the whole image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.include) != has(self.exclude)")
        .message("exactly one of include or exclude")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldsSpec {
    /// Only these attributes (and the keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 255)))]
    pub include: Option<Vec<String>>,
    /// Every attribute but these (key attributes may not be listed: keys are always published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 255)))]
    pub exclude: Option<Vec<String>>,
}

impl EventMatchSpec {
    pub fn to_contract(&self) -> RecordMatch {
        RecordMatch {
            key_prefix: self
                .key_prefix
                .iter()
                .map(|k| KeyPrefix {
                    key: k.key.clone(),
                    prefix: k.prefix.clone(),
                })
                .collect(),
            attributes: self
                .attributes
                .iter()
                .map(|a| AttributeCondition {
                    name: a.name.clone(),
                    equals: a.equals.clone(),
                    exists: a.exists,
                })
                .collect(),
        }
    }
}

impl FieldsSpec {
    /// The relay's field list (include wins when a spec that skipped admission has both).
    pub fn to_contract(&self) -> Fields {
        match (&self.include, &self.exclude) {
            (Some(names), _) => Fields::Include(names.clone()),
            (None, Some(names)) => Fields::Exclude(names.clone()),
            (None, None) => Fields::Exclude(Vec::new()),
        }
    }
}

impl EventMappingSpec {
    /// The entry as the relay's configuration carries it.
    pub fn to_contract(&self) -> EventMapping {
        EventMapping {
            matches: self.matches.as_ref().map(EventMatchSpec::to_contract),
            fields: self.fields.as_ref().map(FieldsSpec::to_contract),
            ..EventMapping::new(self.change, &self.source, &self.detail_type, self.payload)
        }
    }
}
