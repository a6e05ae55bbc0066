//! The relay's own figures as CloudWatch Embedded Metric Format (EMF) lines.
//!
//! One JSON line per invocation on stdout; CloudWatch Logs turns it into metrics with no API
//! call and no extra latency (format: "Specification: Embedded metric format",
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//! Namespace `Outbox`, one dimension `pipeline` (`<namespace>/<name>`), and per invocation:
//!
//! | metric            | unit         | what                                                       |
//! |-------------------|--------------|------------------------------------------------------------|
//! | `Records`         | Count        | records in the batch                                       |
//! | `Published`       | Count        | events PutEvents accepted                                  |
//! | `Skipped`         | Count        | records no `relay.events` entry maps                       |
//! | `Retried`         | Count        | entries sent again after throttling or a transient failure |
//! | `Failed`          | Count        | records handed back to the mapping (first unpublished on)  |
//! | `OldestRecordAge` | Milliseconds | age of the batch's oldest record when the relay got it     |
//!
//! `OldestRecordAge` is left out when no record carries its creation time.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Report;

/// The CloudWatch namespace of the relay's metrics.
pub const NAMESPACE: &str = "Outbox";
/// The one dimension of the relay's metrics.
pub const DIMENSION: &str = "pipeline";

/// The EMF document for one invocation's report, as one line (no newline). Written straight
/// into one string: it runs once per invocation, where building a `serde_json::Value` tree
/// first cost more than the rest of the line (docs/data-plane.md, *Cost*).
pub fn line(report: &Report, pipeline: &str, now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let figures = figures(report, now);
    let mut text = String::with_capacity(480 + pipeline.len());
    let _ = write!(
        text,
        r#"{{"_aws":{{"Timestamp":{},"CloudWatchMetrics":[{{"Namespace":"{NAMESPACE}","Dimensions":[["{DIMENSION}"]],"Metrics":["#,
        now.timestamp_millis()
    );
    for (i, (name, unit, _)) in figures.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(text, r#"{comma}{{"Name":"{name}","Unit":"{unit}"}}"#);
    }
    text.push_str(r#"]}]},""#);
    text.push_str(DIMENSION);
    text.push_str(r#"":"#);
    // A pipeline is `<namespace>/<name>` of Kubernetes names, but escape it all the same.
    text.push_str(&Value::from(pipeline).to_string());
    for (name, _, value) in &figures {
        let _ = write!(text, r#","{name}":{value}"#);
    }
    text.push('}');
    text
}

/// The EMF document for one invocation's report: [`line`], parsed.
pub fn document(report: &Report, pipeline: &str, now: DateTime<Utc>) -> Value {
    serde_json::from_str(&line(report, pipeline, now)).unwrap_or(Value::Null)
}

/// Each metric of the report: name, unit, value.
fn figures(report: &Report, now: DateTime<Utc>) -> Vec<(&'static str, &'static str, i64)> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let failed = report
        .records
        .saturating_sub(report.published)
        .saturating_sub(report.skipped);
    let mut figures = vec![
        ("Records", "Count", count(report.records)),
        ("Published", "Count", count(report.published)),
        ("Skipped", "Count", count(report.skipped)),
        ("Retried", "Count", count(report.retried)),
        ("Failed", "Count", count(failed)),
    ];
    if let Some(oldest) = report.oldest_record {
        let age = (now - oldest).num_milliseconds().max(0);
        figures.push(("OldestRecordAge", "Milliseconds", age));
    }
    figures
}

/// Writes the line to stdout in one write (CloudWatch Logs reads one document per line).
pub fn emit(report: &Report, pipeline: &str) {
    use std::io::Write;
    let mut text = line(report, pipeline, Utc::now());
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn report() -> Report {
        Report {
            records: 10,
            published: 6,
            skipped: 1,
            retried: 2,
            oldest_record: Some(Utc.timestamp_opt(1_700_000_000, 0).unwrap()),
            ..Report::default()
        }
    }

    #[test]
    fn the_document_declares_every_figure_under_the_outbox_namespace_by_pipeline() {
        let now = Utc.timestamp_opt(1_700_000_042, 500_000_000).unwrap();
        let doc = document(&report(), "default/users", now);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Outbox");
        assert_eq!(directive["Dimensions"], json!([["pipeline"]]));
        assert_eq!(doc["_aws"]["Timestamp"], json!(1_700_000_042_500_i64));
        assert_eq!(doc["pipeline"], "default/users");
        // Every declared metric has its value at the top level, as EMF requires.
        let declared: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(
            declared,
            [
                "Records",
                "Published",
                "Skipped",
                "Retried",
                "Failed",
                "OldestRecordAge"
            ]
        );
        for name in declared {
            assert!(doc[name].is_number(), "{name} has no value");
        }
        assert_eq!(doc["Records"], 10);
        assert_eq!(doc["Published"], 6);
        assert_eq!(doc["Failed"], 3, "records − published − skipped go back");
        assert_eq!(doc["OldestRecordAge"], 42_500);
    }

    #[test]
    fn without_creation_times_the_age_is_left_out_and_the_line_is_one_line() {
        let mut r = report();
        r.oldest_record = None;
        let text = line(&r, "ns/p", Utc::now());
        assert!(!text.contains('\n'));
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc.get("OldestRecordAge").is_none());
        let metrics = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert!(metrics.iter().all(|m| m["Name"] != "OldestRecordAge"));
    }

    #[test]
    fn the_pipeline_is_escaped_so_the_line_stays_one_json_document() {
        let text = line(&report(), "ns/\"odd\\name", Utc::now());
        let doc: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(doc["pipeline"], "ns/\"odd\\name");
    }
}
