//! One EventBridge rule per consumer, on the pipeline's bus, with the consumer's event pattern.

use std::collections::BTreeMap;

use aws_sdk_eventbridge::types::RuleState;
use serde_json::Value;

use super::bus::{eb_tags, list_tags, tag, untag};
use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt};
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
    /// Delete: the rule's targets go first.
    RemoveTargets(Vec<String>),
    Delete,
}

/// A consumer's rule on the pipeline's bus.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub bus: String,
    pub pattern: Value,
    pub tags: BTreeMap<String, String>,
    /// `outbox-operator: consumer <name> of <namespace>/<pipeline>`.
    pub description: String,
}

impl Rule {
    /// A rule that is only removed.
    pub fn named(name: String, bus: String) -> Rule {
        Rule {
            name,
            bus,
            pattern: Value::Null,
            tags: BTreeMap::new(),
            description: String::new(),
        }
    }
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
    let Some(out) = ctx
        .clients
        .eventbridge
        .describe_rule()
        .name(name)
        .event_bus_name(&ctx.names.bus)
        .send()
        .await
        .found("DescribeRule", &resource)?
    else {
        return Ok(None);
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

impl Resource for Rule {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Consumers
    }

    fn resource(&self) -> String {
        format!("eventbridge rule {}", self.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.name).await
    }

    fn diff(&self, o: &Option<Observed>, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        diff(&self.name, &self.pattern, &self.tags, o.as_ref(), owner).map(Diff::changes)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (Verb::Create, format!("pattern {}", self.pattern)),
            Change::Update(w) => (Verb::Update, w.join(", ")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::RemoveTargets(ids) => (Verb::Delete, format!("targets: {}", ids.join(", "))),
            Change::Delete => (Verb::Delete, String::new()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let eb = &w.clients().eventbridge;
        let resource = self.resource();
        let arn = state.as_ref().map(|o| o.arn.clone()).unwrap_or_default();
        match change {
            Change::Create | Change::Update(_) => {
                let mut req = eb
                    .put_rule()
                    .name(&self.name)
                    .event_bus_name(&self.bus)
                    .event_pattern(self.pattern.to_string())
                    .state(RuleState::Enabled)
                    .description(&self.description);
                if matches!(change, Change::Create) {
                    req = req.set_tags(Some(eb_tags(&self.tags)?));
                }
                let out = req.send().await.aws("PutRule", &resource)?;
                if let Some(new_arn) = out.rule_arn() {
                    let tags = state
                        .take()
                        .map(|o| o.tags)
                        .unwrap_or_else(|| self.tags.clone());
                    *state = Some(Observed {
                        arn: new_arn.to_owned(),
                        pattern: Some(self.pattern.clone()),
                        enabled: true,
                        tags,
                    });
                }
            }
            Change::Untag(keys) => untag(eb, &arn, keys, &resource).await?,
            Change::Tag(t) => tag(eb, &arn, t, &resource).await?,
            Change::RemoveTargets(ids) => {
                eb.remove_targets()
                    .rule(&self.name)
                    .event_bus_name(&self.bus)
                    .set_ids(Some(ids.clone()))
                    .send()
                    .await
                    .aws("RemoveTargets", &resource)?;
            }
            Change::Delete => {
                eb.delete_rule()
                    .name(&self.name)
                    .event_bus_name(&self.bus)
                    .send()
                    .await
                    .found("DeleteRule", &resource)?;
            }
        }
        Ok(Applied::Done)
    }

    /// Deletes the rule (its targets first) when it is ours.
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        if o.as_ref()
            .is_none_or(|o| ctx.owner.leaves_alone(&o.tags, &self.resource()))
        {
            return Ok(Diff::none());
        }
        let targets: Vec<String> = super::target::observe(ctx, &self.name)
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        let mut changes = Vec::new();
        if !targets.is_empty() {
            changes.push(Change::RemoveTargets(targets));
        }
        changes.push(Change::Delete);
        Ok(Diff::changes(changes))
    }
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
        let Some(page) = ctx
            .clients
            .eventbridge
            .list_rules()
            .set_name_prefix(prefix.clone())
            .event_bus_name(&ctx.names.bus)
            .set_next_token(token.clone())
            .send()
            .await
            .found("ListRules", &resource)?
        else {
            return Ok(names);
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
