//! The event source mapping: the table's stream → the relay.
//!
//! Settings come from the spec; FunctionResponseTypes is always [ReportBatchItemFailures];
//! FilterCriteria is derived from the relay's event entries ([`filter`]: `{"eventName": [mapped
//! change types]}` for entries without match conditions) so records no entry takes never invoke
//! (or bill) the relay where a filter can tell; DestinationConfig.OnFailure is the spec's destination or the
//! failure bucket. A mapping is updated in place; it is recreated only when the stream ARN
//! changed (a re-enabled stream is a new stream). Existing mappings are found by function and
//! stream before one is created, so a retried pass never makes a duplicate.

use aws_sdk_lambda::types::{
    DestinationConfig, EventSourceMappingConfiguration, EventSourcePosition, Filter,
    FilterCriteria, FunctionResponseType, OnFailure,
};
use serde_json::Value;

use crate::crd::{EventMappingSpec, RelaySpec, StartingPosition};

use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer};
use super::errors::{AwsResultExt, FoundExt};
use super::tags::Owner;
use super::{Component, EngineError, Verb};

pub mod filter;

/// The mapping's settings (what can be updated in place).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: i32,
    pub batching_window: i32,
    pub retries: i32,
    pub record_age: i32,
    pub bisect: bool,
    pub parallelization: i32,
    pub report_batch_item_failures: bool,
    /// The filter patterns, sorted by their JSON text (AWS keeps no order we rely on).
    pub filters: Vec<Value>,
    pub on_failure: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub stream_arn: Option<String>,
    pub starting_position: StartingPosition,
    pub settings: Settings,
    /// Why the filter lets through records no entry takes (empty: it is exact).
    pub filter_widened: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub uuid: String,
    pub stream_arn: String,
    pub state: String,
    /// e.g. "OK", "PROBLEM: Function call failed" (the data-plane health reads it from here).
    pub last_processing_result: Option<String>,
    pub settings: Settings,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A mapping on an old stream or a duplicate.
    Delete {
        uuid: String,
        why: String,
    },
    Create,
    Update {
        uuid: String,
        what: Vec<&'static str>,
    },
}

/// Pure: the mapping the relay spec asks for.
pub fn desired(r: &RelaySpec, stream_arn: Option<String>, on_failure: String) -> Desired {
    let events: Vec<_> = r.events.iter().map(EventMappingSpec::to_contract).collect();
    let criteria = filter::derive(&events);
    Desired {
        stream_arn,
        starting_position: r.starting_position,
        settings: Settings {
            batch_size: r.batch_size,
            batching_window: r.maximum_batching_window_seconds,
            retries: r.maximum_retry_attempts,
            record_age: r.maximum_record_age_seconds,
            bisect: r.bisect_batch_on_function_error,
            parallelization: r.parallelization_factor,
            report_batch_item_failures: true,
            filters: criteria.patterns,
            on_failure: Some(on_failure),
        },
        filter_widened: criteria.widened,
    }
}

/// The filter patterns as `plan` shows them: the JSON texts, and why they are wider than the
/// entries if they are.
pub fn describe_filters(d: &Desired) -> String {
    let patterns: Vec<String> = d.settings.filters.iter().map(Value::to_string).collect();
    let mut out = format!("filter criteria [{}]", patterns.join(", "));
    if !d.filter_widened.is_empty() {
        out.push_str(&format!(" (widened: {})", d.filter_widened.join("; ")));
    }
    out
}

/// The settings every create and update of the mapping sends, written once so that a setting
/// the diff compares is never left out of the request that repairs it (the two SDK builders
/// share no trait).
macro_rules! with_settings {
    ($request:expr, $s:expr, $filter:expr, $destination:expr) => {
        $request
            .enabled(true)
            .batch_size($s.batch_size)
            .maximum_batching_window_in_seconds($s.batching_window)
            .maximum_retry_attempts($s.retries)
            .maximum_record_age_in_seconds($s.record_age)
            .bisect_batch_on_function_error($s.bisect)
            .parallelization_factor($s.parallelization)
            .function_response_types(FunctionResponseType::ReportBatchItemFailures)
            .filter_criteria($filter.clone())
            .destination_config($destination.clone())
    };
}

