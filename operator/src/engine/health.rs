//! Data-plane health: whether events flow, read every reconcile and `status` with read calls only
//! (a handful per pipeline): the event source mapping (as the pass's mapping step read it), one GetMetricData
//! for the relay's IteratorAge, Errors and Throttles and each consumer rule's
//! FailedInvocations, and the batches parked in the failure destination (ListObjectsV2 on the
//! owned bucket, capped; or GetQueueUrl + GetQueueAttributes for an SQS destination). The
//! verdict ([`verdict::verdict`], pure) becomes `status.dataPlane` and the Healthy condition.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

use crate::crd::{
    ConditionType, DataPlaneStatus, HealthReason, OutboxPipeline, OutboxPipelineStatus,
};

use super::AwsClients;
use super::errors::aws_error;
use super::names::Names;

pub mod verdict;
pub use verdict::{Figures, Parked, Verdict, verdict};

/// The failure bucket's listing stops here: the status says "≥1000".
pub const PARKED_CAP: i32 = 1000;
/// IteratorAge: the maximum over this window.
const LAG_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Errors, Throttles, FailedInvocations: the sum over this window.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// "operation: CODE message" for `unreadable`, naming the permission on AccessDenied.
fn unreadable<E>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::http::Response,
    >,
    permission: &str,
    resource: &str,
) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let e = aws_error(err, permission, resource);
    match e.reason() {
        crate::crd::Reason::AccessDenied => format!("{permission} is denied ({e})"),
        _ => format!("{permission}: {e}"),
    }
}

/// Reads the figures of a provisioned pipeline (its mapping exists) and sets `status.dataPlane`
/// and the Healthy condition. Never fails: what cannot be read is named in the status.
pub async fn check(
    clients: &AwsClients,
    cluster_id: &str,
    pipeline: &OutboxPipeline,
    status: &mut OutboxPipelineStatus,
) {
    if status.event_source_mapping_uuid.is_none() {
        return;
    }
    let names = Names::new(cluster_id, pipeline);
    // The mapping's State and LastProcessingResult come from the pass's own mapping step.
    let mapping = status.data_plane.take().unwrap_or_default();
    let mut f = Figures {
        mapping_state: mapping.mapping_state,
        last_processing_result: mapping.last_processing_result,
        ..Figures::default()
    };
    read_metrics(clients, &names, pipeline, &mut f).await;
    read_parked(
        clients,
        pipeline,
        status.failure_destination_arn.as_deref(),
        &mut f,
    )
    .await;
    let previous = pipeline
        .status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Healthy))
        .and_then(|c| HealthReason::parse(&c.reason));
    let max_lag = i64::from(pipeline.spec.monitoring.max_lag_seconds);
    let Verdict { reason, message } = verdict(&f, max_lag, previous);
    let now = crate::crd::now();
    status.put_condition(
        ConditionType::Healthy,
        reason.status(),
        reason.as_str(),
        message,
        pipeline.metadata.generation,
        &now,
    );
    status.data_plane = Some(data_plane(&f, now));
}

fn data_plane(f: &Figures, checked_at: String) -> DataPlaneStatus {
    let whole = |v: Option<f64>| v.map(|x| x.round() as i64);
    DataPlaneStatus {
        checked_at,
        mapping_state: f.mapping_state.clone(),
        last_processing_result: f.last_processing_result.clone(),
        iterator_age_seconds: f.iterator_age_ms.map(|ms| (ms / 1000.0).round() as i64),
        relay_errors: whole(f.relay_errors),
        relay_throttles: whole(f.relay_throttles),
        consumer_failed_invocations: f
            .consumer_failures
            .iter()
            .map(|(c, n)| (c.clone(), n.round() as i64))
            .collect(),
        parked_batches: f.parked.as_ref().map(Parked::text),
        newest_parked_at: f.parked.as_ref().and_then(|p| p.newest.clone()),
        unreadable: f.unreadable.clone(),
    }
}

fn query(
    id: &str,
    namespace: &str,
    metric: &str,
    dims: &[(&str, &str)],
    stat: &str,
) -> MetricDataQuery {
    let dimensions = dims
        .iter()
        .map(|(n, v)| Dimension::builder().name(*n).value(*v).build())
        .collect();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(namespace)
                        .metric_name(metric)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(60)
                .stat(stat)
                .build(),
        )
        .return_data(true)
        .build()
}

