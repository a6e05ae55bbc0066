//! The contract between the operator, the relay Lambda and event consumers.
//!
//! Two things live here and nowhere else:
//! - [`RelayConfig`]: the relay's configuration, which the operator writes into the function's
//!   environment ([`RelayConfig::to_env`]) and the relay reads at init ([`RelayConfig::from_env`]).
//! - [`EventDetail`]: the `Detail` of every event the relay puts on the bus, which consumers parse.
//!
//! Changing either is a contract change: bump [`SCHEMA_VERSION`] for an incompatible envelope.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use routing::{AttributeCondition, Fields, Image, KeyPrefix, RecordMatch};

pub mod redact;
pub mod routing;
pub mod startup;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// Environment variable names the operator sets on the Lambdas.
pub mod env {
    /// Name of the EventBridge bus the relay publishes to.
    pub const BUS_NAME: &str = "OUTBOX_BUS_NAME";
    /// JSON array of [`crate::EventMapping`]: which stream change becomes which event.
    pub const EVENTS: &str = "OUTBOX_EVENTS";
    /// Upper bound of one PutEvents request in bytes, as AWS computes entry sizes.
    pub const REQUEST_SIZE_LIMIT_BYTES: &str = "OUTBOX_REQUEST_SIZE_LIMIT_BYTES";
    /// Name of the DynamoDB table the writer puts items into.
    pub const TABLE_NAME: &str = "OUTBOX_TABLE_NAME";
    /// Name of the table's partition key attribute (the writer's id attribute).
    pub const PARTITION_KEY: &str = "OUTBOX_PARTITION_KEY";
    /// The pipeline the relay serves, `<namespace>/<name>`: the `pipeline` dimension of the
    /// relay's own metrics (optional; without it the relay publishes no metrics).
    pub const PIPELINE: &str = "OUTBOX_PIPELINE";
}

/// Version of the [`EventDetail`] envelope. Consumers should check it.
pub const SCHEMA_VERSION: &str = "1";

/// Default PutEvents request size limit (256 KiB), what most accounts and emulators accept.
pub const DEFAULT_REQUEST_SIZE_LIMIT_BYTES: usize = 262_144;
/// Largest request size limit PutEvents accepts (1 MiB, raised in January 2026).
pub const MAX_REQUEST_SIZE_LIMIT_BYTES: usize = 1_048_576;
/// PutEvents takes at most this many entries per request.
pub const MAX_ENTRIES_PER_REQUEST: usize = 10;

/// A DynamoDB stream change type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    Insert,
    Modify,
    Remove,
}

