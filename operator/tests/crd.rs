//! The OutboxPipeline API as users and the API server see it: the generated CRD, the examples,
//! and the admission rules (schema + CEL) with messages that name the field.

use outbox_operator::crd::OutboxPipeline;
use outbox_operator::manifest::{self, FieldError, ManifestError};
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

fn crd_value() -> Value {
    serde_saphyr::from_str(&repo_file("crds/outboxpipelines.yaml")).expect("crd yaml parses")
}

fn lifecycle() -> Value {
    serde_saphyr::from_str(&repo_file("examples/user-lifecycle.yaml")).expect("example parses")
}

fn errors_of(value: Value) -> Vec<FieldError> {
    match manifest::check_value("test", value) {
        Ok(_) => Vec::new(),
        Err(ManifestError::Invalid { errors, .. }) => errors,
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

/// Asserts the manifest is rejected and some error names `field` (in its path or message).
fn assert_rejected(value: Value, field: &str) -> Vec<FieldError> {
    let errors = errors_of(value);
    assert!(!errors.is_empty(), "expected a rejection naming {field}");
    assert!(
        errors
            .iter()
            .any(|e| e.field.contains(field) || e.message.contains(field)),
        "no error names {field}: {errors:?}"
    );
    errors
}

#[test]
fn checked_in_crd_is_the_generated_one() {
    let generated = outbox_operator::crd_yaml().expect("crd serializes");
    assert!(
        generated == repo_file("crds/outboxpipelines.yaml"),
        "crds/outboxpipelines.yaml is not the output of `outbox-operator crd`: run `make crd`"
    );
}

#[test]
fn crd_has_status_subresource_printer_columns_and_short_name() {
    let crd = crd_value();
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["obp"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for wanted in ["Ready", "Healthy", "Lag", "Table", "Bus", "Age"] {
        assert!(
            columns.contains(&wanted),
            "missing column {wanted}: {columns:?}"
        );
    }
}

fn walk<'a>(path: String, node: &'a Value, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(&path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            walk(format!("{path}.{k}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(format!("{path}[]"), items, visit);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(format!("{path}{{}}"), extra, visit);
    }
}

fn schema() -> Value {
    crd_value()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn every_spec_field_has_a_description() {
    let schema = schema();
    let mut missing = Vec::new();
    walk(
        "spec".into(),
        &schema["properties"]["spec"],
        &mut |path, node| {
            // Array items and map values are described by their field.
            if path.ends_with("[]") || path.ends_with("{}") {
                return;
            }
            if node
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                missing.push(path.to_owned());
            }
        },
    );
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
}

#[test]
fn crd_carries_cel_rules() {
    let mut rules = Vec::new();
    walk("".into(), &schema(), &mut |path, node| {
        if let Some(v) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for r in v {
                rules.push((path.to_owned(), r["rule"].as_str().unwrap_or("").to_owned()));
            }
        }
    });
    assert!(
        rules.len() >= 10,
        "expected the CEL rules in the CRD, found {rules:?}"
    );
    assert!(
        rules.iter().any(|(_, r)| r.contains("oldSelf")),
        "immutability rules missing"
    );
}

#[test]
fn crd_schema_is_structural() {
    // A structural schema has a type on every node, except where
    // x-kubernetes-preserve-unknown-fields allows anything; that is allowed only on eventPattern.
    let mut problems = Vec::new();
    walk("".into(), &schema(), &mut |path, node| {
        let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if preserve && !path.ends_with(".eventPattern") {
            problems.push(format!(
                "{path}: preserve-unknown-fields outside eventPattern"
            ));
        }
        if node.get("type").and_then(Value::as_str).is_none() {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in ["oneOf", "anyOf", "allOf", "$ref", "not"] {
            if node.get(forbidden).is_some() {
                problems.push(format!(
                    "{path}: {forbidden} (not structural at this level)"
                ));
            }
        }
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_list_and_string_under_a_cel_rule_is_bounded() {
    let mut problems = Vec::new();
    let schema = schema();
    walk("".into(), &schema, &mut |rule_path, node| {
        if node.get("x-kubernetes-validations").is_none() || rule_path.is_empty() {
            return;
        }
        walk(
            rule_path.to_owned(),
            node,
            &mut |path, n| match n.get("type").and_then(Value::as_str) {
                Some("string") if n.get("maxLength").is_none() => problems.push(format!(
                    "{path}: string without maxLength (rule at {rule_path})"
                )),
                Some("array") if n.get("maxItems").is_none() => problems.push(format!(
                    "{path}: array without maxItems (rule at {rule_path})"
                )),
                Some("object")
                    if n.get("additionalProperties").is_some()
                        && n.get("maxProperties").is_none() =>
                {
                    problems.push(format!(
                        "{path}: map without maxProperties (rule at {rule_path})"
                    ))
                }
                _ => {}
            },
        );
    });
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_example_parses_and_validates() {
    let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let docs = manifest::read_path(path.to_str().expect("utf-8 path"))
            .unwrap_or_else(|e| panic!("{} is invalid: {e}", path.display()));
        assert!(!docs.is_empty(), "{} has no pipeline", path.display());
        count += docs.len();
    }
    assert!(count >= 2, "expected both examples, found {count}");
}

#[test]
fn user_created_example_is_the_samples_pipeline() {
    let docs = manifest::parse_documents(
        "user-created.yaml",
        &repo_file("examples/user-created.yaml"),
    )
    .expect("valid");
    let p: &OutboxPipeline = &docs[0].pipeline;
    assert_eq!(p.spec.table.partition_key.name, "id");
    assert_eq!(p.spec.relay.events[0].detail_type, "UserCreated");
    assert!(p.spec.writer.enabled);
    assert_eq!(p.spec.consumers[0].name, "user-created");
    // Defaults a user relies on without writing them.
    assert_eq!(p.spec.relay.batch_size, 100);
    assert_eq!(p.spec.relay.maximum_retry_attempts, 10);
    assert!(p.spec.table.deletion_protection && p.spec.table.point_in_time_recovery);
}

#[test]
fn batch_size_zero_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["relay"]["batchSize"] = json!(0);
    assert_rejected(v, "spec.relay.batchSize");
}

#[test]
fn duplicate_consumer_names_are_rejected() {
    let mut v = lifecycle();
    v["spec"]["consumers"][1]["name"] = json!("user-deleted");
    assert_rejected(v, "consumer names must be unique");
}

#[test]
fn regions_of_every_partition_are_accepted_and_others_rejected() {
    for region in [
        "eu-west-1",
        "us-gov-west-1",
        "cn-north-1",
        "ap-southeast-5",
        "eusc-de-east-1",
    ] {
        let mut v = lifecycle();
        v["spec"]["region"] = json!(region);
        assert!(errors_of(v).is_empty(), "{region} is a region");
    }
    for region in ["eu_west_1", "EU-WEST-1", "westeurope", "eu-west"] {
        let mut v = lifecycle();
        v["spec"]["region"] = json!(region);
        assert_rejected(v, "spec.region");
    }
}

#[test]
fn bad_table_name_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["table"]["name"] = json!("bad name!");
    assert_rejected(v, "spec.table.name");
}

#[test]
fn a_log_retention_cloudwatch_does_not_accept_is_rejected_and_defaults_apply() {
    let mut v = lifecycle();
    v["spec"]["monitoring"] = json!({"logRetentionDays": 8});
    assert_rejected(v, "spec.monitoring.logRetentionDays");
    let mut v = lifecycle();
    v["spec"]["monitoring"] = json!({"logRetentionDays": 14, "alarmActions": ["arn:aws:sns:eu-west-1:123456789012:oncall"]});
    assert!(errors_of(v).is_empty());
    let p: OutboxPipeline = serde_json::from_value(lifecycle()).unwrap();
    assert!(p.spec.monitoring.enabled);
    assert_eq!(p.spec.monitoring.log_retention_days, 30);
    assert_eq!(p.spec.monitoring.max_lag_seconds, 300);
}

#[test]
fn an_alarm_action_that_is_not_an_sns_topic_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["monitoring"] = json!({"alarmActions": ["arn:aws:sqs:eu-west-1:123456789012:q"]});
    assert_rejected(v, "spec.monitoring.alarmActions");
}

#[test]
fn remove_with_new_image_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["relay"]["events"][2]["payload"] = json!("newImage");
    let errors = assert_rejected(v, "spec.relay.events");
    assert!(
        errors.iter().any(|e| e.message.contains("REMOVE")),
        "{errors:?}"
    );
}

#[test]
fn change_type_mapped_twice_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["relay"]["events"][1]["change"] = json!("INSERT");
    let errors = assert_rejected(v, "spec.relay.events");
    assert!(
        errors.iter().any(|e| e.message.contains("at most once")),
        "{errors:?}"
    );
}

#[test]
fn writer_on_numeric_key_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["table"]["partitionKey"]["type"] = json!("N");
    assert_rejected(v, "spec.writer.enabled");
}

#[test]
fn writer_with_sort_key_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["table"]["sortKey"] = json!({"name": "sk", "type": "S"});
    assert_rejected(v, "spec.writer.enabled");
}