/// One GetMetricData call over the last 15 minutes at 1-minute periods; IteratorAge is then
/// cut to the last 5 minutes.
async fn read_metrics(
    clients: &AwsClients,
    names: &Names,
    pipeline: &OutboxPipeline,
    f: &mut Figures,
) {
    let relay = [("FunctionName", names.relay_function.as_str())];
    let mut queries = vec![
        query("age", "AWS/Lambda", "IteratorAge", &relay, "Maximum"),
        query("errors", "AWS/Lambda", "Errors", &relay, "Sum"),
        query("throttles", "AWS/Lambda", "Throttles", &relay, "Sum"),
    ];
    let consumers: Vec<&str> = pipeline
        .spec
        .consumers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for (i, c) in consumers.iter().enumerate() {
        let rule = names.rule(c);
        let dims = [
            ("EventBusName", names.bus.as_str()),
            ("RuleName", rule.as_str()),
        ];
        queries.push(query(
            &format!("c{i}"),
            "AWS/Events",
            "FailedInvocations",
            &dims,
            "Sum",
        ));
    }
    let now = SystemTime::now();
    let start = now.checked_sub(FAILURE_WINDOW).unwrap_or(now);
    let lag_start = DateTime::from(now.checked_sub(LAG_WINDOW).unwrap_or(now));
    let out = match clients
        .cloudwatch
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(DateTime::from(start))
        // Through the current, unfinished minute (whose datapoints count too).
        .end_time(DateTime::from(now + Duration::from_secs(60)))
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            let resource = format!("metrics of {}", names.relay_function);
            f.unreadable
                .push(unreadable(&e, "cloudwatch:GetMetricData", &resource));
            return;
        }
    };
    take_results(out.metric_data_results(), &consumers, lag_start, f);
}

/// The figures of GetMetricData's results (ids `age`, `errors`, `throttles`, `c<i>`); a result
/// without datapoints leaves its figure None.
fn take_results(
    results: &[aws_sdk_cloudwatch::types::MetricDataResult],
    consumers: &[&str],
    lag_start: DateTime,
    f: &mut Figures,
) {
    for r in results {
        let points: Vec<(DateTime, f64)> = r
            .timestamps()
            .iter()
            .copied()
            .zip(r.values().iter().copied())
            .collect();
        let sum = |p: &[(DateTime, f64)]| (!p.is_empty()).then(|| p.iter().map(|x| x.1).sum());
        match r.id() {
            Some("age") => {
                f.iterator_age_ms = points
                    .iter()
                    .filter(|(t, _)| t.secs() >= lag_start.secs() - 60)
                    .map(|x| x.1)
                    .reduce(f64::max);
            }
            Some("errors") => f.relay_errors = sum(&points),
            Some("throttles") => f.relay_throttles = sum(&points),
            Some(id) => {
                let consumer = id
                    .strip_prefix('c')
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| consumers.get(i));
                if let (Some(c), Some(n)) = (consumer, sum(&points)) {
                    f.consumer_failures.insert((*c).to_owned(), n);
                }
            }
            None => {}
        }
    }
}

/// Parked batches: the owned failure bucket's objects (capped) or an SQS destination's depth.
/// SNS destinations and a user's bucket are not read (None).
async fn read_parked(
    clients: &AwsClients,
    pipeline: &OutboxPipeline,
    destination: Option<&str>,
    f: &mut Figures,
) {
    let Some(arn) = destination else { return };
    if let Some(bucket) = arn
        .strip_prefix("arn:aws:s3:::")
        .or_else(|| arn.split_once(":s3:::").map(|(_, b)| b))
    {
        if pipeline.spec.relay.on_failure_destination_arn.is_none() {
            read_bucket(clients, bucket, f).await;
        }
    } else if arn.contains(":sqs:") {
        read_queue(clients, arn, f).await;
    }
}

async fn read_bucket(clients: &AwsClients, bucket: &str, f: &mut Figures) {
    match clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        // Only Lambda's parked batches: not what replay moved under `replayed/`.
        .prefix(super::replay::record::PARKED_PREFIX)
        .max_keys(PARKED_CAP)
        .send()
        .await
    {
        Ok(out) => {
            let newest = out
                .contents()
                .iter()
                .filter_map(|o| o.last_modified())
                .max_by_key(|t| (t.secs(), t.subsec_nanos()))
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
            f.parked = Some(Parked {
                count: out.contents().len() as u64,
                capped: out.is_truncated().unwrap_or(false),
                newest,
            });
        }
        Err(e) if super::errors::is_not_found(&e) => {}
        Err(e) => f.unreadable.push(unreadable(
            &e,
            "s3:ListBucket",
            &format!("s3 bucket {bucket}"),
        )),
    }
}

async fn read_queue(clients: &AwsClients, arn: &str, f: &mut Figures) {
    let resource = format!("sqs queue {arn}");
    let Some((account, name)) = super::queues::account_and_name(arn) else {
        return;
    };
    let url = match clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
    {
        Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
        Err(e) => {
            f.unreadable
                .push(unreadable(&e, "sqs:GetQueueUrl", &resource));
            return;
        }
    };
    let attribute = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages;
    match clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(attribute.clone())
        .send()
        .await
    {
        Ok(out) => {
            let count = out
                .attributes()
                .and_then(|a| a.get(&attribute))
                .and_then(|v| v.parse::<u64>().ok());
            f.parked = count.map(|count| Parked {
                count,
                capped: false,
                newest: None,
            });
        }
        Err(e) => f
            .unreadable
            .push(unreadable(&e, "sqs:GetQueueAttributes", &resource)),
    }
}

#[cfg(test)]
#[path = "health/tests.rs"]
mod tests;
