//! Entity routing and field projection: which record an event mapping applies to
//! ([`RecordMatch`]) and which of the item's attributes its event carries ([`Fields`]).
//!
//! The relay evaluates the conditions on each record (first matching entry wins); the operator
//! derives the event source mapping's filter criteria from the same conditions. Both read the
//! image [`crate::EventMapping::condition_image`] names, so the two can never disagree on it.

use serde::{Deserialize, Serialize};

/// At most this many entries in `OUTBOX_EVENTS` (and `spec.relay.events`).
pub const MAX_EVENT_MAPPINGS: usize = 20;
/// At most this many key prefix conditions per entry (a table has at most two key attributes).
pub const MAX_KEY_PREFIXES: usize = 2;
/// At most this many attribute conditions per entry.
pub const MAX_ATTRIBUTE_CONDITIONS: usize = 5;
/// At most this many attribute names in an include or exclude list.
pub const MAX_FIELDS: usize = 50;

/// Conditions on a stream record; an entry applies only when every one holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordMatch {
    /// The value of a key attribute (from the record's `Keys`, a string) starts with a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_prefix: Vec<KeyPrefix>,
    /// A top-level attribute of the image the entry reads ([`crate::EventMapping::condition_image`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeCondition>,
}

/// A key attribute's string value starts with `prefix` (e.g. `pk` starts with `ORDER#`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyPrefix {
    /// Name of the key attribute (the table's partition or sort key).
    pub key: String,
    pub prefix: String,
}

/// A condition on one top-level attribute: equal to a string, or present / absent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeCondition {
    pub name: String,
    /// The attribute is a string (`S`) with exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// true: the attribute is present (any type, NULL included); false: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// Which top-level attributes of the image the event's `item` carries. Key attributes are
/// always kept; the others are dropped in the relay, so they never leave it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Fields {
    /// Only these attributes (and the keys).
    Include(Vec<String>),
    /// Every attribute but these (keys are kept even if listed).
    Exclude(Vec<String>),
}

impl Fields {
    /// True when attribute `name` (not a key) stays in the event's item.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            Fields::Include(names) => names.iter().any(|n| n == name),
            Fields::Exclude(names) => !names.iter().any(|n| n == name),
        }
    }
}

/// The image a record's attribute conditions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Image {
    /// `dynamodb.NewImage`.
    New,
    /// `dynamodb.OldImage`.
    Old,
}

impl Image {
    /// The stream record's field name (`NewImage`/`OldImage`), as a filter pattern names it.
    pub fn record_field(self) -> &'static str {
        match self {
            Image::New => "NewImage",
            Image::Old => "OldImage",
        }
    }
}

impl KeyPrefix {
    /// True when this condition holds whenever `other` holds (same key, `other`'s prefix
    /// starts with this one).
    fn implied_by(&self, other: &KeyPrefix) -> bool {
        self.key == other.key && other.prefix.starts_with(&self.prefix)
    }
}

impl AttributeCondition {
    /// True when this condition holds whenever `other` holds.
    fn implied_by(&self, other: &AttributeCondition) -> bool {
        if self.name != other.name {
            return false;
        }
        match (&self.equals, self.exists, &other.equals, other.exists) {
            (Some(a), _, Some(b), _) => a == b,
            (None, Some(true), Some(_), _) => true,
            (None, Some(want), None, Some(have)) => want == have,
            _ => false,
        }
    }

    /// Why the condition is malformed, if it is.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.name.trim().is_empty() {
            return Some("an attribute condition needs a name".to_owned());
        }
        match (&self.equals, self.exists) {
            (Some(_), None) | (None, Some(_)) => None,
            _ => Some(format!(
                "attribute condition on {:?} needs exactly one of equals or exists",
                self.name
            )),
        }
    }
}

impl RecordMatch {
    /// True when every record this match accepts is also accepted by `self`: each of `self`'s
    /// conditions is implied by one of `other`'s. (An empty match accepts everything.)
    pub fn covers(&self, other: &RecordMatch) -> bool {
        self.key_prefix
            .iter()
            .all(|c| other.key_prefix.iter().any(|o| c.implied_by(o)))
            && self
                .attributes
                .iter()
                .all(|c| other.attributes.iter().any(|o| c.implied_by(o)))
    }