#[test]
fn old_image_on_new_image_stream_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["table"]["streamViewType"] = json!("NEW_IMAGE");
    assert_rejected(v, "streamViewType");
}

#[test]
fn keys_only_stream_needs_keys_payloads() {
    let mut v = lifecycle();
    v["spec"]["table"]["streamViewType"] = json!("KEYS_ONLY");
    assert_rejected(v, "KEYS_ONLY");
    assert!(errors_of(lifecycle_keys_only()).is_empty());
}

fn lifecycle_keys_only() -> Value {
    let mut v = lifecycle();
    v["spec"]["table"]["streamViewType"] = json!("KEYS_ONLY");
    for e in v_events_mut(&mut v) {
        e["payload"] = json!("keys");
    }
    v
}

fn v_events_mut(v: &mut Value) -> impl Iterator<Item = &mut Value> {
    v["spec"]["relay"]["events"]
        .as_array_mut()
        .expect("events")
        .iter_mut()
}

#[test]
fn unknown_field_is_rejected_with_its_path() {
    let mut v = lifecycle();
    v["spec"]["relay"]["batchSzie"] = json!(10);
    assert_rejected(v, "batchSzie");
}

#[test]
fn provisioned_billing_needs_capacities() {
    let mut v = lifecycle();
    v["spec"]["table"]["billingMode"] = json!("PROVISIONED");
    assert_rejected(v.clone(), "provisionedThroughput");
    v["spec"]["table"]["provisionedThroughput"] =
        json!({"readCapacityUnits": 5, "writeCapacityUnits": 5});
    assert!(errors_of(v).is_empty());
}

