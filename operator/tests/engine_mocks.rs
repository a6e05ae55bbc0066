//! Call sequences moto cannot produce, against mocked clients (aws-smithy-mocks): a stream that
//! is disabled and re-enabled (new ARN → mapping recreated), throttling, access denied, a
//! function still Pending and a role not yet assumable.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use aws_smithy_types::error::ErrorMetadata;
use outbox_operator::crd::{ConditionType, OutboxPipeline, Reason};
use outbox_operator::engine::context::AwsEnv;
use outbox_operator::engine::iam::{Grants, inline_policy, trust_policy};
use outbox_operator::engine::names::Names;
use outbox_operator::engine::tags::Owner;
use outbox_operator::engine::{
    AwsClients, CallInfo, Engine, EngineConfig, ErrorClass, Outcome, Verb, function,
};

const ACCOUNT: &str = "123456789012";
const OLD_STREAM: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000";
const NEW_STREAM: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-06-01T00:00:00.000";
const TABLE_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders";
const DLQ: &str = "arn:aws:sqs:us-east-1:123456789012:relay-failures";
const CLUSTER: &str = "mock-cluster";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/artifacts")
}

fn pipeline() -> OutboxPipeline {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "outbox.dev/v1alpha1",
        "kind": "OutboxPipeline",
        "metadata": {"name": "orders", "namespace": "shop", "generation": 3},
        "spec": {
            "table": {"name": "orders", "partitionKey": {"name": "id", "type": "S"}},
            "bus": {"name": "orders"},
            "relay": {
                "events": [{"change": "INSERT", "source": "shop", "detailType": "OrderPlaced", "payload": "newImage"}],
                "onFailureDestinationArn": DLQ
            },
            // Alarms are tested against moto (monitoring_moto.rs): none here.
            "monitoring": {"enabled": false}
        }
    }))
    .expect("pipeline fixture")
}

/// The AWS state of `pipeline()` when everything is in sync (stream enabled as `stream`).
struct World {
    names: Names,
    tags: BTreeMap<String, String>,
    env: AwsEnv,
}

impl World {
    fn new() -> World {
        let p = pipeline();
        let owner = Owner {
            cluster_id: CLUSTER.into(),
            pipeline: "shop/orders".into(),
        };
        World {
            names: Names::new(CLUSTER, &p),
            tags: owner.desired_tags(&BTreeMap::new()),
            env: AwsEnv::from_arn(TABLE_ARN).unwrap(),
        }
    }

    fn role_arn(&self) -> String {
        format!(
            "arn:aws:iam::{ACCOUNT}:role/outbox/{}",
            self.names.role(&self.names.relay_function)
        )
    }

    fn relay_policy(&self, stream: &str) -> String {
        let p = inline_policy(
            &self.env,
            &self.names.relay_function,
            &Grants::Relay {
                stream_arn: stream.into(),
                bus_arn: self.env.bus_arn("orders"),
                failure_destination_arn: DLQ.into(),
            },
        );
        urlencoding::encode(&p.to_string()).into_owned()
    }
}

fn table(stream: Option<&str>) -> aws_sdk_dynamodb::types::TableDescription {
    use aws_sdk_dynamodb::types::*;
    let spec = match stream {
        Some(_) => StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewImage)
            .build()
            .unwrap(),
        None => StreamSpecification::builder()
            .stream_enabled(false)
            .build()
            .unwrap(),
    };
    TableDescription::builder()
        .table_name("orders")
        .table_arn(TABLE_ARN)
        .table_status(TableStatus::Active)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode_summary(
            BillingModeSummary::builder()
                .billing_mode(BillingMode::PayPerRequest)
                .build(),
        )
        .stream_specification(spec)
        .latest_stream_arn(stream.unwrap_or(OLD_STREAM))
        .deletion_protection_enabled(true)
        .build()
}

