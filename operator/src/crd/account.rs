//! The `OutboxAccount` API (cluster-scoped): an AWS account the operator reaches by assuming a
//! role with STS, and which namespaces' pipelines may use it (`spec.accountRef`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An AWS account pipelines may use: the operator assumes `roleArn` (with the external id from
/// a Secret, when given) and builds the pipeline's AWS clients from those credentials.
#[allow(clippy::duplicated_attributes)] // kube's printcolumn(...) repeats type_ by design
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outbox.dev",
    version = "v1alpha1",
    kind = "OutboxAccount",
    plural = "outboxaccounts",
    singular = "outboxaccount",
    shortname = "oba",
    category = "outbox",
    cel,
    status = "OutboxAccountStatus",
    doc = "An OutboxAccount: an AWS account (an IAM role the operator assumes with STS) that pipelines in the namespaces it allows may use through spec.accountRef.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Account", type_ = "string", json_path = ".status.accountId"),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.roleArn",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboxAccountSpec {
    /// The IAM role the operator assumes in the target account (e.g.
    /// arn:aws:iam::210987654321:role/outbox-operator/team-a). Its trust policy must name the
    /// operator's identity (and the external id, when set): see docs/install.md.
    #[schemars(
        length(min = 20, max = 2048),
        regex(pattern = r"^arn:aws[a-zA-Z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
    )]
    pub role_arn: String,

    /// The external id the role's trust policy requires, read from a Secret in the operator's
    /// namespace (never inline). Absent: AssumeRole is called without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_secret_ref: Option<SecretKeyRef>,

    /// Region of the pipelines that use this account and set no spec.region. Absent: the
    /// operator's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$")
    )]
    pub region: Option<String>,

    /// Lifetime of the assumed-role session in seconds (900..43200, default 3600; at most the
    /// role's maximum session duration). The SDK refreshes the credentials before they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 900, max = 43200))]
    pub session_duration_seconds: Option<i32>,

    /// The namespaces whose pipelines may use this account. Absent: none (an administrator opts
    /// namespaces in); `{}` selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
}

/// A key of a Secret in the operator's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret (in the operator's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data whose value is the external id.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A label selector on namespaces (the Kubernetes LabelSelector shape).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Labels a namespace must carry, all of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements a namespace's labels must meet, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement on a label.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: SelectorOperator,
    /// The values for In and NotIn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label requirement's operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl NamespaceSelector {
    /// True when a namespace with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl OutboxAccount {
    /// True when pipelines in a namespace with these labels may use this account (no selector:
    /// none may).
    pub fn allows(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        self.spec
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.matches(namespace_labels))
    }

    /// The account's name ("" when the manifest has none).
    pub fn name_or_empty(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// True when the status says the role was assumed for the current generation.
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                && s.observed_generation == self.metadata.generation
        })
    }

    /// The Ready condition's message (the STS error when not Ready), if any.
    pub fn ready_message(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.message.as_str())
        })
    }
}

/// Observed state of the account.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboxAccountStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: True with reason Reconciled once the role was assumed; False with AccessDenied,
    /// InvalidSpec or AwsError and the STS error otherwise.
    #[serde(default)]
    #[schemars(
        with = "Vec<AccountConditionSchema>",
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The account id of the assumed identity (sts:GetCallerIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The ARN of the assumed identity (sts:GetCallerIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assumed_arn: Option<String>,
}

/// A condition in the standard Kubernetes shape (schema only).
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
struct AccountConditionSchema {
    /// Ready.
    #[serde(rename = "type")]
    type_: String,
    /// "True", "False" or "Unknown".
    status: String,
    /// Reconciled, InvalidSpec, AccessDenied or AwsError.
    reason: String,
    /// Human-readable detail (the STS error when not Ready).
    #[serde(default)]
    message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    last_transition_time: String,
    /// The spec generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

/// `spec.accountRef` of a pipeline: the OutboxAccount whose role the engine assumes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountRef {
    /// Name of the (cluster-scoped) OutboxAccount.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn account(selector: Option<NamespaceSelector>) -> OutboxAccount {
        OutboxAccount::new(
            "team-a",
            OutboxAccountSpec {
                role_arn: "arn:aws:iam::210987654321:role/outbox-operator/team-a".into(),
                external_id_secret_ref: None,
                region: None,
                session_duration_seconds: None,
                namespace_selector: selector,
            },
        )
    }

    #[test]
    fn without_a_selector_no_namespace_may_use_the_account() {
        assert!(!account(None).allows(&labels(&[("team", "a")])));
        assert!(account(Some(NamespaceSelector::default())).allows(&labels(&[])));
    }

    #[test]
    fn selector_matches_labels_and_expressions() {
        let s = NamespaceSelector {
            match_labels: labels(&[("team", "a")]),
            match_expressions: vec![LabelRequirement {
                key: "env".into(),
                operator: SelectorOperator::In,
                values: vec!["prod".into(), "staging".into()],
            }],
        };
        let a = account(Some(s));
        assert!(a.allows(&labels(&[("team", "a"), ("env", "prod")])));
        assert!(!a.allows(&labels(&[("team", "a"), ("env", "dev")])));
        assert!(!a.allows(&labels(&[("team", "b"), ("env", "prod")])));
        let not = NamespaceSelector {
            match_expressions: vec![LabelRequirement {
                key: "frozen".into(),
                operator: SelectorOperator::DoesNotExist,
                values: vec![],
            }],
            ..Default::default()
        };
        assert!(not.matches(&labels(&[("team", "a")])));
        assert!(!not.matches(&labels(&[("frozen", "yes")])));
    }
}