#[test]
fn consumer_target_allows_one_kind() {
    let mut v = lifecycle();
    v["spec"]["consumers"][0]["target"] = json!({
        "lambdaFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:mine",
        "sqsQueueArn": "arn:aws:sqs:us-east-1:123456789012:q"
    });
    assert_rejected(v, "at most one");
}

#[test]
fn malformed_arn_is_rejected() {
    let mut v = lifecycle();
    v["spec"]["relay"]["onFailureDestinationArn"] = json!("arn:aws:dynamodb:::nope");
    assert_rejected(v, "spec.relay.onFailureDestinationArn");
}

#[test]
fn reserved_tag_keys_are_rejected() {
    let mut v = lifecycle();
    v["spec"]["tags"]["outbox.dev/owner"] = json!("me");
    assert_rejected(v, "spec.tags");
}

#[test]
fn missing_name_and_wrong_kind_are_named() {
    let mut v = lifecycle();
    v["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("name");
    assert_rejected(v, "metadata.name");
    let mut v = lifecycle();
    v["kind"] = json!("Pipeline");
    assert_rejected(v, "kind");
}

#[test]
fn invalid_yaml_names_the_file() {
    let err = manifest::parse_documents("broken.yaml", "spec: [unclosed").unwrap_err();
    assert!(err.to_string().contains("broken.yaml"), "{err}");
}

#[test]
fn second_document_problem_names_the_document() {
    let text = format!(
        "{}\n---\n{}",
        repo_file("examples/user-created.yaml"),
        repo_file("examples/user-lifecycle.yaml").replace("batchSize: 100", "batchSize: 0")
    );
    let err = manifest::parse_documents("two.yaml", &text).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("two.yaml document 2"), "{msg}");
    assert!(msg.contains("spec.relay.batchSize"), "{msg}");
}