fn function_config(w: &World, state: &str) -> aws_sdk_lambda::types::FunctionConfiguration {
    use aws_sdk_lambda::types::*;
    let zip = std::fs::read(fixtures().join("x86_64/relay/bootstrap.zip")).unwrap();
    let env = outbox_contract::RelayConfig {
        bus_name: "orders".into(),
        events: vec![outbox_contract::EventMapping::new(
            outbox_contract::ChangeType::Insert,
            "shop",
            "OrderPlaced",
            outbox_contract::Payload::NewImage,
        )],
        request_size_limit_bytes: 262_144,
        pipeline: Some(w.names.pipeline()),
    }
    .to_env();
    FunctionConfiguration::builder()
        .function_name(&w.names.relay_function)
        .function_arn(format!(
            "arn:aws:lambda:us-east-1:{ACCOUNT}:function:{}",
            w.names.relay_function
        ))
        .runtime(Runtime::from("provided.al2023"))
        .handler("bootstrap")
        .role(w.role_arn())
        .memory_size(256)
        .timeout(60)
        .architectures(Architecture::X8664)
        .environment(
            EnvironmentResponse::builder()
                .set_variables(Some(env.into_iter().collect()))
                .build(),
        )
        .code_sha256(function::code_sha256(&zip))
        .state(State::from(state))
        .last_update_status(LastUpdateStatus::Successful)
        .build()
}

