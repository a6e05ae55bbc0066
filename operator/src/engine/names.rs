//! Deterministic AWS names for a pipeline's resources.
//!
//! Names the spec gives (table, bus) win. Everything else is
//! `outbox-<hash>-<namespace>-<name>[-<role>]`: the hash (SHA-256 of cluster id, namespace and
//! name) makes the name unique across clusters and namespaces; the readable part is cut to fit
//! the AWS length limit (table 255, bus 256, function 64, role 64, rule 64, S3 bucket 63
//! lowercase). The hash is never cut, so a cut readable part cannot cause a collision.

use sha2::{Digest, Sha256};

use crate::crd::OutboxPipeline;

pub const TABLE_MAX: usize = 255;
pub const BUS_MAX: usize = 256;
pub const FUNCTION_MAX: usize = 64;
pub const ROLE_MAX: usize = 64;
pub const RULE_MAX: usize = 64;
pub const BUCKET_MAX: usize = 63;
pub const ALARM_MAX: usize = 255;
/// Inline policy name on every execution role.
pub const POLICY_NAME: &str = "outbox";
/// IAM path of every execution role (one iam:PassRole statement covers them).
pub const ROLE_PATH: &str = "/outbox/";

/// The names of one pipeline's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Short hash of cluster id, namespace and name.
    pub hash: String,
    /// Readable `<namespace>-<name>`, restricted to `[a-z0-9-]`.
    pub base: String,
    pub table: String,
    pub bus: String,
    pub relay_function: String,
    pub writer_function: String,
    cluster_id: String,
    namespace: String,
    name: String,
}

fn hex_hash(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = hex::encode(h.finalize());
    digest[..len].to_owned()
}

/// Lowercase `[a-z0-9-]`, no leading/trailing/double '-'.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches('-').to_owned()
}

/// `outbox-<hash>[-<base>][-<suffix>]` within `max` characters; only `base` is cut.
fn compose(hash: &str, base: &str, suffix: &str, max: usize) -> String {
    let fixed = "outbox-".len()
        + hash.len()
        + if suffix.is_empty() {
            0
        } else {
            suffix.len() + 1
        };
    let room = max.saturating_sub(fixed + 1);
    let cut: String = base.chars().take(room).collect();
    let cut = cut.trim_end_matches('-');
    let mut name = format!("outbox-{hash}");
    if !cut.is_empty() {
        name.push('-');
        name.push_str(cut);
    }
    if !suffix.is_empty() {
        name.push('-');
        name.push_str(suffix);
    }
    name
}