fn typed(v: Value) -> OutboxPipeline {
    manifest::check_value("test", v).expect("valid")
}

fn update_errors(old: Value, new: Value) -> Vec<FieldError> {
    manifest::validate_update(&typed(new), &typed(old))
        .err()
        .unwrap_or_default()
}

#[test]
fn changed_key_schema_is_rejected_on_update() {
    let old = lifecycle();
    let mut new = lifecycle();
    new["spec"]["table"]["partitionKey"]["name"] = json!("userId");
    let errors = update_errors(old, new);
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("spec.table.partitionKey: field is immutable")),
        "{errors:?}"
    );
}

#[test]
fn changed_stream_view_type_is_rejected_on_update() {
    let mut old = lifecycle();
    old["spec"]["relay"]["events"][2]["payload"] = json!("keys");
    old["spec"]["relay"]["events"]
        .as_array_mut()
        .expect("events")
        .truncate(2);
    let mut new = old.clone();
    new["spec"]["table"]["streamViewType"] = json!("NEW_IMAGE");
    let errors = update_errors(old, new);
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("spec.table.streamViewType: field is immutable")),
        "{errors:?}"
    );
}

#[test]
fn changed_table_name_is_rejected_on_update() {
    let mut old = lifecycle();
    old["spec"]["table"]["name"] = json!("users-a");
    let mut new = old.clone();
    new["spec"]["table"]["name"] = json!("users-b");
    let errors = update_errors(old, new);
    assert!(
        errors.iter().any(|e| e
            .to_string()
            .contains("spec.table.name: field is immutable")),
        "{errors:?}"
    );
}

#[test]
fn unchanged_update_and_mutable_changes_pass() {
    let old = lifecycle();
    let mut new = lifecycle();
    new["spec"]["relay"]["batchSize"] = json!(500);
    new["spec"]["consumers"][0]["eventPattern"] = json!({"source": ["other"]});
    assert!(update_errors(old, new).is_empty());
}

/// CEL update errors for raw objects, as the API server sees them: a field left out of the
/// manifest is absent (typed values always serialize it), and schema defaults apply first.
fn raw_update_errors(schema: &Value, old: &Value, new: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(schema, new, Some(old)) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

fn openapi() -> Value {
    manifest::openapi_schema().clone()
}

/// The lifecycle pipeline with keys payloads, valid with every stream view type.
fn keys_pipeline() -> Value {
    let mut v = lifecycle_keys_only();
    v["spec"]["table"]
        .as_object_mut()
        .expect("table")
        .remove("streamViewType");
    v
}

fn with_view_type(mut v: Value, view: &str) -> Value {
    v["spec"]["table"]["streamViewType"] = json!(view);
    v
}

fn refuses(errors: &[String], wanted: &str) -> bool {
    errors.iter().any(|e| e.starts_with(wanted))
}

#[test]
fn removing_or_adding_stream_view_type_is_refused_on_update() {
    let schema = openapi();
    let absent = keys_pipeline();
    let immutable = "spec.table.streamViewType: field is immutable";
    for view in ["NEW_AND_OLD_IMAGES", "KEYS_ONLY"] {
        let present = with_view_type(absent.clone(), view);
        let removed = raw_update_errors(&schema, &present, &absent);
        assert!(refuses(&removed, immutable), "{view} removed: {removed:?}");
        let added = raw_update_errors(&schema, &absent, &present);
        assert!(refuses(&added, immutable), "{view} added: {added:?}");
    }
    // Writing out the default, or dropping it, keeps the same stream.
    let explicit = with_view_type(absent.clone(), "NEW_IMAGE");
    assert!(raw_update_errors(&schema, &absent, &explicit).is_empty());
    assert!(raw_update_errors(&schema, &explicit, &absent).is_empty());
}

/// Without schema defaulting (an object stored before a default existed, or a validator that
/// does not default) a rule on the optional field itself never sees the field disappear.
#[test]
fn stream_view_type_immutability_does_not_depend_on_schema_defaults() {
    fn strip_defaults(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("default");
                map.values_mut().for_each(strip_defaults);
            }
            Value::Array(items) => items.iter_mut().for_each(strip_defaults),
            _ => {}
        }
    }
    let mut schema = openapi();
    strip_defaults(&mut schema);
    let absent = keys_pipeline();
    let present = with_view_type(absent.clone(), "KEYS_ONLY");
    let errors = raw_update_errors(&schema, &present, &absent);
    assert!(
        refuses(&errors, "spec.table.streamViewType: field is immutable"),
        "{errors:?}"
    );
}

