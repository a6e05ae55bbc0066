//! One EventBridge rule per consumer, on the pipeline's bus, with the consumer's event pattern.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::RuleState;
use serde_json::Value;

use super::bus::{eb_tags, list_tags, untag};
use super::context::Ctx;
use super::errors::{AwsResultExt, aws_error, is_not_found};
use super::tags;
use super::{Component, EngineError, Verb};

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    pub pattern: Option<Value>,
    pub enabled: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Update(Vec<&'static str>),
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
}

/// Pure: the wanted pattern and tags vs the rule.
pub fn diff(
    name: &str,
    pattern: &Value,
    wanted_tags: &BTreeMap<String, String>,
    o: Option<&Observed>,
    owner: &tags::Owner,
) -> Result<Vec<Change>, EngineError> {
    let Some(o) = o else {
        return Ok(vec![Change::Create]);
    };
    owner.require_ours(&o.tags, &format!("eventbridge rule {name}"))?;
    let mut what = Vec::new();
    if o.pattern.as_ref() != Some(pattern) {
        what.push("eventPattern");
    }
    if !o.enabled {
        what.push("state");
    }
    let mut changes = Vec::new();
    if !what.is_empty() {
        changes.push(Change::Update(what));
    }
    changes.extend(tags::changes(
        wanted_tags,
        &o.tags,
        Change::Untag,
        Change::Tag,
    ));
    Ok(changes)
}

pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("eventbridge rule {name}");
    let out = match ctx
        .clients
        .eventbridge
        .describe_rule()
        .name(name)
        .event_bus_name(&ctx.names.bus)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(aws_error(&e, "DescribeRule", &resource)),
    };
    let arn = out.arn().unwrap_or_default().to_owned();
    let tags = list_tags(ctx, &arn, &resource).await?;
    Ok(Some(Observed {
        pattern: out
            .event_pattern()
            .and_then(|p| serde_json::from_str(p).ok()),
        enabled: out.state() == Some(&RuleState::Enabled),
        arn,
        tags,
    }))
}

/// Observe → diff → apply for a consumer's rule; returns its ARN (None only in plan mode).
pub async fn reconcile(
    ctx: &mut Ctx<'_>,
    consumer: &str,
    pattern: &Value,
) -> Result<Option<String>, EngineError> {
    let name = ctx.names.rule(consumer);
    let resource = format!("eventbridge rule {name}");
    let observed = observe(ctx, &name).await?;
    let changes = diff(&name, pattern, &ctx.tags, observed.as_ref(), &ctx.owner)?;
    let mut arn = observed.map(|o| o.arn);
    let eb = ctx.clients.eventbridge.clone();
    for change in changes {
        let (verb, detail) = match &change {
            Change::Create => (Verb::Create, format!("pattern {pattern}")),
            Change::Update(w) => (Verb::Update, w.join(", ")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
        };
        if ctx.apply {
            match &change {
                Change::Create | Change::Update(_) => {
                    let mut req = eb
                        .put_rule()
                        .name(&name)
                        .event_bus_name(&ctx.names.bus)
                        .event_pattern(pattern.to_string())
                        .state(RuleState::Enabled)
                        .description(format!(
                            "outbox-operator: consumer {consumer} of {}",
                            ctx.owner.pipeline
                        ));
                    if matches!(change, Change::Create) {
                        req = req.set_tags(Some(eb_tags(&ctx.tags)?));
                    }
                    let out = req.send().await.aws("PutRule", &resource)?;
                    arn = out.rule_arn().map(str::to_owned).or(arn);
                }
                Change::Untag(keys) => {
                    untag(&eb, arn.as_deref().unwrap_or_default(), keys, &resource).await?;
                }
                Change::Tag(t) => {
                    eb.tag_resource()
                        .resource_arn(arn.clone().unwrap_or_default())
                        .set_tags(Some(eb_tags(t)?))
                        .send()
                        .await
                        .aws("TagResource", &resource)?;
                }
            }
        }
        ctx.record(Component::Consumers, verb, &resource, detail);
    }
    Ok(arn)
}

/// Names of this pipeline's rules on its bus (to find consumers removed from the spec).
pub async fn list(ctx: &Ctx<'_>) -> Result<Vec<String>, EngineError> {
    list_on_bus(ctx, Some(ctx.names.rule_prefix())).await
}

/// Names of the rules on the pipeline's bus, all of them or those starting with `prefix`.
pub async fn list_on_bus(
    ctx: &Ctx<'_>,
    prefix: Option<String>,
) -> Result<Vec<String>, EngineError> {
    let resource = format!("rules of eventbridge bus {}", ctx.names.bus);
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match ctx
            .clients
            .eventbridge
            .list_rules()
            .set_name_prefix(prefix.clone())
            .event_bus_name(&ctx.names.bus)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => return Ok(names),
            Err(e) => return Err(aws_error(&e, "ListRules", &resource)),
        };
        names.extend(
            page.rules()
                .iter()
                .filter_map(|r| r.name().map(str::to_owned)),
        );
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(names)
}

/// Deletes a rule (targets first) when it is ours.
pub async fn delete(ctx: &mut Ctx<'_>, name: &str) -> Result<(), EngineError> {
    let resource = format!("eventbridge rule {name}");
    let Some(o) = observe(ctx, name).await? else {
        return Ok(());
    };
    if ctx.owner.leaves_alone(&o.tags, &resource) {
        return Ok(());
    }
    super::target::remove_all(ctx, name).await?;
    match ctx
        .clients
        .eventbridge
        .delete_rule()
        .name(name)
        .event_bus_name(&ctx.names.bus)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws_error(&e, "DeleteRule", &resource)),
    }
    ctx.record(Component::Consumers, Verb::Delete, &resource, "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tags::Owner;
    use serde_json::json;

    #[test]
    fn rule_diff() {
        let owner = Owner {
            cluster_id: "c".into(),
            pipeline: "default/p".into(),
        };
        let t = owner.desired_tags(&BTreeMap::new());
        let p = json!({"source": ["a"]});
        assert_eq!(
            diff("r", &p, &t, None, &owner).unwrap(),
            vec![Change::Create]
        );
        let mut o = Observed {
            arn: "arn".into(),
            pattern: Some(p.clone()),
            enabled: true,
            tags: t.clone(),
        };
        assert!(diff("r", &p, &t, Some(&o), &owner).unwrap().is_empty());
        o.enabled = false;
        o.pattern = Some(json!({"source": ["b"]}));
        assert_eq!(
            diff("r", &p, &t, Some(&o), &owner).unwrap(),
            vec![Change::Update(vec!["eventPattern", "state"])]
        );
        o.tags.clear();
        assert!(diff("r", &p, &t, Some(&o), &owner).is_err());
    }
}
