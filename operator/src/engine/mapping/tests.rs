use super::*;
use serde_json::json;

fn want(stream: &str) -> Desired {
    Desired {
        stream_arn: Some(stream.into()),
        starting_position: StartingPosition::TrimHorizon,
        settings: Settings {
            batch_size: 100,
            batching_window: 0,
            retries: 10,
            record_age: 86400,
            bisect: true,
            parallelization: 1,
            report_batch_item_failures: true,
            filters: vec![json!({"eventName": ["INSERT", "REMOVE"]})],
            on_failure: Some("arn:aws:s3:::b".into()),
        },
        filter_widened: vec![],
    }
}

fn have(d: &Desired, uuid: &str, stream: &str, state: &str) -> Observed {
    Observed {
        uuid: uuid.into(),
        stream_arn: stream.into(),
        state: state.into(),
        last_processing_result: None,
        settings: d.settings.clone(),
    }
}

#[test]
fn observed_filters_in_another_order_are_in_sync_and_a_missing_one_is_repaired() {
    let mut d = want("s1");
    d.settings.filters = vec![
        json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "ORDER#"}]}}}, "eventName": ["MODIFY"]}),
        json!({"eventName": ["INSERT"]}),
    ];
    d.settings.filters.sort_by_key(Value::to_string);
    let mut criteria = FilterCriteria::builder();
    for f in d.settings.filters.iter().rev() {
        criteria = criteria.filters(Filter::builder().pattern(f.to_string()).build());
    }
    let aws = EventSourceMappingConfiguration::builder()
        .uuid("u1")
        .event_source_arn("s1")
        .state("Enabled")
        .batch_size(100)
        .maximum_batching_window_in_seconds(0)
        .maximum_retry_attempts(10)
        .maximum_record_age_in_seconds(86400)
        .bisect_batch_on_function_error(true)
        .parallelization_factor(1)
        .function_response_types(FunctionResponseType::ReportBatchItemFailures)
        .filter_criteria(criteria.build())
        .destination_config(
            DestinationConfig::builder()
                .on_failure(OnFailure::builder().destination("arn:aws:s3:::b").build())
                .build(),
        )
        .build();
    let o = parse(&aws);
    assert!(
        diff(&d, std::slice::from_ref(&o)).changes.is_empty(),
        "{o:?}"
    );
    let mut fewer = o;
    fewer.settings.filters.pop();
    assert_eq!(
        diff(&d, &[fewer]).changes,
        vec![Change::Update {
            uuid: "u1".into(),
            what: vec!["filterCriteria"]
        }]
    );
}

#[test]
fn plan_shows_the_filter_criteria_and_why_they_are_widened() {
    let mut d = want("s1");
    d.filter_widened = vec!["exists on \"x\" cannot be expressed".into()];
    let m = Mapping {
        function: "relay".into(),
        desired: d,
    };
    let (_, created) = m.describe(&Change::Create);
    assert!(
        created.contains(r#"filter criteria [{"eventName":["INSERT","REMOVE"]}]"#),
        "{created}"
    );
    assert!(created.contains("widened: exists on"), "{created}");
    let (_, updated) = m.describe(&Change::Update {
        uuid: "u1".into(),
        what: vec!["filterCriteria"],
    });
    assert!(
        updated.starts_with("filterCriteria: filter criteria ["),
        "{updated}"
    );
}

#[test]
fn missing_mapping_is_created_and_in_sync_is_left_alone() {
    let d = want("s1");
    assert_eq!(diff(&d, &[]).changes, vec![Change::Create]);
    let o = have(&d, "u1", "s1", "Enabled");
    assert!(diff(&d, &[o]).changes.is_empty());
}

#[test]
fn new_stream_recreates_the_mapping() {
    let d = want("s2");
    let o = have(&d, "u1", "s1", "Enabled");
    assert_eq!(
        diff(&d, &[o]).changes,
        vec![
            Change::Delete {
                uuid: "u1".into(),
                why: "reads stream s1 which is no longer the table's".into()
            },
            Change::Create
        ]
    );
}

#[test]
fn disabled_or_changed_mapping_is_updated_in_place() {
    let d = want("s1");
    let mut o = have(&d, "u1", "s1", "Disabled");
    o.settings.batch_size = 7;
    assert_eq!(
        diff(&d, &[o]).changes,
        vec![Change::Update {
            uuid: "u1".into(),
            what: vec!["enabled", "batchSize"]
        }]
    );
}

#[test]
fn transitional_mapping_waits_and_duplicates_are_removed() {
    let d = want("s1");
    let a = have(&d, "u1", "s1", "Creating");
    let b = have(&d, "u2", "s1", "Enabled");
    let diff = diff(&d, &[a, b]);
    assert!(diff.settling.is_some());
    assert_eq!(
        diff.changes,
        vec![Change::Delete {
            uuid: "u2".into(),
            why: "duplicate mapping of the same stream".into()
        }]
    );
}