#[test]
fn removing_or_adding_table_name_or_sort_key_is_refused_on_update() {
    let schema = openapi();
    let mut base = keys_pipeline();
    base["spec"]["writer"]["enabled"] = json!(false);
    let mut named = base.clone();
    named["spec"]["table"]["name"] = json!("users-a");
    let mut sorted = base.clone();
    sorted["spec"]["table"]["sortKey"] = json!({"name": "sk", "type": "S"});
    for (with, field) in [(named, "spec.table.name"), (sorted, "spec.table.sortKey")] {
        let wanted = format!("{field}: field is immutable");
        let removed = raw_update_errors(&schema, &with, &base);
        assert!(refuses(&removed, &wanted), "{field} removed: {removed:?}");
        let added = raw_update_errors(&schema, &base, &with);
        assert!(refuses(&added, &wanted), "{field} added: {added:?}");
    }
}

#[test]
fn cel_errors_name_the_field_once() {
    let mut v = lifecycle();
    v["spec"]["consumers"][1]["name"] = json!("user-deleted");
    let errors = errors_of(v.clone());
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["spec.consumers: consumer names must be unique"]);
    let err = manifest::check_value("pipeline.yaml document 1", v).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pipeline.yaml document 1: spec.consumers: consumer names must be unique"
    );

    let mut v = lifecycle();
    v["spec"]["relay"]["events"][0]["source"] = json!("aws.users");
    let shown: Vec<String> = errors_of(v).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["spec.relay.events[0].source: may not start with 'aws.' (reserved for AWS services)"]
    );
}

#[test]
fn no_cel_message_repeats_the_field_path_it_is_reported_under() {
    // The API server and the CLI both print "<field path>: <message>"; a message starting
    // with a path would name the field twice.
    let mut problems = Vec::new();
    walk("".into(), &schema(), &mut |path, node| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let message = rule["message"].as_str().unwrap_or("");
            if message.is_empty() || message.starts_with("spec.") {
                problems.push(format!("{path}: {message:?}"));
            }
        }
    });
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn empty_or_non_object_event_pattern_is_rejected() {
    for bad in [
        json!({}),
        json!("myapp.users"),
        json!(5),
        json!(["myapp.users"]),
    ] {
        let mut v = lifecycle();
        v["spec"]["consumers"][0]["eventPattern"] = bad.clone();
        let errors = assert_rejected(v, "spec.consumers[0].eventPattern");
        assert!(
            errors
                .iter()
                .all(|e| e.field == "spec.consumers[0].eventPattern"),
            "{bad}: {errors:?}"
        );
    }
}

#[test]
fn crd_refuses_an_empty_event_pattern_at_admission() {
    let pattern = &schema()["properties"]["spec"]["properties"]["consumers"]["items"]["properties"]
        ["eventPattern"];
    assert_eq!(pattern["minProperties"], json!(1), "{pattern}");
    assert_eq!(pattern["type"], json!("object"), "{pattern}");
}

fn lifecycle_text() -> String {
    repo_file("examples/user-lifecycle.yaml")
}

