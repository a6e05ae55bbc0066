//! Reading OutboxPipeline manifests: YAML (multi-document) → checked `OutboxPipeline`s.
//!
//! The checks are the ones the API server would make, so the CLI rejects what `kubectl apply`
//! would reject, with the document and field named: the CRD's openAPIV3Schema (types, enums,
//! ranges, patterns, required fields), unknown fields, and the CEL rules
//! (`x-kubernetes-validations`, evaluated client-side by kube's CEL support).
//!
//! Input is read as YAML 1.2 core schema (only `true`/`false` are booleans: `type: N` stays "N"),
//! at most [`MAX_INPUT_BYTES`] per input; [`reject_duplicates`] refuses a pipeline given twice.

use std::path::Path;
use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd::OutboxPipeline;

/// One problem with a manifest, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.relay.batchSize` or `spec.consumers[1].name`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: larger than {} MiB; a manifest this size is not a set of pipelines (wrong file?)",
        MAX_INPUT_BYTES / (1024 * 1024)
    )]
    TooLarge { path: String },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: String },
    #[error(
        "{key} is defined twice: {first} and {second}; each pipeline may appear once in the inputs"
    )]
    Duplicate {
        /// `namespace/name`.
        key: String,
        first: String,
        second: String,
    },
    #[error("{origin}: invalid YAML: {message}")]
    Yaml { origin: String, message: String },
    #[error("{origin}: {}", format_errors(.errors))]
    Invalid {
        /// `FILE document N (namespace/name)`.
        origin: String,
        errors: Vec<FieldError>,
    },
}

fn format_errors(errors: &[FieldError]) -> String {
    if errors.len() == 1 {
        return errors[0].to_string();
    }
    let mut out = format!("{} problems:", errors.len());
    for e in errors {
        out.push_str("\n  - ");
        out.push_str(&e.to_string());
    }
    out
}

/// Largest input (one file, or standard input) read as manifests: 4 MiB. Pipelines are a few
/// KiB each; the cap keeps a wrong path (`-f /dev/zero`, a log file) from exhausting memory.
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

/// A checked pipeline and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `FILE document N (namespace/name)`.
    pub origin: String,
    pub pipeline: OutboxPipeline,
}

/// Reads manifests from a path, or standard input when the path is `-`, at most
/// [`MAX_INPUT_BYTES`] of it.
pub fn read_path(path: &str) -> Result<Vec<Document>, ManifestError> {
    let name = if path == "-" { "<stdin>" } else { path };
    let text = if path == "-" {
        read_capped(name, std::io::stdin().lock())?
    } else {
        let file = std::fs::File::open(Path::new(path)).map_err(|source| ManifestError::Read {
            path: name.into(),
            source,
        })?;
        read_capped(name, file)?
    };
    parse_documents(name, &text)
}

/// Reads at most [`MAX_INPUT_BYTES`] (one byte more tells an oversize input apart).
fn read_capped(name: &str, input: impl std::io::Read) -> Result<String, ManifestError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    input
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            path: name.into(),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ManifestError::TooLarge { path: name.into() });
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 { path: name.into() })
}

/// Refuses two documents naming the same pipeline (namespace/name): applying both would
/// reconcile one pipeline twice, the second undoing the first.
pub fn reject_duplicates(docs: &[Document]) -> Result<(), ManifestError> {
    let mut seen: std::collections::HashMap<(&str, &str), &str> = Default::default();
    for doc in docs {
        let key = (
            doc.pipeline.namespace_or_default(),
            doc.pipeline.name_or_empty(),
        );
        if let Some(first) = seen.insert(key, &doc.origin) {
            return Err(ManifestError::Duplicate {
                key: format!("{}/{}", key.0, key.1),
                first: first.to_owned(),
                second: doc.origin.clone(),
            });
        }
    }
    Ok(())
}