fn mapping(uuid: &str, stream: &str) -> aws_sdk_lambda::types::EventSourceMappingConfiguration {
    use aws_sdk_lambda::types::*;
    EventSourceMappingConfiguration::builder()
        .uuid(uuid)
        .event_source_arn(stream)
        .state("Enabled")
        .batch_size(100)
        .maximum_batching_window_in_seconds(0)
        .maximum_retry_attempts(10)
        .maximum_record_age_in_seconds(86_400)
        .bisect_batch_on_function_error(true)
        .parallelization_factor(1)
        .function_response_types(FunctionResponseType::ReportBatchItemFailures)
        .filter_criteria(
            FilterCriteria::builder()
                .filters(
                    Filter::builder()
                        .pattern(r#"{"eventName":["INSERT"]}"#)
                        .build(),
                )
                .build(),
        )
        .destination_config(
            DestinationConfig::builder()
                .on_failure(OnFailure::builder().destination(DLQ).build())
                .build(),
        )
        .build()
}

/// Rules per client; scenario rules go first and win (MatchAny takes the first match).
#[derive(Default)]
struct Rules {
    ddb: Vec<Rule>,
    iam: Vec<Rule>,
    lambda: Vec<Rule>,
    eb: Vec<Rule>,
    /// Before the defaults (the queues exist and are empty).
    sqs: Vec<Rule>,
    /// Before the defaults (no alarms, no datapoints).
    cw: Vec<Rule>,
}

impl Rules {
    /// Everything in sync with the stream `stream`.
    fn in_sync(w: &World, stream: &str) -> Rules {
        use aws_sdk_dynamodb::operation as ddbop;
        let tags_ddb: Vec<_> = w
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_dynamodb::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .unwrap()
            })
            .collect();
        let stream_owned = stream.to_owned();
        let ddb = vec![
            mock!(aws_sdk_dynamodb::Client::describe_table).then_output(move || {
                ddbop::describe_table::DescribeTableOutput::builder()
                    .table(table(Some(&stream_owned)))
                    .build()
            }),
            mock!(aws_sdk_dynamodb::Client::list_tags_of_resource).then_output(move || {
                ddbop::list_tags_of_resource::ListTagsOfResourceOutput::builder()
                    .set_tags(Some(tags_ddb.clone()))
                    .build()
            }),
            mock!(aws_sdk_dynamodb::Client::describe_continuous_backups).then_output(|| {
                use aws_sdk_dynamodb::types::*;
                ddbop::describe_continuous_backups::DescribeContinuousBackupsOutput::builder()
                    .continuous_backups_description(
                        ContinuousBackupsDescription::builder()
                            .continuous_backups_status(ContinuousBackupsStatus::Enabled)
                            .point_in_time_recovery_description(
                                PointInTimeRecoveryDescription::builder()
                                    .point_in_time_recovery_status(
                                        PointInTimeRecoveryStatus::Enabled,
                                    )
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
        ];

        let iam_tags: Vec<_> = w
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .unwrap()
            })
            .collect();
        let role_arn = w.role_arn();
        let role_name = w.names.role(&w.names.relay_function);
        let trust = urlencoding::encode(&trust_policy().to_string()).into_owned();
        let policy = w.relay_policy(stream);
        let rn = role_name.clone();
        let only_relay_role = role_name.clone();
        let iam = vec![
            mock!(aws_sdk_iam::Client::get_role)
                .match_requests(move |r| r.role_name() != Some(only_relay_role.as_str()))
                .then_error(|| {
                    aws_sdk_iam::operation::get_role::GetRoleError::generic(
                        ErrorMetadata::builder().code("NoSuchEntity").build(),
                    )
                }),
            mock!(aws_sdk_iam::Client::get_role).then_output(move || {
                aws_sdk_iam::operation::get_role::GetRoleOutput::builder()
                    .role(
                        aws_sdk_iam::types::Role::builder()
                            .path("/outbox/")
                            .role_name(&role_name)
                            .role_id("AROAEXAMPLE")
                            .arn(&role_arn)
                            .create_date(aws_smithy_types::DateTime::from_secs(0))
                            .assume_role_policy_document(&trust)
                            .set_tags(Some(iam_tags.clone()))
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
            mock!(aws_sdk_iam::Client::get_role_policy).then_output(move || {
                aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput::builder()
                    .role_name(&rn)
                    .policy_name("outbox")
                    .policy_document(&policy)
                    .build()
                    .unwrap()
            }),
        ];

        let fn_tags: HashMap<String, String> = w.tags.clone().into_iter().collect();
        let conf = function_config(w, "Active");
        let m = mapping("uuid-1", stream);
        let relay = w.names.relay_function.clone();
        let lambda = vec![
            mock!(aws_sdk_lambda::Client::get_function)
                .match_requests(move |r| r.function_name() != Some(relay.as_str()))
                .then_error(|| {
                    aws_sdk_lambda::operation::get_function::GetFunctionError::generic(
                        ErrorMetadata::builder()
                            .code("ResourceNotFoundException")
                            .build(),
                    )
                }),
            mock!(aws_sdk_lambda::Client::get_function).then_output(move || {
                aws_sdk_lambda::operation::get_function::GetFunctionOutput::builder()
                    .configuration(conf.clone())
                    .set_tags(Some(fn_tags.clone()))
                    .build()
            }),
            mock!(aws_sdk_lambda::Client::list_event_source_mappings).then_output(move || {
                aws_sdk_lambda::operation::list_event_source_mappings::ListEventSourceMappingsOutput::builder()
                    .event_source_mappings(m.clone())
                    .build()
            }),
        ];

        let eb_tags: Vec<_> = w
            .tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_eventbridge::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .unwrap()
            })
            .collect();
        let bus_arn = w.env.bus_arn("orders");
        let eb = vec![
            mock!(aws_sdk_eventbridge::Client::describe_event_bus).then_output(move || {
                aws_sdk_eventbridge::operation::describe_event_bus::DescribeEventBusOutput::builder()
                    .name("orders")
                    .arn(&bus_arn)
                    .build()
            }),
            mock!(aws_sdk_eventbridge::Client::list_tags_for_resource).then_output(move || {
                aws_sdk_eventbridge::operation::list_tags_for_resource::ListTagsForResourceOutput::builder()
                    .set_tags(Some(eb_tags.clone()))
                    .build()
            }),
            mock!(aws_sdk_eventbridge::Client::list_rules).then_output(|| {
                aws_sdk_eventbridge::operation::list_rules::ListRulesOutput::builder().build()
            }),
        ];
        Rules {
            ddb,
            iam,
            lambda,
            eb,
            ..Rules::default()
        }
    }

    /// `first` rules before `self`'s.
    fn with(self, first: Rules) -> Rules {
        let cat = |mut a: Vec<Rule>, b: Vec<Rule>| {
            a.extend(b);
            a
        };
        Rules {
            ddb: cat(first.ddb, self.ddb),
            iam: cat(first.iam, self.iam),
            lambda: cat(first.lambda, self.lambda),
            eb: cat(first.eb, self.eb),
            sqs: cat(first.sqs, self.sqs),
            cw: cat(first.cw, self.cw),
        }
    }
}

struct Mocked {
    engine: Engine,
    calls: Arc<Mutex<Vec<CallInfo>>>,
}

impl Mocked {
    fn mutating(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.mutating)
            .map(|c| c.operation.clone())
            .collect()
    }
}

/// The relay's log group, in sync (these tests are about other resources).
fn log_rules(w: &World) -> Vec<Rule> {
    use aws_sdk_cloudwatchlogs::{Client, operation, types::LogGroup};
    let name = Names::log_group(&w.names.relay_function);
    let arn = w.env.log_group_arn(&w.names.relay_function);
    let tags: HashMap<String, String> = w.tags.clone().into_iter().collect();
    vec![
        mock!(Client::describe_log_groups).then_output(move || {
            operation::describe_log_groups::DescribeLogGroupsOutput::builder()
                .log_groups(
                    LogGroup::builder()
                        .log_group_name(&name)
                        .log_group_arn(&arn)
                        .retention_in_days(30)
                        .build(),
                )
                .build()
        }),
        mock!(Client::list_tags_for_resource).then_output(move || {
            operation::list_tags_for_resource::ListTagsForResourceOutput::builder()
                .set_tags(Some(tags.clone()))
                .build()
        }),
    ]
}

/// The queues the spec names exist (pre-flight) and are empty (health).
fn queue_rules() -> Vec<Rule> {
    use aws_sdk_sqs::{Client, operation, types::QueueAttributeName};
    vec![
        mock!(Client::get_queue_url).then_output(|| {
            operation::get_queue_url::GetQueueUrlOutput::builder()
                .queue_url("https://sqs.us-east-1.amazonaws.com/123456789012/q")
                .build()
        }),
        mock!(Client::get_queue_attributes).then_output(|| {
            operation::get_queue_attributes::GetQueueAttributesOutput::builder()
                .attributes(QueueAttributeName::ApproximateNumberOfMessages, "0")
                .build()
        }),
    ]
}

/// Alarms: none yet, creating one succeeds, no metric datapoints.
fn alarm_rules() -> Vec<Rule> {
    use aws_sdk_cloudwatch::{Client, operation};
    vec![
        mock!(Client::describe_alarms)
            .then_output(|| operation::describe_alarms::DescribeAlarmsOutput::builder().build()),
        mock!(Client::put_metric_alarm)
            .then_output(|| operation::put_metric_alarm::PutMetricAlarmOutput::builder().build()),
        mock!(Client::delete_alarms)
            .then_output(|| operation::delete_alarms::DeleteAlarmsOutput::builder().build()),
        mock!(Client::get_metric_data)
            .then_output(|| operation::get_metric_data::GetMetricDataOutput::builder().build()),
    ]
}

fn engine(rules: Rules) -> Mocked {
    engine_with_artifacts(rules, fixtures())
}

fn engine_with_artifacts(rules: Rules, artifacts_dir: PathBuf) -> Mocked {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("AKID", "SECRET", None, None, "mock"),
        ))
        .http_client(create_mock_http_client())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    fn interceptor(rules: &[Rule]) -> MockResponseInterceptor {
        rules.iter().fold(
            MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
            |i, r| i.with_rule(r),
        )
    }
    let clients = AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(interceptor(&rules.ddb))
                .build(),
        ),
        iam: aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&sdk)
                .interceptor(interceptor(&rules.iam))
                .build(),
        ),
        lambda: aws_sdk_lambda::Client::from_conf(
            aws_sdk_lambda::config::Builder::from(&sdk)
                .interceptor(interceptor(&rules.lambda))
                .build(),
        ),
        eventbridge: aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(&sdk)
                .interceptor(interceptor(&rules.eb))
                .build(),
        ),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .interceptor(interceptor(&[]))
                .build(),
        ),
        // Pre-flight looks up the queues the spec names: they exist.
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&sdk)
                .interceptor(interceptor(&[rules.sqs, queue_rules()].concat()))
                .build(),
        ),
        logs: aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&sdk)
                .interceptor(interceptor(&log_rules(&World::new())))
                .build(),
        ),
        cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&sdk)
                .interceptor(interceptor(&[rules.cw, alarm_rules()].concat()))
                .build(),
        ),
        dynamodbstreams: aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
                .interceptor(interceptor(&[]))
                .build(),
        ),
    };
    let calls: Arc<Mutex<Vec<CallInfo>>> = Arc::default();
    let sink = calls.clone();
    let engine = Engine::from_clients(
        clients,
        EngineConfig {
            cluster_id: CLUSTER.into(),
            allow_adoption: false,
            allow_delete_adopted_tables: false,
            permissions_boundary_arn: None,
            artifacts_dir,
        },
    )
    .with_call_observer(Arc::new(move |c: &CallInfo| {
        sink.lock().unwrap().push(c.clone())
    }));
    Mocked { engine, calls }
}