#[test]
fn yaml_is_read_as_yaml_1_2_so_n_and_yes_stay_strings() {
    let text = lifecycle_text()
        .replace(
            "  writer:\n    enabled: true",
            "  writer:\n    enabled: false",
        )
        .replace("type: S", "type: N")
        .replace(
            "team: identity",
            "team: y\n    a: yes\n    b: on\n    c: no\n    d: N\n    e: off",
        );
    let docs = manifest::parse_documents("yaml12.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let spec = &docs[0].pipeline.spec;
    assert_eq!(
        spec.table.partition_key.attribute_type,
        outbox_operator::crd::KeyType::N
    );
    for (key, value) in [
        ("team", "y"),
        ("a", "yes"),
        ("b", "on"),
        ("c", "no"),
        ("d", "N"),
        ("e", "off"),
    ] {
        assert_eq!(spec.tags.get(key).map(String::as_str), Some(value), "{key}");
    }
    // Booleans written as booleans still are.
    assert!(spec.table.deletion_protection && spec.relay.bisect_batch_on_function_error);
    assert!(!spec.writer.enabled);
}

#[test]
fn yaml_1_1_boolean_where_a_boolean_is_expected_is_named_with_a_hint() {
    for spelling in ["yes", "on", "y", "no"] {
        let text = lifecycle_text().replace(
            "  writer:\n    enabled: true",
            &format!("  writer:\n    enabled: {spelling}"),
        );
        let err = manifest::parse_documents("bool.yaml", &text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("spec.writer.enabled"), "{spelling}: {msg}");
        assert!(
            msg.contains("only true and false are booleans"),
            "{spelling}: {msg}"
        );
    }
}

fn minimal(name: &str) -> String {
    lifecycle_text().replace("name: user-lifecycle\n", &format!("name: {name}\n"))
}

#[test]
fn the_same_pipeline_twice_is_refused_naming_both_places() {
    let text = format!(
        "{}\n---\n{}\n---\n{}",
        minimal("a"),
        minimal("b"),
        minimal("a")
    );
    let docs = manifest::parse_documents("two.yaml", &text).expect("each document is valid");
    let err = manifest::reject_duplicates(&docs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "default/a is defined twice: two.yaml document 1 (default/a) and two.yaml document 3 \
         (default/a); each pipeline may appear once in the inputs"
    );
    // Same name in another namespace is another pipeline.
    let other_ns = minimal("a").replace("namespace: default", "namespace: team-b");
    let text = format!("{}\n---\n{other_ns}", minimal("a"));
    let docs = manifest::parse_documents("ns.yaml", &text).expect("valid");
    assert!(manifest::reject_duplicates(&docs).is_ok());
}

/// `status.conditions` is the standard Kubernetes condition list (what `kubectl wait
/// --for=condition=Ready` and server-side apply rely on): a list-map keyed by type, the standard
/// fields with the same required ones, and a reason description naming every reason the code
/// can set.
#[test]
fn status_conditions_are_a_standard_list_map_naming_every_reason() {
    use outbox_operator::crd::Reason;
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let item = &conditions["items"];
    let mut required: Vec<&str> = item["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["lastTransitionTime", "reason", "status", "type"]);
    let fields = item["properties"].as_object().expect("properties");
    for field in [
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    ] {
        let description = fields[field]["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "{field} has no description");
    }
    let reasons = fields["reason"]["description"].as_str().unwrap_or_default();
    for reason in Reason::ALL {
        assert!(
            reasons.contains(reason.as_str()),
            "the reason description does not name {reason}: {reasons}"
        );
    }
}

/// A status as the API server returns it (conditions in the standard shape) reads into the typed
/// status and writes back unchanged, so a converged pipeline's status write stays a no-op.
#[test]
fn a_stored_status_round_trips_through_the_typed_conditions() {
    use outbox_operator::crd::{ConditionType, OutboxPipelineStatus};
    let stored = json!({
        "observedGeneration": 3,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "in sync",
            "lastTransitionTime": "2025-06-01T10:00:00Z",
            "observedGeneration": 3
        }],
        "tableName": "users"
    });
    let status: OutboxPipelineStatus = serde_json::from_value(stored.clone()).expect("status");
    assert!(status.is_ready());
    let ready = status.condition(ConditionType::Ready).expect("Ready");
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(serde_json::to_value(&status).expect("serializes"), stored);
}

fn single_table() -> Value {
    serde_saphyr::from_str(&repo_file("examples/single-table.yaml")).expect("example parses")
}

#[test]
fn single_table_example_routes_by_key_prefix_and_projects_fields() {
    let p = typed(single_table());
    let events = &p.spec.relay.events;
    assert_eq!(events.len(), 3);
    let order = events[1].to_contract();
    assert_eq!(order.detail_type, "OrderPlaced");
    assert_eq!(
        order
            .matches
            .as_ref()
            .map(|m| m.key_prefix[0].prefix.as_str()),
        Some("ORDER#")
    );
    assert_eq!(
        order.fields,
        Some(outbox_contract::Fields::Exclude(vec![
            "email".into(),
            "gsi1pk".into(),
            "gsi1sk".into(),
            "version".into(),
            "expiresAt".into()
        ]))
    );
    let cancelled = &events[2].matches.as_ref().expect("match").attributes[0];
    assert_eq!(cancelled.equals.as_deref(), Some("CANCELLED"));
}

#[test]
fn one_change_type_may_map_to_several_events_when_all_but_one_have_match() {
    let mut v = lifecycle();
    let mut order = v["spec"]["relay"]["events"][0].clone();
    order["detailType"] = json!("OrderPlaced");
    order["match"] = json!({"keyPrefix": [{"key": "id", "prefix": "ORDER#"}]});
    v["spec"]["relay"]["events"]
        .as_array_mut()
        .expect("events")
        .insert(0, order);
    assert_eq!(errors_of(v.clone()), vec![]);
    // Two entries for INSERT without match: the second could never apply.
    v["spec"]["relay"]["events"][0]
        .as_object_mut()
        .expect("entry")
        .remove("match");
    let errors = assert_rejected(v, "spec.relay.events");
    assert!(
        errors.iter().any(|e| e.message.contains("without match")),
        "{errors:?}"
    );
}

#[test]
fn an_empty_match_and_an_ambiguous_attribute_condition_are_rejected() {
    let mut v = single_table();
    v["spec"]["relay"]["events"][0]["match"] = json!({});
    let errors = assert_rejected(v, "spec.relay.events[0].match");
    assert!(
        errors.iter().any(|e| e.message.contains("at least one")),
        "{errors:?}"
    );

    let mut v = single_table();
    v["spec"]["relay"]["events"][2]["match"]["attributes"][0]["exists"] = json!(true);
    let errors = assert_rejected(v, "spec.relay.events[2].match.attributes[0]");
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("exactly one of equals or exists")),
        "{errors:?}"
    );

    let mut v = single_table();
    v["spec"]["relay"]["events"][1]["match"]["keyPrefix"] =
        json!([{"key": "sk", "prefix": "A"}, {"key": "sk", "prefix": "B"}]);
    assert_rejected(v, "one prefix per key");

    let mut v = single_table();
    v["spec"]["relay"]["events"][1]["match"]["keyPrefix"][0]["prefix"] = json!("");
    assert_rejected(v, "spec.relay.events[1].match.keyPrefix[0].prefix");
}

