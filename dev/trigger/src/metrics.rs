//! What CloudWatch would hold after a real relay invocation: the `AWS/Lambda` figures Lambda
//! publishes for the function (Invocations, Errors, IteratorAge) and the relay's own EMF line
//! turned into `Outbox` metrics the way CloudWatch Logs extracts them. The emulator runs no
//! Lambda, so the demo puts both with PutMetricData; the operator's health check then reads
//! them exactly as it reads AWS's.

use anyhow::{Context, Result};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use outbox_relay::{Report, emf};
use serde_json::Value;

/// Puts the invocation's figures; returns how many datapoints were put.
pub async fn put_as_lambda_would(
    relay_function: &str,
    pipeline: Option<&str>,
    report: &Report,
) -> Result<usize> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let now = chrono::Utc::now();
    let lambda = lambda_figures(relay_function, report, now);
    let count = lambda.len();
    put(&cloudwatch, "AWS/Lambda", lambda).await?;
    let Some(pipeline) = pipeline else {
        return Ok(count);
    };
    let outbox = emf_figures(&emf::document(report, pipeline, now));
    let count = count + outbox.len();
    put(&cloudwatch, emf::NAMESPACE, outbox).await?;
    Ok(count)
}

async fn put(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    data: Vec<MetricDatum>,
) -> Result<()> {
    cloudwatch
        .put_metric_data()
        .namespace(namespace)
        .set_metric_data(Some(data))
        .send()
        .await
        .with_context(|| format!("PutMetricData {namespace}"))?;
    Ok(())
}

fn datum(
    name: &str,
    dimension: (&str, &str),
    value: f64,
    unit: StandardUnit,
    at: chrono::DateTime<chrono::Utc>,
) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .dimensions(
            Dimension::builder()
                .name(dimension.0)
                .value(dimension.1)
                .build(),
        )
        .value(value)
        .unit(unit)
        .timestamp(DateTime::from_millis(at.timestamp_millis()))
        .build()
}

/// Lambda's own figures for one successful invocation (`IteratorAge`: the batch's age).
fn lambda_figures(
    function: &str,
    report: &Report,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<MetricDatum> {
    let function = function.rsplit(':').next().unwrap_or(function);
    let dim = ("FunctionName", function);
    // A partial batch response is a successful invocation: Lambda counts no error for it.
    let mut data = vec![
        datum("Invocations", dim, 1.0, StandardUnit::Count, now),
        datum("Errors", dim, 0.0, StandardUnit::Count, now),
    ];
    if let Some(oldest) = report.oldest_record {
        let age = (now - oldest).num_milliseconds().max(0) as f64;
        data.push(datum(
            "IteratorAge",
            dim,
            age,
            StandardUnit::Milliseconds,
            now,
        ));
    }
    data
}

/// The datapoints CloudWatch Logs extracts from an EMF document.
fn emf_figures(doc: &Value) -> Vec<MetricDatum> {
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    let at = doc["_aws"]["Timestamp"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_else(chrono::Utc::now);
    let pipeline = doc[emf::DIMENSION].as_str().unwrap_or_default();
    directive["Metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m["Name"].as_str()?;
            let unit = StandardUnit::from(m["Unit"].as_str()?);
            let value = doc[name].as_f64()?;
            Some(datum(name, (emf::DIMENSION, pipeline), value, unit, at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_emf_metric_becomes_one_datapoint_by_pipeline() {
        let report = Report {
            records: 3,
            published: 3,
            oldest_record: Some(chrono::Utc::now()),
            ..Report::default()
        };
        let doc = emf::document(&report, "default/users", chrono::Utc::now());
        let data = emf_figures(&doc);
        let names: Vec<_> = data.iter().filter_map(|d| d.metric_name()).collect();
        assert_eq!(
            names,
            [
                "Records",
                "Published",
                "Skipped",
                "Retried",
                "Failed",
                "OldestRecordAge"
            ]
        );
        assert_eq!(data[0].value(), Some(3.0));
        assert_eq!(data[0].dimensions()[0].value(), Some("default/users"));
        assert_eq!(data[5].unit(), Some(&StandardUnit::Milliseconds));
    }
}
