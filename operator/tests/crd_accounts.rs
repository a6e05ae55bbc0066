//! The OutboxAccount CRD and the pipeline's accountRef / bus.existingArn admission rules.

use outbox_operator::crd::OutboxPipeline;
use outbox_operator::manifest::{self, FieldError};
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {full}: {e}"))
}

fn created() -> Value {
    serde_saphyr::from_str(&repo_file("examples/user-created.yaml")).expect("example parses")
}

fn typed(v: Value) -> OutboxPipeline {
    serde_json::from_value(v).expect("pipeline")
}

fn update_errors(old: Value, new: Value) -> Vec<FieldError> {
    manifest::validate_update(&typed(new), &typed(old))
        .err()
        .unwrap_or_default()
}

fn names_error(errors: &[FieldError], text: &str) -> bool {
    errors.iter().any(|e| e.to_string().contains(text))
}

#[test]
fn checked_in_account_crd_is_the_generated_one_and_cluster_scoped() {
    let generated = outbox_operator::account_crd_yaml().expect("crd serializes");
    assert!(
        generated == repo_file("crds/outboxaccounts.yaml"),
        "crds/outboxaccounts.yaml is not the output of `outbox-operator crd outboxaccounts`: run `make crd`"
    );
    let crd: Value = serde_saphyr::from_str(&generated).unwrap();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], "OutboxAccount");
}

#[test]
fn changing_or_removing_the_account_ref_is_refused() {
    let mut old = created();
    old["spec"]["accountRef"] = json!({"name": "team-a"});
    let mut new = old.clone();
    new["spec"]["accountRef"] = json!({"name": "team-b"});
    let e = update_errors(old.clone(), new);
    assert!(
        names_error(&e, "spec.accountRef: field is immutable"),
        "{e:?}"
    );
    let mut removed = old.clone();
    removed["spec"]
        .as_object_mut()
        .unwrap()
        .remove("accountRef");
    assert!(!update_errors(old.clone(), removed).is_empty());
    assert!(
        update_errors(old.clone(), old).is_empty(),
        "unchanged passes"
    );
}

#[test]
fn an_existing_bus_excludes_a_name_and_is_immutable() {
    let arn = "arn:aws:events:us-east-1:111122223333:event-bus/central";
    let mut both = created();
    both["spec"]["bus"]["existingArn"] = json!(arn);
    let errors = manifest::check_value("t", both)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(errors.contains("exclude each other"), "{errors}");

    let mut old = created();
    old["spec"]["bus"] = json!({"existingArn": arn});
    assert!(manifest::check_value("t", old.clone()).is_ok());
    let mut new = old.clone();
    new["spec"]["bus"]["existingArn"] =
        json!("arn:aws:events:us-east-1:111122223333:event-bus/other");
    let e = update_errors(old, new);
    assert!(
        names_error(&e, "spec.bus.existingArn: field is immutable"),
        "{e:?}"
    );
}

#[test]
fn an_existing_bus_arn_must_be_an_event_bus_arn() {
    let mut v = created();
    v["spec"]["bus"] = json!({"existingArn": "arn:aws:sqs:us-east-1:111122223333:q"});
    let e = manifest::check_value("t", v)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("spec.bus.existingArn"), "{e}");
}

#[test]
fn the_cross_account_example_holds_an_account_and_a_pipeline_on_a_central_bus() {
    let text = repo_file("examples/cross-account.yaml");
    let accounts = manifest::accounts("cross-account.yaml", &text).expect("account parses");
    assert_eq!(accounts.len(), 1);
    let docs = manifest::parse_documents("cross-account.yaml", &text).expect("pipeline valid");
    let p = &docs[0].pipeline;
    assert_eq!(
        p.spec.account_ref.as_ref().map(|r| r.name.as_str()),
        accounts[0].metadata.name.as_deref()
    );
    assert!(p.spec.bus.existing_arn.is_some() && p.spec.consumers.is_empty());
}