#[test]
fn fields_take_exactly_one_list_and_need_an_image_payload() {
    let mut v = single_table();
    v["spec"]["relay"]["events"][0]["fields"]["exclude"] = json!(["gsi1pk"]);
    let errors = assert_rejected(v, "spec.relay.events[0].fields");
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("exactly one of include or exclude")),
        "{errors:?}"
    );

    let mut v = single_table();
    v["spec"]["relay"]["events"][0]["fields"] = json!({"include": []});
    assert_rejected(v, "spec.relay.events[0].fields.include");

    let mut v = single_table();
    v["spec"]["relay"]["events"][0]["payload"] = json!("keys");
    let errors = assert_rejected(v, "spec.relay.events[0].fields");
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("payload newImage or oldImage")),
        "{errors:?}"
    );
}

#[test]
fn more_than_twenty_event_entries_are_rejected() {
    let mut v = single_table();
    let entry = v["spec"]["relay"]["events"][1].clone();
    let events: Vec<Value> = (0..21)
        .map(|i| {
            let mut e = entry.clone();
            e["match"]["keyPrefix"][0]["prefix"] = json!(format!("ORDER#{i:02}"));
            e
        })
        .collect();
    v["spec"]["relay"]["events"] = json!(events.clone());
    assert_rejected(v.clone(), "spec.relay.events");
    v["spec"]["relay"]["events"] = json!(events[..20].to_vec());
    assert_eq!(errors_of(v), vec![]);
}
