//! Reads and writes the tags of every resource of a pipeline, as a user would with the AWS CLI.

use std::collections::BTreeMap;

use outbox_operator::crd::{OutboxPipeline, OutboxPipelineStatus};
use outbox_operator::engine::names::Names;

use super::{Harness, table_tags};

type Tags = BTreeMap<String, String>;

/// Every tagged resource of a converged pipeline: (what, its ARN or name).
pub enum Resource {
    Table(String),
    Bus(String),
    Rule(String),
    Function(String),
    Role(String),
    Bucket(String),
    LogGroup(String),
    Alarm(String),
}

impl Resource {
    pub fn label(&self) -> String {
        match self {
            Resource::Table(n) => format!("table {n}"),
            Resource::Bus(a) | Resource::Rule(a) => format!("eventbridge {a}"),
            Resource::Function(n) => format!("function {n}"),
            Resource::Role(n) => format!("role {n}"),
            Resource::Bucket(n) => format!("bucket {n}"),
            Resource::LogGroup(a) => format!("log group {a}"),
            Resource::Alarm(a) => format!("alarm {a}"),
        }
    }
}

/// The table, bus, rules, functions, roles, failure bucket, log groups and alarms of `p`.
pub async fn resources(
    h: &Harness,
    p: &OutboxPipeline,
    names: &Names,
    st: &OutboxPipelineStatus,
) -> Vec<Resource> {
    let mut out = vec![
        Resource::Table(names.table.clone()),
        Resource::Bus(st.bus_arn.clone().expect("bus arn")),
    ];
    for c in &p.spec.consumers {
        let rule = h
            .clients
            .eventbridge
            .describe_rule()
            .name(names.rule(&c.name))
            .event_bus_name(&names.bus)
            .send()
            .await
            .expect("DescribeRule");
        out.push(Resource::Rule(rule.arn().expect("rule arn").to_owned()));
    }
    let mut functions = vec![names.relay_function.clone()];
    if p.spec.writer.enabled {
        functions.push(names.writer_function.clone());
    }
    for c in &p.spec.consumers {
        functions.push(names.consumer_function(&c.name));
    }
    for f in functions {
        out.push(Resource::Role(names.role(&f)));
        out.push(Resource::LogGroup(format!(
            "arn:aws:logs:us-east-1:123456789012:log-group:{}",
            Names::log_group(&f)
        )));
        out.push(Resource::Function(f));
    }
    let dest = st.failure_destination_arn.clone().expect("failure bucket");
    out.push(Resource::Bucket(
        dest.trim_start_matches("arn:aws:s3:::").to_owned(),
    ));
    let alarms = h
        .clients
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(names.alarm_prefix())
        .send()
        .await
        .expect("DescribeAlarms");
    for a in alarms.metric_alarms() {
        out.push(Resource::Alarm(
            a.alarm_arn().expect("alarm arn").to_owned(),
        ));
    }
    out
}

pub async fn read(h: &Harness, r: &Resource) -> Tags {
    let c = &h.clients;
    match r {
        Resource::Table(n) => table_tags(h, n).await,
        Resource::Bus(a) | Resource::Rule(a) => c
            .eventbridge
            .list_tags_for_resource()
            .resource_arn(a)
            .send()
            .await
            .expect("ListTagsForResource")
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        Resource::Function(n) => c
            .lambda
            .get_function()
            .function_name(n)
            .send()
            .await
            .expect("GetFunction")
            .tags()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        Resource::Role(n) => c
            .iam
            .list_role_tags()
            .role_name(n)
            .send()
            .await
            .expect("ListRoleTags")
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        Resource::LogGroup(a) => c
            .logs
            .list_tags_for_resource()
            .resource_arn(a)
            .send()
            .await
            .expect("ListTagsForResource")
            .tags()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        Resource::Alarm(a) => c
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(a)
            .send()
            .await
            .expect("ListTagsForResource")
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
        Resource::Bucket(n) => {
            c.s3.get_bucket_tagging()
                .bucket(n)
                .send()
                .await
                .expect("GetBucketTagging")
                .tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect()
        }
    }
}

/// Adds one tag by hand (for the bucket: the whole set, as PutBucketTagging requires).
pub async fn add(h: &Harness, r: &Resource, key: &str, value: &str) {
    let c = &h.clients;
    match r {
        Resource::Table(n) => {
            let arn = c
                .dynamodb
                .describe_table()
                .table_name(n)
                .send()
                .await
                .expect("DescribeTable")
                .table()
                .and_then(|t| t.table_arn())
                .expect("table arn")
                .to_owned();
            let tag = aws_sdk_dynamodb::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
                .unwrap();
            c.dynamodb
                .tag_resource()
                .resource_arn(arn)
                .tags(tag)
                .send()
                .await
                .expect("TagResource");
        }
        Resource::Bus(a) | Resource::Rule(a) => {
            let tag = aws_sdk_eventbridge::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
                .unwrap();
            c.eventbridge
                .tag_resource()
                .resource_arn(a)
                .tags(tag)
                .send()
                .await
                .expect("TagResource");
        }
        Resource::Function(n) => {
            let arn = c
                .lambda
                .get_function()
                .function_name(n)
                .send()
                .await
                .expect("GetFunction")
                .configuration()
                .and_then(|f| f.function_arn())
                .expect("function arn")
                .to_owned();
            c.lambda
                .tag_resource()
                .resource(arn)
                .tags(key, value)
                .send()
                .await
                .expect("TagResource");
        }
        Resource::Role(n) => {
            let tag = aws_sdk_iam::types::Tag::builder()
                .key(key)
                .value(value)
                .build()
                .unwrap();
            c.iam
                .tag_role()
                .role_name(n)
                .tags(tag)
                .send()
                .await
                .expect("TagRole");
        }
        Resource::LogGroup(a) => {
            c.logs
                .tag_resource()
                .resource_arn(a)
                .tags(key, value)
                .send()
                .await
                .expect("TagResource");
        }
        Resource::Alarm(a) => {
            let tag = aws_sdk_cloudwatch::types::Tag::builder()
                .key(key)
                .value(value)
                .build();
            c.cloudwatch
                .tag_resource()
                .resource_arn(a)
                .tags(tag)
                .send()
                .await
                .expect("TagResource");
        }
        Resource::Bucket(n) => {
            let mut all = read(h, r).await;
            all.insert(key.to_owned(), value.to_owned());
            let set = all
                .iter()
                .map(|(k, v)| aws_sdk_s3::types::Tag::builder().key(k).value(v).build())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let tagging = aws_sdk_s3::types::Tagging::builder()
                .set_tag_set(Some(set))
                .build()
                .unwrap();
            c.s3.put_bucket_tagging()
                .bucket(n)
                .tagging(tagging)
                .send()
                .await
                .expect("PutBucketTagging");
        }
    }
}