/// YAML 1.2 core schema, as the Kubernetes API's JSON is: only `true`/`false` are booleans, so
/// `type: N` or a tag value `yes` stay the strings they look like (YAML 1.1 made them booleans).
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}

/// Parses every YAML document in `text` and checks each one. Empty documents are skipped.
/// The first document with problems fails the whole call, so nothing is half-applied.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, yaml_options())
        .map_err(|e| ManifestError::Yaml {
            origin: file.to_owned(),
            message: e.to_string(),
        })?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let origin = format!("{file} document {}", i + 1);
        if is_account(&value) {
            continue; // read by `accounts`
        }
        let pipeline = check_value(&origin, value)?;
        let origin = format!(
            "{origin} ({}/{})",
            pipeline.namespace_or_default(),
            pipeline.name_or_empty()
        );
        docs.push(Document { origin, pipeline });
    }
    Ok(docs)
}

fn is_account(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("OutboxAccount")
        && value.get("apiVersion").and_then(Value::as_str) == Some("outbox.dev/v1alpha1")
}

/// The OutboxAccounts among the documents of `text` (the CLI uses them for `spec.accountRef`
/// without a cluster), each checked against its type (unknown fields, types).
pub fn accounts(file: &str, text: &str) -> Result<Vec<crate::crd::OutboxAccount>, ManifestError> {
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, yaml_options())
        .map_err(|e| ManifestError::Yaml {
            origin: file.to_owned(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        if !is_account(&value) {
            continue;
        }
        let account =
            serde_path_to_error::deserialize(value).map_err(|e| ManifestError::Invalid {
                origin: format!("{file} document {}", i + 1),
                errors: vec![FieldError {
                    field: e.path().to_string(),
                    message: e.inner().to_string(),
                }],
            })?;
        out.push(account);
    }
    Ok(out)
}

/// Checks one manifest value: kind, metadata, schema, unknown fields, CEL rules.
pub fn check_value(origin: &str, mut value: Value) -> Result<OutboxPipeline, ManifestError> {
    let invalid = |errors: Vec<FieldError>| ManifestError::Invalid {
        origin: origin.to_owned(),
        errors,
    };
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "OutboxPipeline" || api_version != "outbox.dev/v1alpha1" {
        return Err(invalid(vec![FieldError {
            field: "kind".into(),
            message: format!(
                "expected apiVersion outbox.dev/v1alpha1 and kind OutboxPipeline, found {:?} {:?}",
                api_version, kind
            ),
        }]));
    }
    // The CLI only reads desired state; a status in the file is ignored, as the API server does.
    if let Some(obj) = value.as_object_mut() {
        obj.remove("status");
    }
    let mut errors = metadata_errors(&value);
    errors.extend(schema_errors(&value));
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let pipeline: OutboxPipeline = serde_path_to_error::deserialize(value).map_err(|e| {
        invalid(vec![FieldError {
            field: e.path().to_string(),
            message: e.inner().to_string(),
        }])
    })?;
    validate(&pipeline).map_err(invalid)?;
    Ok(pipeline)
}

/// Schema and CEL checks on a typed pipeline (defaults applied, as the API server stores it).
pub fn validate(pipeline: &OutboxPipeline) -> Result<(), Vec<FieldError>> {
    let value = serde_json::to_value(pipeline).map_err(|e| {
        vec![FieldError {
            field: String::new(),
            message: format!("cannot serialize: {e}"),
        }]
    })?;
    let mut errors = metadata_errors(&value);
    errors.extend(schema_errors(&value));
    if errors.is_empty()
        && let Err(cel) = pipeline.validate_cel()
    {
        errors.extend(cel_errors(cel));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// CEL transition rules (immutability) for an update from `old` to `new`.
pub fn validate_update(new: &OutboxPipeline, old: &OutboxPipeline) -> Result<(), Vec<FieldError>> {
    validate(new)?;
    new.validate_cel_update(old).map_err(cel_errors)
}

fn cel_errors(errors: kube::core::cel::ValidationErrors) -> Vec<FieldError> {
    errors
        .into_vec()
        .into_iter()
        .map(|e| FieldError {
            field: e.field_path,
            message: e.message,
        })
        .collect()
}

fn metadata_errors(value: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => errors.push(FieldError {
            field: "metadata.name".into(),
            message: "is required".into(),
        }),
        Some(n) if !is_dns_label(n) => errors.push(FieldError {
            field: "metadata.name".into(),
            message: format!(
                "{n:?} must be a DNS label: lowercase letters, digits and '-', at most 63 characters"
            ),
        }),
        Some(_) => {}
    }
    if let Some(ns) = value.pointer("/metadata/namespace").and_then(Value::as_str)
        && !is_dns_label(ns)
    {
        errors.push(FieldError {
            field: "metadata.namespace".into(),
            message: format!("{ns:?} must be a DNS label"),
        });
    }
    errors
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The CRD's openAPIV3Schema as JSON.
pub fn openapi_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = OutboxPipeline::crd();
        crd.spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    })
}

