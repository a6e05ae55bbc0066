//! The target of a consumer's rule: the bundled consumer function, a user's Lambda function or
//! an SQS queue, with the consumer's retry policy and dead-letter queue. A rule the engine owns
//! has exactly this one target (id `outbox-consumer`); any other target on it is drift.

use aws_sdk_eventbridge::types::{DeadLetterConfig, RetryPolicy, Target};

use super::context::Ctx;
use super::errors::{AwsResultExt, aws_error, is_not_found, local};
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
        let page = match ctx
            .clients
            .eventbridge
            .list_targets_by_rule()
            .rule(rule)
            .event_bus_name(&ctx.names.bus)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => return Ok(out),
            Err(e) => return Err(aws_error(&e, "ListTargetsByRule", &resource)),
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

/// Observe → diff → apply for a rule's target.
pub async fn reconcile(ctx: &mut Ctx<'_>, rule: &str, d: &Desired) -> Result<(), EngineError> {
    let resource = format!("target {TARGET_ID} of eventbridge rule {rule}");
    let observed = observe(ctx, rule).await?;
    let eb = ctx.clients.eventbridge.clone();
    for change in diff(d, &observed) {
        match change {
            Change::Put(why) => {
                if ctx.apply {
                    let target = Target::builder()
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
                        .map_err(|e| local("building target", e))?;
                    let out = eb
                        .put_targets()
                        .rule(rule)
                        .event_bus_name(&ctx.names.bus)
                        .targets(target)
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
                let verb = if why == "missing" {
                    Verb::Create
                } else {
                    Verb::Update
                };
                ctx.record(
                    Component::Consumers,
                    verb,
                    &resource,
                    format!("-> {} ({why})", d.arn),
                );
            }
            Change::Remove(ids) => {
                if ctx.apply {
                    eb.remove_targets()
                        .rule(rule)
                        .event_bus_name(&ctx.names.bus)
                        .set_ids(Some(ids.clone()))
                        .send()
                        .await
                        .aws("RemoveTargets", &resource)?;
                }
                ctx.record(
                    Component::Consumers,
                    Verb::Delete,
                    format!("targets of eventbridge rule {rule}"),
                    format!("not managed by the pipeline: {}", ids.join(", ")),
                );
            }
        }
    }
    Ok(())
}

/// Removes every target of a rule (before the rule is deleted).
pub async fn remove_all(ctx: &mut Ctx<'_>, rule: &str) -> Result<(), EngineError> {
    let observed = observe(ctx, rule).await?;
    if observed.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = observed.into_iter().map(|t| t.id).collect();
    let resource = format!("targets of eventbridge rule {rule}");
    ctx.clients
        .eventbridge
        .remove_targets()
        .rule(rule)
        .event_bus_name(&ctx.names.bus)
        .set_ids(Some(ids.clone()))
        .send()
        .await
        .aws("RemoveTargets", &resource)?;
    ctx.record(Component::Consumers, Verb::Delete, resource, ids.join(", "));
    Ok(())
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