impl Names {
    pub fn new(cluster_id: &str, pipeline: &OutboxPipeline) -> Names {
        let namespace = pipeline.namespace_or_default();
        let name = pipeline.name_or_empty();
        let hash = hex_hash(&[cluster_id, namespace, name], 8);
        let base = sanitize(&format!("{namespace}-{name}"));
        let table = pipeline
            .spec
            .table
            .name
            .clone()
            .unwrap_or_else(|| compose(&hash, &base, "", TABLE_MAX));
        // A bus the pipeline does not own (spec.bus.existingArn) goes by its own name.
        let bus = pipeline
            .spec
            .bus
            .existing()
            .map(|(_, name)| name.to_owned())
            .or_else(|| pipeline.spec.bus.name.clone())
            .unwrap_or_else(|| compose(&hash, &base, "", BUS_MAX));
        Names {
            relay_function: compose(&hash, &base, "relay", FUNCTION_MAX),
            writer_function: compose(&hash, &base, "writer", FUNCTION_MAX),
            hash,
            base,
            table,
            bus,
            cluster_id: cluster_id.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `<namespace>/<name>`: the `pipeline` dimension of the relay's own metrics.
    pub fn pipeline(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The bundled consumer function of a consumer.
    pub fn consumer_function(&self, consumer: &str) -> String {
        compose(
            &self.hash,
            &self.base,
            &format!("c-{consumer}"),
            FUNCTION_MAX,
        )
    }

    /// The execution role of a function: the function's name (both limits are 64).
    pub fn role(&self, function: &str) -> String {
        function.chars().take(ROLE_MAX).collect()
    }

    /// The rule of a consumer.
    pub fn rule(&self, consumer: &str) -> String {
        format!("{}{consumer}", self.rule_prefix())
    }

    /// Every rule of this pipeline starts with this (used to find rules of removed consumers).
    pub fn rule_prefix(&self) -> String {
        // `outbox-<hash>-` (16) + consumer (≤ 32) stays within 64.
        format!("outbox-{}-", self.hash)
    }

    /// The consumer name a rule of this pipeline belongs to.
    pub fn consumer_of_rule<'a>(&self, rule: &'a str) -> Option<&'a str> {
        rule.strip_prefix(&self.rule_prefix())
            .filter(|c| !c.is_empty())
    }

    /// The StatementId of the invoke permission the engine owns on a consumer's function.
    pub fn statement_id(&self, consumer: &str) -> String {
        format!("outbox-{}-{consumer}", self.hash)
    }

    /// The failure bucket: globally unique, so the hash also covers account and region.
    pub fn bucket(&self, account: &str, region: &str) -> String {
        let hash = hex_hash(
            &[
                &self.cluster_id,
                &self.namespace,
                &self.name,
                account,
                region,
            ],
            12,
        );
        compose(&hash, &self.base, "failures", BUCKET_MAX)
    }

    /// A CloudWatch alarm of the pipeline, e.g. `relay-errors`.
    pub fn alarm(&self, what: &str) -> String {
        compose(&self.hash, &self.base, what, ALARM_MAX)
    }

    /// Every alarm of this pipeline starts with this (the hash is the pipeline's).
    pub fn alarm_prefix(&self) -> String {
        format!("outbox-{}-", self.hash)
    }

    /// The CloudWatch Logs group Lambda writes a function's logs to.
    pub fn log_group(function: &str) -> String {
        format!("/aws/lambda/{function}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::OutboxPipeline;

    fn pipeline(ns: Option<&str>, name: &str, table: Option<&str>) -> OutboxPipeline {
        let mut doc = serde_json::json!({
            "apiVersion": "outbox.dev/v1alpha1",
            "kind": "OutboxPipeline",
            "metadata": {"name": name},
            "spec": {
                "table": {"partitionKey": {"name": "id", "type": "S"}},
                "relay": {"events": [{"change": "INSERT", "source": "a", "detailType": "B", "payload": "newImage"}]}
            }
        });
        if let Some(ns) = ns {
            doc["metadata"]["namespace"] = ns.into();
        }
        if let Some(t) = table {
            doc["spec"]["table"]["name"] = t.into();
        }
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn names_are_deterministic_and_readable() {
        let a = Names::new("c1", &pipeline(Some("team"), "users", None));
        let b = Names::new("c1", &pipeline(Some("team"), "users", None));
        assert_eq!(a, b);
        assert!(a.table.starts_with("outbox-") && a.table.ends_with("-team-users"));
        assert!(a.relay_function.ends_with("-team-users-relay"));
    }

    #[test]
    fn names_differ_across_clusters_and_namespaces() {
        let a = Names::new("c1", &pipeline(Some("a"), "users", None));
        let b = Names::new("c2", &pipeline(Some("a"), "users", None));
        let c = Names::new("c1", &pipeline(Some("b"), "users", None));
        // "a-b" + "c" vs "a" + "b-c" read the same but hash differently.
        let d = Names::new("c1", &pipeline(Some("a-b"), "c", None));
        let e = Names::new("c1", &pipeline(Some("a"), "b-c", None));
        for (x, y) in [(&a, &b), (&a, &c), (&d, &e)] {
            assert_ne!(x.table, y.table);
            assert_ne!(x.relay_function, y.relay_function);
            assert_ne!(x.rule("c"), y.rule("c"));
            assert_ne!(x.bucket("1", "r"), y.bucket("1", "r"));
        }
    }

    #[test]
    fn missing_namespace_is_default() {
        let a = Names::new("c1", &pipeline(None, "users", None));
        let b = Names::new("c1", &pipeline(Some("default"), "users", None));
        assert_eq!(a, b);
    }

    #[test]
    fn spec_names_win() {
        let n = Names::new("c1", &pipeline(None, "users", Some("my-table")));
        assert_eq!(n.table, "my-table");
    }

    #[test]
    fn long_names_fit_aws_limits() {
        let ns = "n".repeat(63);
        let name = "x".repeat(253);
        let n = Names::new(&"k".repeat(100), &pipeline(Some(&ns), &name, None));
        assert!(n.table.len() <= TABLE_MAX);
        assert!(n.bus.len() <= BUS_MAX);
        assert!(n.relay_function.len() <= FUNCTION_MAX);
        assert!(n.writer_function.len() <= FUNCTION_MAX);
        let consumer = "c".repeat(32);
        let f = n.consumer_function(&consumer);
        assert!(f.len() <= FUNCTION_MAX && f.ends_with(&consumer));
        assert!(n.role(&f).len() <= ROLE_MAX);
        assert!(n.rule(&consumer).len() <= RULE_MAX);
        let bucket = n.bucket("123456789012", "eu-west-1");
        assert!(bucket.len() <= BUCKET_MAX);
        assert_eq!(bucket, bucket.to_lowercase());
        assert!(!bucket.ends_with('-') && !bucket.contains("--"));
    }

    #[test]
    fn rules_map_back_to_consumers() {
        let n = Names::new("c1", &pipeline(None, "users", None));
        assert_eq!(n.consumer_of_rule(&n.rule("audit")), Some("audit"));
        assert_eq!(n.consumer_of_rule("outbox-00000000-audit"), None);
    }
}
