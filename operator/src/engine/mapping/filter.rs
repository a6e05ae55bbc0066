//! The event source mapping's filter criteria, derived from the relay's event entries (pure).
//!
//! Lambda drops a stream record that matches none of the patterns before it invokes (or bills)
//! the relay. Each entry becomes one pattern in DynamoDB stream filter syntax: `eventName` its
//! change type, `dynamodb.Keys.<key>.S` a `prefix` per key prefix condition, and
//! `dynamodb.<NewImage|OldImage>.<name>.S` the value of each `equals` condition (on the image
//! [`EventMapping::condition_image`] names, the one the relay reads). Patterns are then merged
//! where that loses nothing (same fields, values differing in one field: the values are ORed;
//! a pattern implied by a wider one is dropped).
//!
//! The filter may be wider than the entries, never narrower: the relay decides every record
//! that passes. It is widened
//! - always for `exists` conditions: a filter's `exists` tests a leaf value, and an attribute's
//!   value is an object keyed by its unknown type (`{"S": ..}`, `{"N": ..}`, ...);
//! - when the patterns do not fit AWS's limits ([`MAX_FILTERS`] patterns, [`MAX_PATTERN_CHARS`]
//!   each): first attribute conditions are left out, then key prefixes too, which always fits
//!   (one pattern listing the mapped change types).

use std::collections::{BTreeMap, BTreeSet};

use outbox_contract::EventMapping;
use serde_json::{Map, Value, json};

/// Filters per event source mapping (the default AWS quota).
pub const MAX_FILTERS: usize = 5;
/// Characters of one filter pattern AWS accepts.
pub const MAX_PATTERN_CHARS: usize = 4096;

/// The derived filter criteria: the patterns (sorted by their JSON text) and, when they let
/// through records no entry takes, why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Criteria {
    pub patterns: Vec<Value>,
    pub widened: Vec<String>,
}

/// How much of the entries' conditions the patterns keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Everything,
    KeyPrefixes,
    ChangeTypes,
}

/// One matcher of a filter field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Matcher {
    Equals(String),
    Prefix(String),
}

/// A pattern: every field (a path into the record) must match one of its matchers.
type Pattern = BTreeMap<Vec<String>, BTreeSet<Matcher>>;

/// The filter criteria for the entries.
pub fn derive(events: &[EventMapping]) -> Criteria {
    let mut widened = exists_conditions(events);
    for level in [Level::Everything, Level::KeyPrefixes, Level::ChangeTypes] {
        let patterns = merge(events.iter().map(|e| pattern(e, level)).collect());
        let json: Vec<Value> = patterns.iter().map(to_json).collect();
        let fits = json.len() <= MAX_FILTERS
            && json
                .iter()
                .all(|p| p.to_string().len() <= MAX_PATTERN_CHARS);
        if fits || level == Level::ChangeTypes {
            if level > Level::Everything {
                widened.push(format!(
                    "the entries' exact patterns exceed AWS's limit of {MAX_FILTERS} filters of {MAX_PATTERN_CHARS} characters: {} left to the relay",
                    if level == Level::KeyPrefixes {
                        "attribute conditions are"
                    } else {
                        "all match conditions are"
                    }
                ));
            }
            let mut patterns = json;
            patterns.sort_by_key(Value::to_string);
            return Criteria { patterns, widened };
        }
    }
    Criteria::default()
}

/// Notes for the `exists` conditions, which no filter pattern expresses.
fn exists_conditions(events: &[EventMapping]) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for (j, a) in e.matches.iter().flat_map(|m| &m.attributes).enumerate() {
            if a.equals.is_none() {
                notes.push(format!(
                    "spec.relay.events[{i}].match.attributes[{j}] (exists on {:?}) cannot be expressed in a filter: the relay decides",
                    a.name
                ));
            }
        }
    }
    notes
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// The pattern of one entry at a level.
fn pattern(e: &EventMapping, level: Level) -> Pattern {
    let mut p = Pattern::new();
    p.entry(path(&["eventName"]))
        .or_default()
        .insert(Matcher::Equals(e.change.as_str().to_owned()));
    let Some(m) = e.matches.as_ref().filter(|_| level < Level::ChangeTypes) else {
        return p;
    };
    for k in &m.key_prefix {
        p.entry(path(&["dynamodb", "Keys", &k.key, "S"]))
            .or_default()
            .insert(Matcher::Prefix(k.prefix.clone()));
    }
    if level == Level::Everything {
        let image = e.condition_image().record_field();
        for a in &m.attributes {
            if let Some(value) = &a.equals {
                p.entry(path(&["dynamodb", image, &a.name, "S"]))
                    .or_default()
                    .insert(Matcher::Equals(value.clone()));
            }
        }
    }
    p
}

/// Merges patterns without changing what they match, until no two can be merged.
fn merge(mut patterns: Vec<Pattern>) -> Vec<Pattern> {
    'again: loop {
        for i in 0..patterns.len() {
            for j in 0..patterns.len() {
                if i == j {
                    continue;
                }
                if implies(&patterns[j], &patterns[i]) {
                    // Every record j matches, i matches too: j adds nothing.
                    patterns.remove(j);
                    continue 'again;
                }
                if let Some(merged) = union(&patterns[i], &patterns[j]) {
                    patterns[i] = merged;
                    patterns.remove(j);
                    continue 'again;
                }
            }
        }
        return patterns;
    }
}

/// True when every record `narrow` matches also matches `wide`.
fn implies(narrow: &Pattern, wide: &Pattern) -> bool {
    wide.iter().all(|(field, allowed)| {
        narrow
            .get(field)
            .is_some_and(|values| values.is_subset(allowed))
    })
}

/// The one pattern matching exactly what `a` or `b` matches, when the two have the same fields
/// and differ in at most one field's values.
fn union(a: &Pattern, b: &Pattern) -> Option<Pattern> {
    if !a.keys().eq(b.keys()) {
        return None;
    }
    let differing: Vec<&Vec<String>> = a.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    if differing.len() > 1 {
        return None;
    }
    let mut merged = a.clone();
    for field in differing {
        if let (Some(into), Some(from)) = (merged.get_mut(field), b.get(field)) {
            into.extend(from.iter().cloned());
        }
    }
    Some(merged)
}

/// The pattern as the JSON object AWS takes.
fn to_json(p: &Pattern) -> Value {
    let mut root = Map::new();
    for (field, matchers) in p {
        let values: Vec<Value> = matchers
            .iter()
            .map(|m| match m {
                Matcher::Equals(v) => json!(v),
                Matcher::Prefix(v) => json!({ "prefix": v }),
            })
            .collect();
        insert(&mut root, field, Value::Array(values));
    }
    Value::Object(root)
}

fn insert(node: &mut Map<String, Value>, field: &[String], leaf: Value) {
    let Some((first, rest)) = field.split_first() else {
        return;
    };
    if rest.is_empty() {
        node.insert(first.clone(), leaf);
        return;
    }
    let child = node
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(child) = child {
        insert(child, rest, leaf);
    }
}

#[cfg(test)]
mod tests;