fn differences(want: &Settings, have: &Settings) -> Vec<&'static str> {
    [
        ("batchSize", want.batch_size != have.batch_size),
        (
            "maximumBatchingWindowSeconds",
            want.batching_window != have.batching_window,
        ),
        ("maximumRetryAttempts", want.retries != have.retries),
        (
            "maximumRecordAgeSeconds",
            want.record_age != have.record_age,
        ),
        ("bisectBatchOnFunctionError", want.bisect != have.bisect),
        (
            "parallelizationFactor",
            want.parallelization != have.parallelization,
        ),
        (
            "functionResponseTypes",
            want.report_batch_item_failures != have.report_batch_item_failures,
        ),
        ("filterCriteria", want.filters != have.filters),
        ("onFailureDestination", want.on_failure != have.on_failure),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

/// Pure: wanted vs every mapping of the relay function. A mapping in a transitional state is
/// left alone (the step waits); mappings on an old stream and duplicates are removed meanwhile.
pub fn diff(d: &Desired, observed: &[Observed]) -> Diff<Change> {
    let mut changes = Vec::new();
    let mut wait = None;
    let current: Vec<&Observed> = observed
        .iter()
        .filter(|m| Some(&m.stream_arn) == d.stream_arn.as_ref())
        .collect();
    for m in observed
        .iter()
        .filter(|m| Some(&m.stream_arn) != d.stream_arn.as_ref())
    {
        if m.state != "Deleting" {
            changes.push(Change::Delete {
                uuid: m.uuid.clone(),
                why: format!(
                    "reads stream {} which is no longer the table's",
                    m.stream_arn
                ),
            });
        }
    }
    let live: Vec<&&Observed> = current.iter().filter(|m| m.state != "Deleting").collect();
    match live.split_first() {
        None => changes.push(Change::Create),
        Some((keep, extra)) => {
            for m in extra {
                changes.push(Change::Delete {
                    uuid: m.uuid.clone(),
                    why: "duplicate mapping of the same stream".to_owned(),
                });
            }
            match keep.state.as_str() {
                "Creating" | "Enabling" | "Updating" | "Disabling" => {
                    wait = Some(format!(
                        "event source mapping {} is {}",
                        keep.uuid, keep.state
                    ));
                }
                state => {
                    let mut what = differences(&d.settings, &keep.settings);
                    if state != "Enabled" {
                        what.insert(0, "enabled");
                    }
                    if !what.is_empty() {
                        changes.push(Change::Update {
                            uuid: keep.uuid.clone(),
                            what,
                        });
                    }
                }
            }
        }
    }
    Diff {
        settling: wait,
        ..Diff::changes(changes)
    }
}

fn parse(m: &EventSourceMappingConfiguration) -> Observed {
    let mut filters: Vec<Value> = m
        .filter_criteria()
        .map(|f| f.filters())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.pattern())
        // A pattern that is not JSON is kept as its text: it differs from every wanted one.
        .map(|p| serde_json::from_str(p).unwrap_or_else(|_| Value::String(p.to_owned())))
        .collect();
    filters.sort_by_key(Value::to_string);
    Observed {
        uuid: m.uuid().unwrap_or_default().to_owned(),
        stream_arn: m.event_source_arn().unwrap_or_default().to_owned(),
        state: m.state().unwrap_or_default().to_owned(),
        last_processing_result: m.last_processing_result().map(str::to_owned),
        settings: Settings {
            batch_size: m.batch_size().unwrap_or(100),
            batching_window: m.maximum_batching_window_in_seconds().unwrap_or(0),
            retries: m.maximum_retry_attempts().unwrap_or(-1),
            record_age: m.maximum_record_age_in_seconds().unwrap_or(-1),
            bisect: m.bisect_batch_on_function_error().unwrap_or(false),
            parallelization: m.parallelization_factor().unwrap_or(1),
            report_batch_item_failures: m
                .function_response_types()
                .contains(&FunctionResponseType::ReportBatchItemFailures),
            filters,
            on_failure: m
                .destination_config()
                .and_then(|d| d.on_failure())
                .and_then(|o| o.destination())
                .map(str::to_owned),
        },
    }
}

pub async fn observe(ctx: &Ctx<'_>, function: &str) -> Result<Vec<Observed>, EngineError> {
    let resource = format!("event source mappings of {function}");
    let mut pages = ctx
        .clients
        .lambda
        .list_event_source_mappings()
        .function_name(function)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let Some(page) = page.found("ListEventSourceMappings", &resource)? else {
            break;
        };
        out.extend(page.event_source_mappings().iter().map(parse));
    }
    Ok(out)
}

/// The stream → relay mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The relay function's name.
    pub function: String,
    pub desired: Desired,
}