impl ChangeType {
    /// The stream record's `eventName` for this change type.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Insert => "INSERT",
            ChangeType::Modify => "MODIFY",
            ChangeType::Remove => "REMOVE",
        }
    }

    /// Parses a stream record's `eventName`.
    pub fn from_event_name(name: &str) -> Option<Self> {
        match name {
            "INSERT" => Some(ChangeType::Insert),
            "MODIFY" => Some(ChangeType::Modify),
            "REMOVE" => Some(ChangeType::Remove),
            _ => None,
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which part of a stream record becomes the event's `item`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Payload {
    NewImage,
    OldImage,
    Keys,
}

impl Payload {
    pub fn as_str(self) -> &'static str {
        match self {
            Payload::NewImage => "newImage",
            Payload::OldImage => "oldImage",
            Payload::Keys => "keys",
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mapping from a stream change type (and, optionally, conditions on the record) to the
/// event the relay publishes. The relay tries the entries in order; the first whose change type
/// and conditions match wins, and a record no entry matches is skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventMapping {
    pub change: ChangeType,
    pub source: String,
    pub detail_type: String,
    pub payload: Payload,
    /// Conditions on the record; absent: every record of the change type.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<RecordMatch>,
    /// Which attributes the event's item carries; absent: the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Fields>,
}

impl EventMapping {
    /// A mapping of every record of `change`, publishing the whole payload (today's default).
    pub fn new(change: ChangeType, source: &str, detail_type: &str, payload: Payload) -> Self {
        EventMapping {
            change,
            source: source.to_owned(),
            detail_type: detail_type.to_owned(),
            payload,
            matches: None,
            fields: None,
        }
    }

    /// The image the entry's attribute conditions read: the image it publishes, and for a
    /// `keys` payload the image the change carries (NewImage for INSERT and MODIFY, OldImage
    /// for REMOVE).
    pub fn condition_image(&self) -> Image {
        match (self.payload, self.change) {
            (Payload::NewImage, _) => Image::New,
            (Payload::OldImage, _) => Image::Old,
            (Payload::Keys, ChangeType::Remove) => Image::Old,
            (Payload::Keys, _) => Image::New,
        }
    }

    /// True when this entry takes every record `later` would take (so `later` can never match).
    pub fn shadows(&self, later: &EventMapping) -> bool {
        let any = RecordMatch::default();
        let reads_attributes = self
            .matches
            .as_ref()
            .is_some_and(|m| !m.attributes.is_empty());
        self.change == later.change
            && (!reads_attributes || self.condition_image() == later.condition_image())
            && self
                .matches
                .as_ref()
                .unwrap_or(&any)
                .covers(later.matches.as_ref().unwrap_or(&any))
    }
}

/// The relay's whole configuration, carried in its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    pub bus_name: String,
    pub events: Vec<EventMapping>,
    pub request_size_limit_bytes: usize,
    /// `<namespace>/<name>` of the pipeline, the dimension of the relay's EMF metrics.
    pub pipeline: Option<String>,
}

/// Why a Lambda's configuration (the relay's or the writer's) was rejected. Each message names
/// the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    /// The value of `var` through `lookup`; unset or blank is [`ConfigError::Missing`].
    pub fn required(
        lookup: &impl Fn(&str) -> Option<String>,
        var: &'static str,
    ) -> Result<String, ConfigError> {
        lookup(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or(ConfigError::Missing(var))
    }
}

impl RelayConfig {
    /// The environment the operator sets on the relay function.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let events = serde_json::to_string(&self.events).unwrap_or_else(|_| "[]".to_owned());
        let mut env = BTreeMap::from([
            (env::BUS_NAME.to_owned(), self.bus_name.clone()),
            (env::EVENTS.to_owned(), events),
            (
                env::REQUEST_SIZE_LIMIT_BYTES.to_owned(),
                self.request_size_limit_bytes.to_string(),
            ),
        ]);
        if let Some(pipeline) = &self.pipeline {
            env.insert(env::PIPELINE.to_owned(), pipeline.clone());
        }
        env
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bus_name = ConfigError::required(&lookup, env::BUS_NAME)?;
        let raw_events = lookup(env::EVENTS).ok_or(ConfigError::Missing(env::EVENTS))?;
        let events: Vec<EventMapping> =
            serde_json::from_str(&raw_events).map_err(|e| ConfigError::Invalid {
                var: env::EVENTS,
                reason: format!("not a JSON array of event mappings: {e}"),
            })?;
        let request_size_limit_bytes = match lookup(env::REQUEST_SIZE_LIMIT_BYTES) {
            None => DEFAULT_REQUEST_SIZE_LIMIT_BYTES,
            Some(v) => v.trim().parse().map_err(|e| ConfigError::Invalid {
                var: env::REQUEST_SIZE_LIMIT_BYTES,
                reason: format!("{v:?} is not a byte count: {e}"),
            })?,
        };
        let config = RelayConfig {
            bus_name,
            events,
            request_size_limit_bytes,
            pipeline: lookup(env::PIPELINE).filter(|p| !p.trim().is_empty()),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules the relay relies on: one to [`routing::MAX_EVENT_MAPPINGS`] mappings,
    /// none that an earlier one shadows (so each can match some record), well-formed conditions
    /// and field lists, non-empty source and detail type, a size limit PutEvents can honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.events.is_empty() {
            return Err(ConfigError::Invalid {
                var: env::EVENTS,
                reason: "at least one event mapping is required".into(),
            });
        }
        if self.events.len() > routing::MAX_EVENT_MAPPINGS {
            return Err(ConfigError::Invalid {
                var: env::EVENTS,
                reason: format!(
                    "at most {} event mappings are allowed",
                    routing::MAX_EVENT_MAPPINGS
                ),
            });
        }
        for (i, m) in self.events.iter().enumerate() {
            if let Some(j) = self.events[..i].iter().position(|o| o.shadows(m)) {
                return Err(ConfigError::Invalid {
                    var: env::EVENTS,
                    reason: format!(
                        "change type {} is mapped more than once and entry {i} can never match: entry {j} before it takes every record it would",
                        m.change
                    ),
                });
            }
            if let Some(problem) = Self::entry_problem(m) {
                return Err(ConfigError::Invalid {
                    var: env::EVENTS,
                    reason: format!("entry {i} ({}): {problem}", m.change),
                });
            }
            if m.source.trim().is_empty() || m.detail_type.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    var: env::EVENTS,
                    reason: format!(
                        "mapping for {} needs a non-empty source and detailType",
                        m.change
                    ),
                });
            }
            if m.change == ChangeType::Remove && m.payload == Payload::NewImage {
                return Err(ConfigError::Invalid {
                    var: env::EVENTS,
                    reason: "REMOVE records have no new image; use oldImage or keys".into(),
                });
            }
            if m.change == ChangeType::Insert && m.payload == Payload::OldImage {
                return Err(ConfigError::Invalid {
                    var: env::EVENTS,
                    reason: "INSERT records have no old image; use newImage or keys".into(),
                });
            }
        }
        if self.request_size_limit_bytes < 1024
            || self.request_size_limit_bytes > MAX_REQUEST_SIZE_LIMIT_BYTES
        {
            return Err(ConfigError::Invalid {
                var: env::REQUEST_SIZE_LIMIT_BYTES,
                reason: format!(
                    "{} is outside 1024..={MAX_REQUEST_SIZE_LIMIT_BYTES}",
                    self.request_size_limit_bytes
                ),
            });
        }
        Ok(())
    }

    /// Why an entry's conditions or field list cannot be used, if they cannot.
    fn entry_problem(m: &EventMapping) -> Option<String> {
        if let Some(problem) = m.matches.as_ref().and_then(RecordMatch::problem) {
            return Some(problem);
        }
        match &m.fields {
            Some(_) if m.payload == Payload::Keys => Some(
                "fields needs payload newImage or oldImage (a keys payload holds only keys)".into(),
            ),
            Some(f) => f.problem(),
            None => None,
        }
    }

    /// The first mapping for a change type, if one is configured (whatever its conditions).
    pub fn mapping(&self, change: ChangeType) -> Option<&EventMapping> {
        self.events.iter().find(|m| m.change == change)
    }

    /// The mappings a record of `change` may match, in the order the relay tries them.
    pub fn candidates(&self, change: ChangeType) -> impl Iterator<Item = &EventMapping> {
        self.events.iter().filter(move |m| m.change == change)
    }
}

