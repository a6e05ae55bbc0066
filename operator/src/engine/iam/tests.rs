//! Unit tests of the role module: documents, grants and the diff.
use super::*;
use crate::engine::tags::Owner;

fn env() -> AwsEnv {
    AwsEnv::from_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/t").unwrap()
}

fn relay() -> Grants {
    Grants::Relay {
        stream_arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026".into(),
        bus_arn: "arn:aws:events:eu-west-1:123456789012:event-bus/b".into(),
        failure_destination_arn: "arn:aws:s3:::bucket".into(),
    }
}

fn actions_and_resources(policy: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        let n = normalize(s);
        for a in n["Action"].as_array().unwrap() {
            for r in n["Resource"].as_array().unwrap() {
                out.push((
                    a.as_str().unwrap().to_owned(),
                    r.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn relay_policy_is_least_privilege() {
    let p = inline_policy(&env(), "fn-relay", &relay());
    let grants = actions_and_resources(&p);
    let stream = "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026";
    for a in [
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
    ] {
        assert!(grants.contains(&(a.into(), stream.into())), "{a}");
    }
    assert!(grants.contains(&(
        "events:PutEvents".into(),
        "arn:aws:events:eu-west-1:123456789012:event-bus/b".into()
    )));
    assert!(grants.contains(&("s3:PutObject".into(), "arn:aws:s3:::bucket/*".into())));
    assert!(grants.contains(&(
        "logs:PutLogEvents".into(),
        "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/fn-relay:*".into()
    )));
    // No wildcard resources, no wildcard actions.
    assert!(grants.iter().all(|(a, r)| r != "*" && !a.ends_with('*')));
}

#[test]
fn writer_may_only_put_items_and_consumer_only_log() {
    let w = inline_policy(
        &env(),
        "fn-writer",
        &Grants::Writer {
            table_arn: "arn:t".into(),
        },
    );
    let g = actions_and_resources(&w);
    assert!(g.contains(&("dynamodb:PutItem".into(), "arn:t".into())));
    assert!(
        g.iter()
            .all(|(a, _)| a == "dynamodb:PutItem" || a.starts_with("logs:"))
    );
    let c = inline_policy(&env(), "fn-c", &Grants::Consumer);
    assert!(
        actions_and_resources(&c)
            .iter()
            .all(|(a, _)| a.starts_with("logs:"))
    );
}

#[test]
fn no_role_creates_its_own_log_group() {
    // The engine creates /aws/lambda/<function> (with retention) before the function.
    let roles = [
        inline_policy(&env(), "fn-relay", &relay()),
        inline_policy(
            &env(),
            "fn-writer",
            &Grants::Writer {
                table_arn: "arn:t".into(),
            },
        ),
        inline_policy(&env(), "fn-c", &Grants::Consumer),
    ];
    for p in &roles {
        let g = actions_and_resources(p);
        assert!(g.iter().all(|(a, _)| a != "logs:CreateLogGroup"), "{p}");
        assert!(g.iter().any(|(a, _)| a == "logs:PutLogEvents"), "{p}");
    }
}

#[test]
fn url_encoded_policy_compares_equal() {
    let p = inline_policy(&env(), "fn-relay", &relay());
    let raw = serde_json::to_string(&p).unwrap();
    let encoded = urlencoding::encode(&raw).into_owned();
    assert!(encoded.starts_with("%7B"));
    assert!(same_document(&p, &encoded));
    assert!(same_document(&p, &raw));
    // Single strings vs lists and statement order do not matter.
    let reordered = json!({"Version": "2012-10-17", "Statement": {
        "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": ["sts:AssumeRole"]}});
    assert!(same_document(&trust_policy(), &reordered.to_string()));
    // A real difference is seen.
    let other = inline_policy(&env(), "fn-other", &relay());
    assert!(!same_document(
        &p,
        &encoded.replace("fn-relay", "fn-other2")
    ));
    assert!(!same_document(&other, &encoded));
}

#[test]
fn role_diff() {
    let owner = Owner {
        cluster_id: "c".into(),
        pipeline: "default/p".into(),
    };
    let d = Desired {
        name: "r".into(),
        trust: trust_policy(),
        policy: inline_policy(&env(), "f", &Grants::Consumer),
        boundary: None,
        tags: owner.desired_tags(&BTreeMap::new()),
    };
    assert_eq!(
        diff(&d, None, &owner).unwrap(),
        vec![Change::Create, Change::Policy]
    );
    let mut o = Observed {
        arn: "arn".into(),
        trust_raw: Some(urlencoding::encode(&d.trust.to_string()).into_owned()),
        policy_raw: Some(urlencoding::encode(&d.policy.to_string()).into_owned()),
        boundary: None,
        tags: d.tags.clone(),
    };
    assert!(diff(&d, Some(&o), &owner).unwrap().is_empty());
    o.policy_raw = None;
    o.boundary = Some("arn:b".into());
    // A boundary the configuration does not name is kept, never removed.
    assert_eq!(diff(&d, Some(&o), &owner).unwrap(), vec![Change::Policy]);
    // A different configured boundary replaces it.
    let mut d2 = d.clone();
    d2.boundary = Some("arn:b2".into());
    assert_eq!(
        diff(&d2, Some(&o), &owner).unwrap(),
        vec![Change::Boundary("arn:b2".into()), Change::Policy]
    );
    o.boundary = Some("arn:b2".into());
    assert_eq!(diff(&d2, Some(&o), &owner).unwrap(), vec![Change::Policy]);
    o.tags.clear();
    assert_eq!(
        diff(&d, Some(&o), &owner).unwrap_err().reason(),
        crate::crd::Reason::Conflict
    );
}