impl Mapping {
    /// The mapping that reads the desired stream, when there is one.
    pub fn current<'o>(&self, state: &'o [Observed]) -> Option<&'o Observed> {
        state.iter().find(|m| {
            Some(&m.stream_arn) == self.desired.stream_arn.as_ref() && m.state != "Deleting"
        })
    }

    fn filter(&self) -> FilterCriteria {
        FilterCriteria::builder()
            .set_filters(Some(
                self.desired
                    .settings
                    .filters
                    .iter()
                    .map(|f| Filter::builder().pattern(f.to_string()).build())
                    .collect(),
            ))
            .build()
    }

    fn destination(&self) -> DestinationConfig {
        DestinationConfig::builder()
            .set_on_failure(
                self.desired
                    .settings
                    .on_failure
                    .as_ref()
                    .map(|a| OnFailure::builder().destination(a).build()),
            )
            .build()
    }

    async fn create(
        &self,
        lambda: &aws_sdk_lambda::Client,
        state: &mut Vec<Observed>,
    ) -> Result<Applied, EngineError> {
        let (s, d) = (&self.desired.settings, &self.desired);
        let stream = d.stream_arn.clone().unwrap_or_default();
        let resource = self.resource_of(&Change::Create);
        let request = lambda
            .create_event_source_mapping()
            .function_name(&self.function)
            .event_source_arn(&stream)
            .starting_position(match d.starting_position {
                StartingPosition::TrimHorizon => EventSourcePosition::TrimHorizon,
                StartingPosition::Latest => EventSourcePosition::Latest,
            });
        let (filter, destination) = (self.filter(), self.destination());
        let out = with_settings!(request, s, filter, destination)
            .send()
            .await
            .aws("CreateEventSourceMapping", &resource)?;
        let now = out.state().unwrap_or("Enabled").to_owned();
        state.push(Observed {
            uuid: out.uuid().unwrap_or_default().to_owned(),
            stream_arn: stream,
            state: now.clone(),
            last_processing_result: out.last_processing_result().map(str::to_owned),
            settings: s.clone(),
        });
        Ok(settled(&resource, &now))
    }

    async fn update(
        &self,
        lambda: &aws_sdk_lambda::Client,
        uuid: &str,
    ) -> Result<Applied, EngineError> {
        let s = &self.desired.settings;
        let resource = format!("event source mapping {uuid}");
        let request = lambda
            .update_event_source_mapping()
            .uuid(uuid)
            .function_name(&self.function);
        let (filter, destination) = (self.filter(), self.destination());
        let out = with_settings!(request, s, filter, destination)
            .send()
            .await
            .aws("UpdateEventSourceMapping", &resource)?;
        Ok(settled(&resource, out.state().unwrap_or("Enabled")))
    }
}

fn settled(resource: &str, state: &str) -> Applied {
    if state == "Enabled" {
        Applied::Done
    } else {
        Applied::Settling(format!("{resource} is {state}"))
    }
}

impl Resource for Mapping {
    type Observed = Vec<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        Component::Relay
    }

    fn resource(&self) -> String {
        format!("event source mappings of {}", self.function)
    }

    fn resource_of(&self, change: &Change) -> String {
        match change {
            Change::Create => format!(
                "event source mapping {} -> {}",
                self.desired.stream_arn.clone().unwrap_or_default(),
                self.function
            ),
            Change::Delete { uuid, .. } | Change::Update { uuid, .. } => {
                format!("event source mapping {uuid}")
            }
        }
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Vec<Observed>, EngineError> {
        observe(ctx, &self.function).await
    }

    fn diff(&self, o: &Vec<Observed>, _owner: &Owner) -> Result<Diff<Change>, EngineError> {
        Ok(diff(&self.desired, o))
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        let s = &self.desired.settings;
        match change {
            Change::Delete { why, .. } => (Verb::Delete, why.clone()),
            Change::Create => (
                Verb::Create,
                format!(
                    "batch size {}, {}",
                    s.batch_size,
                    describe_filters(&self.desired)
                ),
            ),
            Change::Update { what, .. } if what.contains(&"filterCriteria") => (
                Verb::Update,
                format!("{}: {}", what.join(", "), describe_filters(&self.desired)),
            ),
            Change::Update { what, .. } => (Verb::Update, what.join(", ")),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Vec<Observed>,
    ) -> Result<Applied, EngineError> {
        let lambda = &w.clients().lambda;
        match change {
            Change::Delete { uuid, .. } => {
                lambda
                    .delete_event_source_mapping()
                    .uuid(uuid)
                    .send()
                    .await
                    .found("DeleteEventSourceMapping", &self.resource_of(change))?;
                Ok(Applied::Done)
            }
            Change::Create => self.create(lambda, state).await,
            Change::Update { uuid, .. } => self.update(lambda, uuid).await,
        }
    }

    /// Every mapping of the relay function goes (the function is the pipeline's own).
    async fn removal(
        &self,
        _ctx: &Ctx<'_>,
        o: &Vec<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        Ok(Diff::changes(
            o.iter()
                .filter(|m| m.state != "Deleting")
                .map(|m| Change::Delete {
                    uuid: m.uuid.clone(),
                    why: String::new(),
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;
