//! Unit tests of the table step's pure parts: desired state, diff and description parsing.

use super::*;
use crate::engine::tags::Owner;

fn owner() -> Owner {
    tags::test_owner()
}

fn want() -> Desired {
    Desired {
        name: "t".into(),
        keys: vec![("id".into(), "HASH", "S")],
        billing: BillingMode::PayPerRequest,
        throughput: None,
        stream_view: "NEW_IMAGE",
        pitr: true,
        deletion_protection: true,
        tags: owner().desired_tags(&BTreeMap::new()),
        may_adopt: false,
    }
}

fn have(d: &Desired) -> Observed {
    Observed {
        arn: "arn:aws:dynamodb:us-east-1:123456789012:table/t".into(),
        status: "ACTIVE".into(),
        keys: d.keys.clone(),
        billing: d.billing,
        throughput: None,
        stream_view: Some(d.stream_view.into()),
        stream_arn: Some("arn:s/1".into()),
        deletion_protection: d.deletion_protection,
        pitr: d.pitr,
        tags: d.tags.clone(),
    }
}

#[test]
fn missing_table_is_created_with_pitr() {
    assert_eq!(
        diff(&want(), None, &owner()).unwrap(),
        vec![Change::Create, Change::Pitr(true)]
    );
}

#[test]
fn table_in_sync_needs_nothing() {
    let d = want();
    assert!(diff(&d, Some(&have(&d)), &owner()).unwrap().is_empty());
}

#[test]
fn disabled_stream_and_pitr_off_are_repaired() {
    let d = want();
    let mut o = have(&d);
    o.stream_view = None;
    o.pitr = false;
    assert_eq!(
        diff(&d, Some(&o), &owner()).unwrap(),
        vec![Change::EnableStream, Change::Pitr(true)]
    );
}

#[test]
fn other_view_type_is_refused_naming_the_field_and_never_disables_the_stream() {
    let d = want();
    let mut o = have(&d);
    o.stream_view = Some("KEYS_ONLY".into());
    let err = diff(&d, Some(&o), &owner()).unwrap_err();
    assert_eq!(err.reason(), crate::crd::Reason::InvalidSpec);
    assert!(
        err.to_string().contains("spec.table.streamViewType"),
        "{err}"
    );
}

#[test]
fn foreign_table_is_a_conflict_unless_both_opt_ins() {
    let mut d = want();
    let mut o = have(&d);
    o.tags = BTreeMap::new();
    let err = diff(&d, Some(&o), &owner()).unwrap_err();
    assert_eq!(err.reason(), crate::crd::Reason::Conflict);
    assert!(err.to_string().contains("dynamodb table t"));
    d.may_adopt = true;
    let changes = diff(&d, Some(&o), &owner()).unwrap();
    // Adoption also marks the table as adopted (see `adopted_and_kept`).
    let mut adopted = d.tags.clone();
    adopted.insert(tags::ADOPTED.to_owned(), "true".to_owned());
    assert_eq!(changes, vec![Change::Adopt(adopted)]);
}

#[test]
fn an_adopted_tables_deletion_protection_is_never_switched_off() {
    let mut d = want();
    d.deletion_protection = false;
    let mut o = have(&d);
    o.deletion_protection = true;
    o.tags.insert(tags::ADOPTED.to_owned(), "true".to_owned());
    assert_eq!(diff(&d, Some(&o), &owner()).unwrap(), vec![]);
    o.tags.remove(tags::ADOPTED);
    assert_eq!(
        diff(&d, Some(&o), &owner()).unwrap(),
        vec![Change::DeletionProtection(false)]
    );
}

#[test]
fn another_pipelines_table_is_never_adopted() {
    let mut d = want();
    d.may_adopt = true;
    let mut o = have(&d);
    o.tags = Owner {
        cluster_id: "other".into(),
        pipeline: "default/p".into(),
    }
    .desired_tags(&BTreeMap::new());
    assert_eq!(
        diff(&d, Some(&o), &owner()).unwrap_err().reason(),
        crate::crd::Reason::Conflict
    );
}

#[test]
fn key_schema_mismatch_is_invalid_spec() {
    let d = want();
    let mut o = have(&d);
    o.keys = vec![("pk".into(), "HASH", "S")];
    assert_eq!(
        diff(&d, Some(&o), &owner()).unwrap_err().reason(),
        crate::crd::Reason::InvalidSpec
    );
}

#[test]
fn billing_protection_and_tags_drift() {
    let d = want();
    let mut o = have(&d);
    o.billing = BillingMode::Provisioned;
    o.deletion_protection = false;
    o.tags.remove(tags::PIPELINE);
    let changes = diff(&d, Some(&o), &owner());
    // Without the pipeline tag the table is not ours any more.
    assert!(changes.is_err());
    o.tags = d.tags.clone();
    o.tags.insert("extra".into(), "kept".into());
    assert_eq!(
        diff(&d, Some(&o), &owner()).unwrap(),
        vec![Change::Billing, Change::DeletionProtection(true)]
    );
}
