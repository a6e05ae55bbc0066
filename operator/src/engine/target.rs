//! The target of a consumer's rule: the bundled consumer function, a user's Lambda function or
//! an SQS queue, with the consumer's retry policy and dead-letter queue. A rule the engine owns
//! has exactly this one target (id `outbox-consumer`); any other target on it is drift.

use aws_sdk_eventbridge::types::{DeadLetterConfig, RetryPolicy, Target};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt, internal};
use super::tags::Owner;
use super::{Component, EngineError, Verb};

/// The id of the one target on every rule the engine owns.
pub const TARGET_ID: &str = "outbox-consumer";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub arn: String,
    pub retry_attempts: i32,
    pub max_age_seconds: i32,
    pub dead_letter_arn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub arn: String,
    pub retry: Option<(i32, i32)>,
    pub dead_letter_arn: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(&'static str),
    Remove(Vec<String>),
}

/// The one target of a consumer's rule.
#[derive(Clone, Debug)]
pub struct RuleTarget {
    pub rule: String,
    pub bus: String,
    pub desired: Desired,
}

/// Pure: the wanted target vs the rule's targets.
pub fn diff(d: &Desired, observed: &[Observed]) -> Vec<Change> {
    let mut changes = Vec::new();
    match observed.iter().find(|t| t.id == TARGET_ID) {
        None => changes.push(Change::Put("missing")),
        Some(t) => {
            if t.arn != d.arn {
                changes.push(Change::Put("arn"));
            } else if t.retry != Some((d.retry_attempts, d.max_age_seconds)) {
                changes.push(Change::Put("retryPolicy"));
            } else if t.dead_letter_arn != d.dead_letter_arn {
                changes.push(Change::Put("deadLetterConfig"));
            }
        }
    }
    let others: Vec<String> = observed
        .iter()
        .filter(|t| t.id != TARGET_ID)
        .map(|t| t.id.clone())
        .collect();
    if !others.is_empty() {
        changes.push(Change::Remove(others));
    }
    changes
}

pub async fn observe(ctx: &Ctx<'_>, rule: &str) -> Result<Vec<Observed>, EngineError> {
    let resource = format!("targets of eventbridge rule {rule}");
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let Some(page) = ctx
            .clients
            .eventbridge
            .list_targets_by_rule()
            .rule(rule)
            .event_bus_name(&ctx.names.bus)
            .set_next_token(token.clone())
            .send()
            .await
            .found("ListTargetsByRule", &resource)?
        else {
            return Ok(out);
        };
        out.extend(page.targets().iter().map(|t| {
            Observed {
                id: t.id().to_owned(),
                arn: t.arn().to_owned(),
                retry: t.retry_policy().map(|r| {
                    (
                        r.maximum_retry_attempts().unwrap_or(185),
                        r.maximum_event_age_in_seconds().unwrap_or(86_400),
                    )
                }),
                dead_letter_arn: t
                    .dead_letter_config()
                    .and_then(|d| d.arn())
                    .map(str::to_owned),
            }
        }));
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

impl RuleTarget {
    fn target(&self) -> Result<Target, EngineError> {
        let d = &self.desired;
        Target::builder()
            .id(TARGET_ID)
            .arn(&d.arn)
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(d.retry_attempts)
                    .maximum_event_age_in_seconds(d.max_age_seconds)
                    .build(),
            )
            .set_dead_letter_config(
                d.dead_letter_arn
                    .as_ref()
                    .map(|a| DeadLetterConfig::builder().arn(a).build()),
            )
            .build()
            .map_err(|e| internal("building target", e))
    }
}

impl Resource for RuleTarget {
    type Observed = Vec<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Consumers
    }

    fn resource(&self) -> String {
        format!("target {TARGET_ID} of eventbridge rule {}", self.rule)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Vec<Observed>, EngineError> {
        observe(ctx, &self.rule).await
    }

    fn diff(&self, o: &Vec<Observed>, _owner: &Owner) -> Result<Diff<Change>, EngineError> {
        Ok(Diff::changes(diff(&self.desired, o)))
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Put(why) => {
                let verb = if *why == "missing" {
                    Verb::Create
                } else {
                    Verb::Update
                };
                (verb, format!("-> {} ({why})", self.desired.arn))
            }
            Change::Remove(ids) => (
                Verb::Delete,
                format!(
                    "other targets, not managed by the pipeline: {}",
                    ids.join(", ")
                ),
            ),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        _state: &mut Vec<Observed>,
    ) -> Result<Applied, EngineError> {
        let eb = &w.clients().eventbridge;
        let resource = self.resource();
        match change {
            Change::Put(_) => {
                let out = eb
                    .put_targets()
                    .rule(&self.rule)
                    .event_bus_name(&self.bus)
                    .targets(self.target()?)
                    .send()
                    .await
                    .aws("PutTargets", &resource)?;
                if let Some(f) = out.failed_entries().first() {
                    return Err(super::errors::from_code(
                        f.error_code().unwrap_or("FailedEntry").to_owned(),
                        f.error_message().unwrap_or_default().to_owned(),
                        None,
                        "PutTargets",
                        &resource,
                    ));
                }
            }
            Change::Remove(ids) => {
                eb.remove_targets()
                    .rule(&self.rule)
                    .event_bus_name(&self.bus)
                    .set_ids(Some(ids.clone()))
                    .send()
                    .await
                    .aws("RemoveTargets", &resource)?;
            }
        }
        Ok(Applied::Done)
    }

    /// A rule's targets go with the rule (see the rule's removal).
    async fn removal(
        &self,
        _ctx: &Ctx<'_>,
        _o: &Vec<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        Ok(Diff::none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Desired {
        Desired {
            arn: "arn:f".into(),
            retry_attempts: 20,
            max_age_seconds: 3600,
            dead_letter_arn: None,
        }
    }

    #[test]
    fn target_diff() {
        let d = want();
        assert_eq!(diff(&d, &[]), vec![Change::Put("missing")]);
        let mut o = Observed {
            id: TARGET_ID.into(),
            arn: "arn:f".into(),
            retry: Some((20, 3600)),
            dead_letter_arn: None,
        };
        assert!(diff(&d, std::slice::from_ref(&o)).is_empty());
        o.retry = Some((185, 86400));
        assert_eq!(
            diff(&d, std::slice::from_ref(&o)),
            vec![Change::Put("retryPolicy")]
        );
        let stray = Observed {
            id: "x".into(),
            ..o.clone()
        };
        o.retry = Some((20, 3600));
        assert_eq!(
            diff(&d, &[o, stray]),
            vec![Change::Remove(vec!["x".into()])]
        );
    }
}
