//! The desired state of the examples and of each target kind, without AWS.

use std::path::PathBuf;

use super::*;
use crate::crd::OutboxPipeline;
use crate::engine::tags::Owner;

fn example(file: &str) -> OutboxPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let docs = crate::manifest::read_path(&path.to_string_lossy()).expect("example parses");
    docs.into_iter().next().expect("one document").pipeline
}

fn config() -> EngineConfig {
    EngineConfig {
        cluster_id: "c1".into(),
        allow_adoption: false,
        allow_delete_adopted_tables: false,
        permissions_boundary_arn: Some("arn:aws:iam::123456789012:policy/b".into()),
        artifacts_dir: PathBuf::from("/nonexistent"),
    }
}

struct Fixture {
    p: OutboxPipeline,
    names: Names,
    env: AwsEnv,
    config: EngineConfig,
    tags: BTreeMap<String, String>,
    key: String,
}

impl Fixture {
    fn new(p: OutboxPipeline) -> Fixture {
        let config = config();
        let owner = Owner {
            cluster_id: config.cluster_id.clone(),
            pipeline: format!("{}/{}", p.namespace_or_default(), p.name_or_empty()),
        };
        Fixture {
            names: Names::new(&config.cluster_id, &p),
            env: AwsEnv::from_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/t").unwrap(),
            tags: owner.desired_tags(&p.spec.tags),
            key: owner.pipeline,
            config,
            p,
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            spec: &self.p.spec,
            names: &self.names,
            env: &self.env,
            config: &self.config,
            tags: &self.tags,
            pipeline: &self.key,
        }
    }
}

fn known() -> Known {
    Known {
        table_arn: Some("arn:aws:dynamodb:eu-west-1:123456789012:table/t".into()),
        stream_arn: Some("arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/1".into()),
        ..Known::default()
    }
}

#[test]
fn user_created_example_wants_table_bucket_relay_writer_bus_and_no_consumers() {
    let f = Fixture::new(example("user-created.yaml"));
    let i = f.inputs();
    let t = table(&i);
    assert_eq!(t.desired.name, f.names.table);
    assert_eq!(t.desired.tags, f.tags);
    let b = bucket(&i).expect("no destination in the spec: the failure bucket");
    assert_eq!(
        b.name.as_deref(),
        Some(f.names.bucket("123456789012", "eu-west-1").as_str())
    );
    assert!(failure_destination(&i).starts_with("arn:aws:s3:::"));
    let functions = functions(&i, &known());
    let names: Vec<&str> = functions.iter().map(|(_, d)| d.name.as_str()).collect();
    assert_eq!(
        names.len(),
        1 + usize::from(f.p.spec.writer.enabled) + f.p.spec.consumers.len()
    );
    assert_eq!(names[0], f.names.relay_function);
    let relay = &functions[0].1;
    assert_eq!(relay.env[outbox_contract::env::BUS_NAME], f.names.bus);
    // The relay's metrics are by `<namespace>/<name>` of the pipeline.
    let expected = format!(
        "{}/{}",
        f.p.metadata.namespace.as_deref().unwrap_or("default"),
        f.p.metadata.name.as_deref().unwrap_or_default()
    );
    assert_eq!(relay.env[outbox_contract::env::PIPELINE], expected);
    assert!(
        relay.role_arn.contains("after apply"),
        "role unknown yet: {}",
        relay.role_arn
    );
    let m = mapping(&i, &known());
    assert_eq!(m.desired.stream_arn, known().stream_arn);
    assert_eq!(
        m.desired.settings.on_failure.as_deref(),
        Some(failure_destination(&i).as_str())
    );
    assert_eq!(bus(&i).name, f.names.bus);
}

#[test]
fn user_lifecycle_example_wants_a_rule_target_and_permission_per_bundled_consumer() {
    let f = Fixture::new(example("user-lifecycle.yaml"));
    let i = f.inputs();
    let mut k = known();
    for c in &f.p.spec.consumers {
        k.consumer_functions
            .insert(c.name.clone(), format!("arn:fn:{}", c.name));
    }
    let roles = roles(&i, &k);
    assert_eq!(
        roles.len(),
        2 + f.p.spec.consumers.len(),
        "relay, writer, consumers"
    );
    for (function, role) in &roles {
        assert_eq!(role.desired.name, f.names.role(function));
        assert_eq!(role.desired.boundary, f.config.permissions_boundary_arn);
        assert!(
            role.desired
                .policy
                .to_string()
                .contains(&format!("/aws/lambda/{function}"))
        );
    }
    let relay_policy = roles[0].1.desired.policy.to_string();
    assert!(relay_policy.contains("events:PutEvents") && relay_policy.contains("stream/1"));
    for c in &f.p.spec.consumers {
        let r = rule(&i, c);
        assert_eq!(r.name, f.names.rule(&c.name));
        assert_eq!(r.pattern, c.event_pattern);
        let d = delivery(&i, &k, c, "arn:rule");
        let target = d.target.expect("the bundled function is known");
        assert_eq!(target.desired.arn, format!("arn:fn:{}", c.name));
        let p = d
            .permission
            .expect("an invoke permission for the bundled function");
        assert_eq!(p.function, f.names.consumer_function(&c.name));
        assert_eq!(p.rule_arn, "arn:rule");
        assert!(d.required_actions.is_empty());
    }
}

