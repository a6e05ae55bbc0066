//! CloudWatch metric alarms on the pipeline's data plane (`spec.monitoring`): owned and tagged
//! like every resource, named `outbox-<hash>-<namespace>-<name>-<what>`, put back when edited,
//! deleted when they leave the desired set (monitoring switched off, a consumer removed) and
//! with the pipeline. Every alarm notifies `spec.monitoring.alarmActions`.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic, Tag};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer, delete_if_ours};
use super::errors::AwsResultExt;
use super::observe::{Listing, by_name};
use super::tags::{self, Owner};
use super::{Component, EngineError, Verb};

/// An alarm's settings: what PutMetricAlarm writes and DescribeAlarms reads back. The engine's
/// alarms are `GreaterThanThreshold` and treat missing data as not breaching (an idle pipeline is
/// not in alarm).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub description: String,
    pub namespace: String,
    pub metric: String,
    /// Sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// `Maximum` or `Sum`.
    pub statistic: String,
    pub period: i32,
    pub evaluation_periods: i32,
    pub datapoints_to_alarm: i32,
    pub threshold: f64,
    /// Sorted.
    pub actions: Vec<String>,
    pub comparison: String,
    pub treat_missing_data: String,
}

/// What every alarm of the engine compares with.
pub const COMPARISON: &str = "GreaterThanThreshold";
/// How every alarm of the engine treats missing data.
pub const NOT_BREACHING: &str = "notBreaching";

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    pub settings: Settings,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Create, or overwrite the settings (PutMetricAlarm), saying what differs.
    Put(String),
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
    Delete,
}

/// One alarm of the pipeline.
#[derive(Clone, Debug)]
pub struct Alarm {
    pub name: String,
    /// None: only its removal is wanted.
    pub settings: Option<Settings>,
    pub tags: BTreeMap<String, String>,
    pub component: Component,
}

impl Alarm {
    /// An alarm to remove (not in the desired set any more).
    pub fn named(name: impl Into<String>, component: Component) -> Alarm {
        Alarm {
            name: name.into(),
            settings: None,
            tags: BTreeMap::new(),
            component,
        }
    }
}

/// Pure: what differs between two settings, for the action's detail (empty: in sync).
pub fn differences(want: &Settings, have: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($field:ident) => {
            if want.$field != have.$field {
                out.push(format!(
                    "{}: {:?} -> {:?}",
                    stringify!($field),
                    have.$field,
                    want.$field
                ));
            }
        };
    }
    cmp!(description);
    cmp!(namespace);
    cmp!(metric);
    cmp!(dimensions);
    cmp!(statistic);
    cmp!(period);
    cmp!(evaluation_periods);
    cmp!(datapoints_to_alarm);
    cmp!(actions);
    cmp!(comparison);
    cmp!(treat_missing_data);
    if (want.threshold - have.threshold).abs() > f64::EPSILON {
        out.push(format!(
            "threshold: {} -> {}",
            have.threshold, want.threshold
        ));
    }
    out
}

/// Pure: the alarm wanted vs what exists; one that is not ours is a conflict.
pub fn diff(a: &Alarm, o: Option<&Observed>, owner: &Owner) -> Result<Vec<Change>, EngineError> {
    let Some(want) = &a.settings else {
        return Ok(Vec::new());
    };
    let Some(o) = o else {
        return Ok(vec![Change::Put(String::new())]);
    };
    owner.require_ours(&o.tags, &format!("cloudwatch alarm {}", a.name))?;
    let mut out = Vec::new();
    let differs = differences(want, &o.settings);
    if !differs.is_empty() {
        out.push(Change::Put(differs.join("; ")));
    }
    out.extend(tags::changes(&a.tags, &o.tags, Change::Untag, Change::Tag));
    Ok(out)
}