    /// Why the conditions are malformed or out of bounds, if they are.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.key_prefix.len() > MAX_KEY_PREFIXES {
            return Some(format!(
                "at most {MAX_KEY_PREFIXES} keyPrefix conditions per entry"
            ));
        }
        if self.attributes.len() > MAX_ATTRIBUTE_CONDITIONS {
            return Some(format!(
                "at most {MAX_ATTRIBUTE_CONDITIONS} attribute conditions per entry"
            ));
        }
        for k in &self.key_prefix {
            if k.key.trim().is_empty() || k.prefix.is_empty() {
                return Some("a keyPrefix condition needs a key and a non-empty prefix".into());
            }
        }
        self.attributes.iter().find_map(AttributeCondition::problem)
    }
}

impl Fields {
    /// Why the list is unusable, if it is.
    pub(crate) fn problem(&self) -> Option<String> {
        let (what, names) = match self {
            Fields::Include(n) => ("include", n),
            Fields::Exclude(n) => ("exclude", n),
        };
        if names.is_empty() || names.len() > MAX_FIELDS {
            return Some(format!(
                "fields.{what} lists 1 to {MAX_FIELDS} attribute names"
            ));
        }
        if names.iter().any(|n| n.trim().is_empty()) {
            return Some(format!("fields.{what} has an empty attribute name"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(key: &str, prefix: &str) -> KeyPrefix {
        KeyPrefix {
            key: key.into(),
            prefix: prefix.into(),
        }
    }

    fn equals(name: &str, value: &str) -> AttributeCondition {
        AttributeCondition {
            name: name.into(),
            equals: Some(value.into()),
            exists: None,
        }
    }

    fn exists(name: &str, present: bool) -> AttributeCondition {
        AttributeCondition {
            name: name.into(),
            equals: None,
            exists: Some(present),
        }
    }

    #[test]
    fn a_wider_match_covers_a_narrower_one_and_not_the_reverse() {
        let any = RecordMatch::default();
        let orders = RecordMatch {
            key_prefix: vec![prefix("pk", "ORDER#")],
            ..RecordMatch::default()
        };
        let cancelled = RecordMatch {
            key_prefix: vec![prefix("pk", "ORDER#EU-")],
            attributes: vec![equals("status", "CANCELLED")],
        };
        assert!(any.covers(&orders));
        assert!(orders.covers(&cancelled));
        assert!(!cancelled.covers(&orders));
        assert!(!orders.covers(&any));
        let has_status = RecordMatch {
            attributes: vec![exists("status", true)],
            ..RecordMatch::default()
        };
        assert!(has_status.covers(&cancelled), "equals implies exists");
        assert!(!cancelled.covers(&has_status));
        let users = RecordMatch {
            key_prefix: vec![prefix("pk", "USER#")],
            ..RecordMatch::default()
        };
        assert!(!users.covers(&orders) && !orders.covers(&users));
    }

    #[test]
    fn an_attribute_condition_needs_exactly_one_test() {
        assert!(equals("a", "b").problem().is_none());
        assert!(exists("a", false).problem().is_none());
        let both = AttributeCondition {
            exists: Some(true),
            ..equals("a", "b")
        };
        assert!(both.problem().is_some());
        let neither = AttributeCondition {
            equals: None,
            ..equals("a", "b")
        };
        assert!(neither.problem().is_some());
    }

    #[test]
    fn fields_keep_what_include_names_and_drop_what_exclude_names() {
        let include = Fields::Include(vec!["total".into()]);
        assert!(include.keeps("total") && !include.keeps("email"));
        let exclude = Fields::Exclude(vec!["email".into()]);
        assert!(!exclude.keeps("email") && exclude.keeps("total"));
        assert!(Fields::Include(vec![]).problem().is_some());
    }

    #[test]
    fn fields_serialise_as_one_keyed_list() {
        let f = Fields::Exclude(vec!["email".into()]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"exclude":["email"]}"#
        );
    }
}