#[test]
fn writer_off_wants_no_writer_function_or_role() {
    let mut p = example("user-lifecycle.yaml");
    p.spec.writer.enabled = false;
    let f = Fixture::new(p);
    let i = f.inputs();
    let fns = function_names(&i);
    assert!(
        fns.iter().all(|(_, n)| *n != f.names.writer_function),
        "{fns:?}"
    );
    assert!(
        roles(&i, &known())
            .iter()
            .all(|(n, _)| *n != f.names.writer_function)
    );
}

#[test]
fn sqs_and_user_lambda_targets_get_no_bundled_function_and_the_right_permission() {
    let mut p = example("user-lifecycle.yaml");
    p.spec.consumers[0].target.sqs_queue_arn = Some("arn:aws:sqs:eu-west-1:123456789012:q".into());
    p.spec.consumers[0].dead_letter_arn = Some("arn:aws:sqs:eu-west-1:123456789012:dlq".into());
    p.spec.consumers[1].target.lambda_function_arn =
        Some("arn:aws:lambda:eu-west-1:123456789012:function:users-own".into());
    let f = Fixture::new(p);
    let i = f.inputs();
    assert_eq!(function_names(&i).len(), 2, "relay and writer only");
    let (sqs, user) = (&f.p.spec.consumers[0], &f.p.spec.consumers[1]);
    let d = delivery(&i, &known(), sqs, "arn:rule:0");
    assert_eq!(
        d.target.unwrap().desired.arn,
        "arn:aws:sqs:eu-west-1:123456789012:q"
    );
    assert!(d.permission.is_none(), "a queue policy is the user's");
    assert_eq!(
        d.required_actions.len(),
        2,
        "queue and dead-letter queue statements"
    );
    assert!(d.required_actions.iter().all(|a| a.contains("arn:rule:0")));
    let d = delivery(&i, &known(), user, "arn:rule:1");
    let p = d.permission.expect("our statement on the user's function");
    assert_eq!(
        p.function,
        "arn:aws:lambda:eu-west-1:123456789012:function:users-own"
    );
    assert_eq!(p.sid, f.names.statement_id(&user.name));
}

#[test]
fn a_bundled_consumer_without_its_function_has_no_target_yet() {
    let f = Fixture::new(example("user-lifecycle.yaml"));
    let c = &f.p.spec.consumers[0];
    let d = delivery(&f.inputs(), &known(), c, "arn:rule");
    assert!(d.target.is_none() && d.permission.is_none());
}

#[test]
fn a_spec_destination_replaces_the_failure_bucket() {
    let mut p = example("user-created.yaml");
    p.spec.relay.on_failure_destination_arn = Some("arn:aws:sqs:eu-west-1:123456789012:f".into());
    let f = Fixture::new(p);
    assert!(bucket(&f.inputs()).is_none());
    assert_eq!(
        failure_destination(&f.inputs()),
        "arn:aws:sqs:eu-west-1:123456789012:f"
    );
}

#[test]
fn monitoring_wants_relay_and_consumer_alarms_with_the_spec_settings() {
    let mut p = example("user-lifecycle.yaml");
    p.spec.monitoring.max_lag_seconds = 120;
    p.spec.monitoring.alarm_actions = vec![
        "arn:aws:sns:eu-west-1:123456789012:b".into(),
        "arn:aws:sns:eu-west-1:123456789012:a".into(),
    ];
    p.spec.consumers[0].dead_letter_arn = Some("arn:aws:sqs:eu-west-1:123456789012:dlq".into());
    let f = Fixture::new(p);
    let alarms = alarms(&f.inputs());
    let consumers = &f.p.spec.consumers;
    assert_eq!(alarms.len(), 2 + consumers.len() + 1, "{alarms:#?}");
    let lag = alarms
        .iter()
        .find(|a| a.name == f.names.alarm("relay-iterator-age"))
        .and_then(|a| a.settings.clone())
        .expect("lag alarm");
    assert_eq!(lag.threshold, 120_000.0);
    assert_eq!(
        (lag.period, lag.evaluation_periods, lag.datapoints_to_alarm),
        (60, 5, 3)
    );
    assert_eq!(
        lag.actions,
        vec![
            "arn:aws:sns:eu-west-1:123456789012:a".to_owned(),
            "arn:aws:sns:eu-west-1:123456789012:b".to_owned()
        ]
    );
    let dlq = alarms
        .iter()
        .find(|a| a.name.ends_with(&format!("c-{}-dlq", consumers[0].name)))
        .and_then(|a| a.settings.clone())
        .expect("dead-letter alarm");
    assert_eq!(
        dlq.dimensions,
        vec![("QueueName".to_owned(), "dlq".to_owned())]
    );
    assert!(
        alarms
            .iter()
            .all(|a| a.name.starts_with(&f.names.alarm_prefix()))
    );
    assert!(alarms.iter().all(|a| a.tags == f.tags));
}

#[test]
fn monitoring_off_wants_no_alarm_but_log_groups_keep_their_retention() {
    let mut p = example("user-created.yaml");
    p.spec.monitoring.enabled = false;
    p.spec.monitoring.log_retention_days = 7;
    let f = Fixture::new(p);
    assert!(alarms(&f.inputs()).is_empty());
    let group = log_group(&f.inputs(), Component::Relay, &f.names.relay_function);
    assert_eq!(
        group.name,
        format!("/aws/lambda/{}", f.names.relay_function)
    );
    assert_eq!(group.retention_days, 7);
    assert_eq!(
        group.arn,
        format!(
            "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/{}",
            f.names.relay_function
        )
    );
}