fn validator() -> Option<&'static jsonschema::Validator> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            // OpenAPI's `nullable` has no JSON Schema meaning; optional fields are simply absent.
            let mut schema = openapi_schema().clone();
            // The CRD schema leaves the object's own envelope to the API server.
            if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
                props.insert("kind".into(), serde_json::json!({"type": "string"}));
                props.insert("metadata".into(), serde_json::json!({"type": "object"}));
            }
            strip_unknown_keywords(&mut schema);
            jsonschema::draft4::new(&schema).ok()
        })
        .as_ref()
}

/// Makes the openAPIV3Schema a plain JSON Schema: drops `x-kubernetes-*` and `nullable`, and
/// rejects unknown fields (as `kubectl apply`'s strict field validation does) except where
/// `x-kubernetes-preserve-unknown-fields` allows anything.
fn strip_unknown_keywords(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let preserve =
                map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if !preserve
                && map.contains_key("properties")
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.retain(|k, _| !k.starts_with("x-kubernetes-") && k != "nullable");
            for (k, child) in map.iter_mut() {
                // `default` and `example` hold data, not schemas.
                if k != "default" && k != "example" && k != "enum" {
                    strip_unknown_keywords(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_unknown_keywords),
        _ => {}
    }
}

fn schema_errors(value: &Value) -> Vec<FieldError> {
    let Some(validator) = validator() else {
        return vec![FieldError {
            field: String::new(),
            message: "internal error: the CRD schema does not compile".into(),
        }];
    };
    let mut errors: Vec<FieldError> = validator
        .iter_errors(value)
        .map(|e| FieldError {
            field: pointer_to_path(e.instance_path().as_str()),
            message: with_yaml11_hint(e.to_string(), e.instance()),
        })
        .collect();
    errors.sort_by(|a, b| a.field.cmp(&b.field));
    errors.dedup();
    errors
}

/// A YAML 1.1 boolean spelling where a boolean is expected is a string under YAML 1.2: say so.
fn with_yaml11_hint(message: String, instance: &Value) -> String {
    const YAML11_BOOLEANS: [&str; 6] = ["y", "yes", "on", "n", "no", "off"];
    match instance.as_str() {
        Some(s)
            if message.contains("\"boolean\"")
                && YAML11_BOOLEANS.contains(&s.to_ascii_lowercase().as_str()) =>
        {
            format!("{message} (manifests are YAML 1.2: only true and false are booleans)")
        }
        _ => message,
    }
}

/// `/spec/consumers/0/name` → `spec.consumers[0].name`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_becomes_dotted_path_with_indices() {
        assert_eq!(
            pointer_to_path("/spec/consumers/1/name"),
            "spec.consumers[1].name"
        );
        assert_eq!(pointer_to_path(""), "");
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("user-created"));
        assert!(!is_dns_label("User"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