fn condition(out: &Outcome, t: ConditionType) -> (String, String, String) {
    let c = out.status.condition(t).expect("condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn in_sync_pipeline_is_ready_with_no_mutating_call() {
    let w = World::new();
    let m = engine(Rules::in_sync(&w, OLD_STREAM));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.status.is_ready(), "{:#?}", out.status);
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert_eq!(m.mutating(), Vec::<String>::new());
    // The observer saw the reads (so "no mutating call" is not vacuous).
    let reads: Vec<String> = m
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.operation.clone())
        .collect();
    assert!(reads.contains(&"DescribeTable".to_owned()), "{reads:?}");
    assert!(reads.contains(&"GetFunction".to_owned()), "{reads:?}");
    assert_eq!(out.status.observed_generation, Some(3));
    assert_eq!(out.requeue_after, None);
}

#[tokio::test]
async fn re_enabled_stream_gets_a_new_arn_and_the_mapping_is_recreated_on_it() {
    use aws_sdk_dynamodb::operation::update_table::UpdateTableOutput;
    let w = World::new();
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .match_requests(|r| {
            r.stream_specification().is_some_and(|s| {
                s.stream_enabled() && s.stream_view_type().map(|v| v.as_str()) == Some("NEW_IMAGE")
            })
        })
        .then_output(|| {
            UpdateTableOutput::builder()
                .table_description(table(Some(NEW_STREAM)))
                .build()
        });
    let disabled = mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
        aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput::builder()
            .table(table(None))
            .build()
    });
    let put_policy = mock!(aws_sdk_iam::Client::put_role_policy)
        .match_requests(|r| r.policy_document().is_some_and(|d| d.contains(NEW_STREAM)))
        .then_output(|| {
            aws_sdk_iam::operation::put_role_policy::PutRolePolicyOutput::builder().build()
        });
    let delete = mock!(aws_sdk_lambda::Client::delete_event_source_mapping)
        .match_requests(|r| r.uuid() == Some("uuid-1"))
        .then_output(|| {
            aws_sdk_lambda::operation::delete_event_source_mapping::DeleteEventSourceMappingOutput::builder()
                .uuid("uuid-1")
                .state("Deleting")
                .build()
        });
    let create = mock!(aws_sdk_lambda::Client::create_event_source_mapping)
        .match_requests(|r| {
            r.event_source_arn() == Some(NEW_STREAM)
                && r.batch_size() == Some(100)
                && r.function_response_types().len() == 1
                && r.filter_criteria()
                    .and_then(|f| f.filters().first())
                    .and_then(|f| f.pattern())
                    == Some(r#"{"eventName":["INSERT"]}"#)
        })
        .then_output(|| {
            aws_sdk_lambda::operation::create_event_source_mapping::CreateEventSourceMappingOutput::builder()
                .uuid("uuid-2")
                .event_source_arn(NEW_STREAM)
                .state("Creating")
                .build()
        });
    let rules = Rules::in_sync(&w, OLD_STREAM).with(Rules {
        ddb: vec![disabled, update],
        iam: vec![put_policy],
        lambda: vec![delete, create],
        ..Rules::default()
    });
    let m = engine(rules);
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        m.mutating(),
        vec![
            "UpdateTable",
            "PutRolePolicy",
            "DeleteEventSourceMapping",
            "CreateEventSourceMapping"
        ],
        "{:#?}",
        out.actions
    );
    assert_eq!(out.status.stream_arn.as_deref(), Some(NEW_STREAM));
    assert_eq!(
        out.status.event_source_mapping_uuid.as_deref(),
        Some("uuid-2")
    );
    assert!(
        out.actions
            .iter()
            .any(|a| a.verb == Verb::Update && a.detail.contains("stream: disabled -> NEW_IMAGE"))
    );
    // The new mapping is still Creating: Relay is Progressing and a requeue is asked for.
    let (status, reason, _) = condition(&out, ConditionType::RelayReady);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Progressing"));
    assert!(out.requeue_after.is_some());
    assert!(!out.status.is_ready());
}