fn settings_of(m: &MetricAlarm) -> Settings {
    let mut dimensions: Vec<(String, String)> = m
        .dimensions()
        .iter()
        .map(|d| {
            (
                d.name().unwrap_or_default().to_owned(),
                d.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    dimensions.sort();
    let mut actions = m.alarm_actions().to_vec();
    actions.sort();
    Settings {
        description: m.alarm_description().unwrap_or_default().to_owned(),
        namespace: m.namespace().unwrap_or_default().to_owned(),
        metric: m.metric_name().unwrap_or_default().to_owned(),
        dimensions,
        statistic: m
            .statistic()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        period: m.period().unwrap_or_default(),
        evaluation_periods: m.evaluation_periods().unwrap_or_default(),
        datapoints_to_alarm: m
            .datapoints_to_alarm()
            .or(m.evaluation_periods())
            .unwrap_or_default(),
        threshold: m.threshold().unwrap_or_default(),
        actions,
        comparison: m
            .comparison_operator()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        treat_missing_data: m.treat_missing_data().unwrap_or_default().to_owned(),
    }
}

/// Every alarm whose name starts with `prefix` (every page), by name.
async fn read_listing(ctx: &Ctx<'_>, prefix: &str) -> Result<Listing<MetricAlarm>, EngineError> {
    let mut alarms = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = ctx
            .clients
            .cloudwatch
            .describe_alarms()
            .alarm_name_prefix(prefix)
            .set_next_token(token.take())
            .send()
            .await
            .aws("DescribeAlarms", &format!("cloudwatch alarms {prefix}*"))?;
        alarms.extend(out.metric_alarms().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(Listing::new(prefix, by_name(alarms, |m| m.alarm_name()))),
        }
    }
}

/// The pipeline's alarms whose names start with `prefix`: as this pass listed them (the alarm
/// steps list the pipeline's alarms once and take each from the listing), else read now.
pub async fn list(ctx: &Ctx<'_>, prefix: &str) -> Result<Vec<String>, EngineError> {
    if let Some(names) = ctx.seen.alarms.names(prefix) {
        return Ok(names);
    }
    let listing = read_listing(ctx, prefix).await?;
    let names = listing.names();
    ctx.seen.alarms.keep(listing);
    Ok(names)
}

/// The alarm `name` as CloudWatch has it: from the pass's listing of the pipeline's alarms (read
/// once per pass, at the first alarm observed), else read by name.
async fn find(ctx: &Ctx<'_>, name: &str) -> Result<Option<MetricAlarm>, EngineError> {
    let prefix = ctx.names.alarm_prefix();
    let listing = || read_listing(ctx, &prefix);
    if let Some(listed) = ctx.seen.alarms.take_or_list(&prefix, name, listing).await? {
        return Ok(listed);
    }
    let out = ctx
        .clients
        .cloudwatch
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .aws("DescribeAlarms", &format!("cloudwatch alarm {name}"))?;
    Ok(out
        .metric_alarms()
        .iter()
        .find(|m| m.alarm_name() == Some(name))
        .cloned())
}

async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("cloudwatch alarm {name}");
    let Some(m) = find(ctx, name).await? else {
        return Ok(None);
    };
    let arn = m.alarm_arn().unwrap_or_default().to_owned();
    let tags = ctx
        .clients
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .aws("ListTagsForResource", &resource)?
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect();
    Ok(Some(Observed {
        arn,
        settings: settings_of(&m),
        tags,
    }))
}

fn cw_tags(t: &BTreeMap<String, String>) -> Vec<Tag> {
    t.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl Alarm {
    async fn put(&self, w: Writer<'_>, s: &Settings, create: bool) -> Result<(), EngineError> {
        let dimensions = s
            .dimensions
            .iter()
            .map(|(n, v)| Dimension::builder().name(n).value(v).build())
            .collect();
        let mut req = w
            .clients()
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&self.name)
            .alarm_description(&s.description)
            .namespace(&s.namespace)
            .metric_name(&s.metric)
            .set_dimensions(Some(dimensions))
            .statistic(Statistic::from(s.statistic.as_str()))
            .period(s.period)
            .evaluation_periods(s.evaluation_periods)
            .datapoints_to_alarm(s.datapoints_to_alarm)
            .threshold(s.threshold)
            .comparison_operator(ComparisonOperator::from(s.comparison.as_str()))
            .treat_missing_data(&s.treat_missing_data)
            .actions_enabled(true)
            .set_alarm_actions(Some(s.actions.clone()));
        // Tags given to PutMetricAlarm apply on create only (AWS ignores them on update).
        if create {
            req = req.set_tags(Some(cw_tags(&self.tags)));
        }
        req.send().await.aws("PutMetricAlarm", &self.resource())?;
        Ok(())
    }
}

impl Resource for Alarm {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        self.component
    }

    fn resource(&self) -> String {
        format!("cloudwatch alarm {}", self.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.name).await
    }

    fn diff(&self, o: &Option<Observed>, owner: &Owner) -> Result<Diff<Change>, EngineError> {
        diff(self, o.as_ref(), owner).map(Diff::changes)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Put(d) if d.is_empty() => (Verb::Create, String::new()),
            Change::Put(d) => (Verb::Update, d.clone()),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::Delete => (Verb::Delete, String::new()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let cw = &w.clients().cloudwatch;
        let resource = self.resource();
        let arn = state.as_ref().map(|o| o.arn.clone()).unwrap_or_default();
        match change {
            Change::Put(_) => {
                if let Some(s) = &self.settings {
                    self.put(w, s, state.is_none()).await?;
                }
            }
            Change::Untag(keys) => {
                cw.untag_resource()
                    .resource_arn(&arn)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
            }
            Change::Tag(t) => {
                cw.tag_resource()
                    .resource_arn(&arn)
                    .set_tags(Some(cw_tags(t)))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
            }
            Change::Delete => {
                cw.delete_alarms()
                    .alarm_names(&self.name)
                    .send()
                    .await
                    .aws("DeleteAlarms", &resource)?;
            }
        }
        Ok(Applied::Done)
    }

    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        let tags = o.as_ref().map(|o| &o.tags);
        Ok(delete_if_ours(ctx, tags, &self.resource(), Change::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            description: "d".into(),
            namespace: "AWS/Lambda".into(),
            metric: "Errors".into(),
            dimensions: vec![("FunctionName".into(), "f".into())],
            statistic: "Sum".into(),
            period: 900,
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
            threshold: 0.0,
            actions: vec![],
            comparison: COMPARISON.into(),
            treat_missing_data: NOT_BREACHING.into(),
        }
    }

    fn alarm(owner: &Owner) -> Alarm {
        Alarm {
            name: "outbox-x-relay-errors".into(),
            settings: Some(settings()),
            tags: owner.desired_tags(&BTreeMap::new()),
            component: Component::Relay,
        }
    }

    #[test]
    fn a_missing_alarm_is_created_and_an_edited_one_put_back() {
        let owner = tags::test_owner();
        let a = alarm(&owner);
        assert_eq!(
            diff(&a, None, &owner).unwrap(),
            vec![Change::Put(String::new())]
        );
        let mut o = Observed {
            arn: "arn".into(),
            settings: settings(),
            tags: a.tags.clone(),
        };
        assert!(diff(&a, Some(&o), &owner).unwrap().is_empty());
        o.settings.threshold = 5.0;
        o.settings.actions = vec!["arn:aws:sns:us-east-1:1:t".into()];
        let changes = diff(&a, Some(&o), &owner).unwrap();
        let [Change::Put(detail)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert!(detail.contains("threshold: 5 -> 0"), "{detail}");
        assert!(detail.contains("actions"), "{detail}");
        // Missing data made breaching by hand: put back.
        let mut o = Observed {
            arn: "arn".into(),
            settings: settings(),
            tags: a.tags.clone(),
        };
        o.settings.treat_missing_data = "breaching".into();
        let changes = diff(&a, Some(&o), &owner).unwrap();
        assert!(
            matches!(changes.as_slice(), [Change::Put(d)] if d.contains("treat_missing_data")),
            "{changes:?}"
        );
    }

    #[test]
    fn an_alarm_of_someone_else_is_a_conflict() {
        let owner = tags::test_owner();
        let a = alarm(&owner);
        let o = Observed {
            arn: "arn".into(),
            settings: settings(),
            tags: BTreeMap::new(),
        };
        let e = diff(&a, Some(&o), &owner).unwrap_err();
        assert!(
            e.to_string()
                .contains("cloudwatch alarm outbox-x-relay-errors")
        );
    }
}