/// The `Detail` of every event the relay publishes (schema version [`SCHEMA_VERSION`]).
///
/// EventBridge keeps no order across events and delivers at least once: consumers order the
/// changes of one item by `sequenceNumber` and deduplicate on `eventId`, which is derived from
/// the stream record and is the same on every redelivery.
///
/// `Item` and `Keys` default to [`serde_json::Value`]; a consumer that needs numbers with more
/// digits than an `f64` holds parses them into its own types (or `Box<serde_json::value::RawValue>`,
/// which the relay itself uses to write every digit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail<Item = serde_json::Value, Keys = serde_json::Value> {
    /// Deterministic id of the stream record (stable across redeliveries).
    pub event_id: String,
    /// Envelope version, [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// INSERT, MODIFY or REMOVE.
    pub change: ChangeType,
    /// The stream record's sequence number (order changes of one item by it, numerically).
    pub sequence_number: String,
    /// Name of the source table.
    pub table: String,
    /// The item's key attributes as plain JSON.
    pub keys: Keys,
    /// Which image `item` holds.
    pub payload: Payload,
    /// The chosen image as plain JSON (numbers keep every digit, sets are arrays, binary is base64).
    pub item: Item,
    /// When the change was written to the stream (RFC 3339, UTC).
    pub approximate_creation_time: String,
    /// True when a REMOVE was a TTL expiry by DynamoDB rather than a delete by a caller.
    #[serde(default)]
    pub ttl_expired: bool,
}

/// The example application's user: what the writer stores and what `item` holds in the
/// `UserCreated`/`UserUpdated` (and, with an old-image payload, `UserDeleted`) events.
///
/// The id is not a field: it is the table's partition key (named by [`env::PARTITION_KEY`]) and
/// arrives in [`EventDetail::keys`]. Unknown attributes are ignored, so the key attribute in
/// `item` does not break parsing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub username: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// When the writer created the user (RFC 3339, UTC).
    pub created_at: String,
}

#[cfg(test)]
mod tests;