#[tokio::test]
async fn throttling_is_transient_and_progressing_with_a_requeue_never_aws_error() {
    use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
    let w = World::new();
    let throttled = mock!(aws_sdk_dynamodb::Client::describe_table).then_error(|| {
        DescribeTableError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate of requests exceeds the allowed throughput.")
                .build(),
        )
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        ddb: vec![throttled],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    let err = out.error.clone().expect("error");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.to_string().contains("ThrottlingException"));
    // Issue 15: a throttle slows the pipeline down, it does not fail it.
    let (status, reason, message) = condition(&out, ConditionType::TableReady);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Progressing"));
    assert!(message.contains("DescribeTable"));
    assert!(out.requeue_after.is_some());
    assert!(m.mutating().is_empty());
}

#[tokio::test]
async fn access_denied_is_reported_on_its_component_with_code_and_message() {
    use aws_sdk_iam::operation::get_role::GetRoleError;
    let w = World::new();
    let denied = mock!(aws_sdk_iam::Client::get_role).then_error(|| {
        GetRoleError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("User: arn:aws:iam::123456789012:user/op is not authorized to perform: iam:GetRole")
                .build(),
        )
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        iam: vec![denied],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    let err = out.error.clone().expect("error");
    assert_eq!(err.reason(), Reason::AccessDenied);
    let (status, reason, message) = condition(&out, ConditionType::RelayReady);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AccessDenied")
    );
    assert!(
        message.contains("iam:GetRole") && message.contains("AccessDenied"),
        "{message}"
    );
    let (ts, tr, _) = condition(&out, ConditionType::TableReady);
    assert_eq!((ts.as_str(), tr.as_str()), ("True", "Reconciled"));
    let (ready, ready_reason, _) = condition(&out, ConditionType::Ready);
    assert_eq!(
        (ready.as_str(), ready_reason.as_str()),
        ("False", "AccessDenied")
    );
    assert_eq!(out.requeue_after, None, "terminal: no hot loop");
}

#[tokio::test]
async fn pending_function_is_progressing_and_nothing_waits_on_it_blindly() {
    let w = World::new();
    let fn_tags: HashMap<String, String> = w.tags.clone().into_iter().collect();
    let conf = function_config(&w, "Pending");
    let relay = w.names.relay_function.clone();
    let pending = mock!(aws_sdk_lambda::Client::get_function)
        .match_requests(move |r| r.function_name() == Some(relay.as_str()))
        .then_output(move || {
            aws_sdk_lambda::operation::get_function::GetFunctionOutput::builder()
                .configuration(conf.clone())
                .set_tags(Some(fn_tags.clone()))
                .build()
        });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        lambda: vec![pending],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let (status, reason, message) = condition(&out, ConditionType::RelayReady);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Progressing"));
    assert!(message.contains("Pending"), "{message}");
    assert!(out.requeue_after.is_some());
    assert!(m.mutating().is_empty(), "{:?}", m.mutating());
    // The mapping is not touched while the relay is Pending.
    assert!(
        !m.calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.operation == "ListEventSourceMappings")
    );
}

#[tokio::test]
async fn role_not_yet_assumable_is_progressing_not_an_error() {
    use aws_sdk_lambda::operation::create_function::CreateFunctionError;
    use aws_sdk_lambda::operation::get_function::GetFunctionError;
    let w = World::new();
    let missing = mock!(aws_sdk_lambda::Client::get_function).then_error(|| {
        GetFunctionError::generic(
            ErrorMetadata::builder()
                .code("ResourceNotFoundException")
                .message("Function not found")
                .build(),
        )
    });
    let not_assumable = mock!(aws_sdk_lambda::Client::create_function).then_error(|| {
        CreateFunctionError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameterValueException")
                .message("The role defined for the function cannot be assumed by Lambda.")
                .build(),
        )
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        lambda: vec![missing, not_assumable],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let (status, reason, message) = condition(&out, ConditionType::RelayReady);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Progressing"));
    assert!(message.contains("not assumable"), "{message}");
    assert!(out.requeue_after.is_some());
}

#[tokio::test]
async fn sdk_config_retries_throttling_and_5xx_with_backoff() {
    let conf = outbox_operator::engine::aws_sdk_config(
        Some("eu-west-1".into()),
        Some("http://127.0.0.1:1".into()),
    )
    .await;
    let retry = conf.retry_config().expect("retry config");
    assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
    assert!(retry.max_attempts() >= 3);
    assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
    assert_eq!(conf.endpoint_url(), Some("http://127.0.0.1:1"));
    let timeouts = conf.timeout_config().expect("timeouts");
    assert!(timeouts.operation_timeout().is_some() && timeouts.connect_timeout().is_some());
}

#[tokio::test]
async fn missing_artifact_is_invalid_spec_naming_the_path() {
    let w = World::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-such-artifacts");
    let m = engine_with_artifacts(Rules::in_sync(&w, OLD_STREAM), dir.clone());
    let out = m.engine.reconcile(&pipeline()).await;
    let err = out.error.clone().expect("error");
    assert_eq!(err.reason(), Reason::InvalidSpec);
    let (status, reason, message) = condition(&out, ConditionType::RelayReady);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    let expected = dir.join("x86_64/relay/bootstrap.zip");
    assert!(
        message.contains(&expected.display().to_string()),
        "{message}"
    );
    assert_eq!(out.requeue_after, None);
    assert!(m.mutating().is_empty());
}

#[tokio::test]
async fn a_pipeline_region_selects_clients_for_that_region() {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_types::region::Region::new("us-east-1"))
        .build();
    let engine = Engine::new(
        &sdk,
        EngineConfig {
            cluster_id: CLUSTER.into(),
            allow_adoption: false,
            allow_delete_adopted_tables: false,
            permissions_boundary_arn: None,
            artifacts_dir: fixtures(),
        },
    );
    let region = |c: &AwsClients| {
        [
            c.dynamodb.config().region().map(|r| r.to_string()),
            c.lambda.config().region().map(|r| r.to_string()),
            c.iam.config().region().map(|r| r.to_string()),
            c.eventbridge.config().region().map(|r| r.to_string()),
            c.s3.config().region().map(|r| r.to_string()),
        ]
    };
    let eu = engine.clients_for(Some("eu-west-1"));
    assert!(
        region(&eu)
            .iter()
            .all(|r| r.as_deref() == Some("eu-west-1"))
    );
    let default = engine.clients_for(None);
    assert!(
        region(&default)
            .iter()
            .all(|r| r.as_deref() == Some("us-east-1"))
    );
}

fn healthy(out: &Outcome) -> (String, String, String) {
    condition(out, ConditionType::Healthy)
}

#[tokio::test]
async fn an_in_sync_pipeline_without_records_is_healthy_idle_and_ready() {
    let w = World::new();
    let m = engine(Rules::in_sync(&w, OLD_STREAM));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.status.is_ready(), "{:#?}", out.status);
    let (status, reason, _) = healthy(&out);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Idle"));
    let dp = out.status.data_plane.expect("dataPlane");
    assert_eq!(dp.mapping_state.as_deref(), Some("Enabled"));
    assert_eq!(dp.parked_batches.as_deref(), Some("0"));
    assert!(!dp.checked_at.is_empty());
}

#[tokio::test]
async fn parked_batches_in_an_sqs_destination_make_the_pipeline_unhealthy_not_unready() {
    let w = World::new();
    let parked = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(|| {
        aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput::builder()
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                "7",
            )
            .build()
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        sqs: vec![parked],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.status.is_ready(), "{:#?}", out.status);
    let (status, reason, message) = healthy(&out);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BatchesParked")
    );
    assert!(message.contains('7'), "{message}");
    assert!(m.mutating().is_empty(), "{:?}", m.mutating());
}

#[tokio::test]
async fn relay_errors_in_the_metrics_are_relay_failing() {
    let w = World::new();
    let errors = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
        use aws_sdk_cloudwatch::types::MetricDataResult;
        let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput::builder()
            .metric_data_results(
                MetricDataResult::builder()
                    .id("errors")
                    .timestamps(now)
                    .values(3.0)
                    .build(),
            )
            .metric_data_results(
                MetricDataResult::builder()
                    .id("age")
                    .timestamps(now)
                    .values(1_000.0)
                    .build(),
            )
            .build()
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        cw: vec![errors],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    let (status, reason, message) = healthy(&out);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RelayFailing")
    );
    assert!(message.contains("3 invocations"), "{message}");
    let dp = out.status.data_plane.expect("dataPlane");
    assert_eq!(
        (dp.relay_errors, dp.iterator_age_seconds),
        (Some(3), Some(1))
    );
}

#[tokio::test]
async fn metrics_access_denied_is_unknown_naming_the_permission() {
    let w = World::new();
    let denied = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_error(|| {
        aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform cloudwatch:GetMetricData")
                .build(),
        )
    });
    let m = engine(Rules::in_sync(&w, OLD_STREAM).with(Rules {
        cw: vec![denied],
        ..Default::default()
    }));
    let out = m.engine.reconcile(&pipeline()).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.status.is_ready(), "{:#?}", out.status);
    let (status, reason, message) = healthy(&out);
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "Unknown"));
    assert!(
        message.contains("cloudwatch:GetMetricData is denied"),
        "{message}"
    );
}
