//! Wire tests of other AWS accounts and of buses the pipeline does not own, against moto: STS
//! AssumeRole into `arn:aws:iam::<account>:role/...` gives credentials whose calls land in that
//! account, and moto keeps resources per account.
//!
//! Needs OUTBOX_TEST_ENDPOINT (see engine_moto.rs). Every test uses its own cluster id, names
//! and accounts, so test binaries can share one moto server.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::{emulator_sdk, endpoint, unique};
use harness::*;

use outbox_operator::crd::{AccountRef, OutboxPipeline};
use outbox_operator::engine::account::{AssumeRole, assumed_sdk_config};
use outbox_operator::engine::names::Names;
use outbox_operator::engine::{AwsClients, EngineError, Verb};

/// The emulator's account for the plain test credentials.
const HOME: &str = "123456789012";

/// A 12-digit account id unique to this run (moto keeps every account apart).
fn account_id(seed: &str) -> String {
    let n = seed
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("{:012}", 200_000_000_000 + n % 700_000_000_000)
}

fn target(name: &str, account: &str) -> AssumeRole {
    AssumeRole {
        name: name.to_owned(),
        role_arn: format!("arn:aws:iam::{account}:role/outbox-operator/{name}"),
        external_id: Some("ext-id-of-the-test".to_owned()),
        session_duration_seconds: Some(900),
        region: None,
    }
}

/// The test's own clients in `account` (through the same assume-role provider).
async fn clients_in(ep: &str, t: &AssumeRole) -> AwsClients {
    let sdk = emulator_sdk(ep).await;
    AwsClients::from_conf(&assumed_sdk_config(&sdk, "test", t).await)
}

async fn tags_of(c: &AwsClients, arn: &str) -> BTreeMap<String, String> {
    c.eventbridge
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

/// Creates a bus the pipeline does not own, with a tag of its owner; returns its ARN.
async fn central_bus(c: &AwsClients, name: &str) -> String {
    c.eventbridge
        .create_event_bus()
        .name(name)
        .tags(
            aws_sdk_eventbridge::types::Tag::builder()
                .key("owner")
                .value("platform")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .event_bus_arn()
        .unwrap()
        .to_owned()
}

async fn relay_policy(c: &AwsClients, names: &Names) -> serde_json::Value {
    let out = c
        .iam
        .get_role_policy()
        .role_name(names.role(&names.relay_function))
        .policy_name("outbox")
        .send()
        .await
        .unwrap();
    outbox_operator::engine::iam::parse_document(out.policy_document()).unwrap()
}

/// The Resource of the relay's PutEvents statement.
fn put_events_resource(policy: &serde_json::Value) -> serde_json::Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "events:PutEvents")
        .map(|s| s["Resource"].clone())
        .expect("a PutEvents statement")
}

async fn relay_bus_env(c: &AwsClients, names: &Names) -> String {
    let f = c
        .lambda
        .get_function_configuration()
        .function_name(&names.relay_function)
        .send()
        .await
        .unwrap();
    f.environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get(outbox_contract::env::BUS_NAME))
        .cloned()
        .unwrap_or_default()
}

async fn rules_on(c: &AwsClients, bus: &str) -> Vec<String> {
    c.eventbridge
        .list_rules()
        .event_bus_name(bus)
        .send()
        .await
        .unwrap()
        .rules()
        .iter()
        .filter_map(|r| r.name().map(str::to_owned))
        .collect()
}

fn on_existing_bus(file: &str, id: &str, arn: &str) -> OutboxPipeline {
    let mut p = example(file, id);
    p.spec.bus.name = None;
    p.spec.bus.existing_arn = Some(arn.to_owned());
    p
}

#[tokio::test]
async fn an_existing_bus_in_the_pipelines_account_carries_its_consumers_and_is_never_touched() {
    let Some(ep) = endpoint() else { return };
    let id = unique("xb");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let arn = central_bus(&h.clients, &format!("central-{id}")).await;
    let before = tags_of(&h.clients, &arn).await;
    let p = on_existing_bus("user-created.yaml", &id, &arn);
    let names = Names::new(&cluster, &p);

    let out = h.converge(&p).await;
    assert_eq!(out.status.bus_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(out.status.bus_name.as_deref(), Some(names.bus.as_str()));
    assert!(out.status.required_actions.is_empty(), "{:?}", out.status);
    let rule = names.rule(&p.spec.consumers[0].name);
    assert!(rules_on(&h.clients, &names.bus).await.contains(&rule));
    assert_eq!(
        put_events_resource(&relay_policy(&h.clients, &names).await),
        serde_json::json!(arn)
    );
    assert_eq!(relay_bus_env(&h.clients, &names).await, arn);
    let bus_calls: Vec<String> = h
        .all_calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.operation.contains("EventBus"))
        .map(|c| c.operation.clone())
        .collect();
    assert!(
        bus_calls.iter().all(|op| op == "DescribeEventBus"),
        "the operator only reads a bus it does not own: {bus_calls:?}"
    );
    assert_eq!(tags_of(&h.clients, &arn).await, before, "never tagged");
    h.assert_steady(&p).await;
    h.assert_policy_covers_calls();

    let del = h.engine.delete(&p).await.expect("delete");
    assert!(del.done, "{del:?}");
    assert!(
        !del.actions
            .iter()
            .any(|a| a.resource.contains("eventbridge bus")),
        "{:?}",
        del.actions
    );
    assert!(bus_exists(&h, &names.bus).await, "the existing bus stays");
    assert_eq!(tags_of(&h.clients, &arn).await, before);
    assert!(!rules_on(&h.clients, &names.bus).await.contains(&rule));
}

#[tokio::test]
async fn the_accounts_default_bus_can_be_published_to() {
    let Some(ep) = endpoint() else { return };
    let id = unique("db");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let arn = format!("arn:aws:events:us-east-1:{HOME}:event-bus/default");
    let mut p = on_existing_bus("user-created.yaml", &id, &arn);
    p.spec.consumers.clear();
    let names = Names::new(&cluster, &p);
    let out = h.converge(&p).await;
    assert_eq!(out.status.bus_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(
        put_events_resource(&relay_policy(&h.clients, &names).await),
        serde_json::json!(arn)
    );
    let del = h.engine.delete(&p).await.expect("delete");
    assert!(del.done);
    assert!(bus_exists(&h, "default").await);
}

#[tokio::test]
async fn an_existing_bus_in_another_account_gets_no_consumers_and_the_status_names_its_policy() {
    let Some(ep) = endpoint() else { return };
    let id = unique("xa");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let central = target(&format!("central-{id}"), &account_id(&id));
    let central_clients = clients_in(&ep, &central).await;
    let arn = central_bus(&central_clients, &format!("central-{id}")).await;
    assert!(arn.contains(&account_id(&id)), "{arn}");
    let before = tags_of(&central_clients, &arn).await;

    // With a consumer: refused before anything is created, naming both accounts.
    let p = on_existing_bus("user-created.yaml", &id, &arn);
    let out = h.engine.reconcile(&p).await;
    let Some(EngineError::InvalidSpec { message }) = &out.error else {
        panic!("expected InvalidSpec, got {:?}", out.error);
    };
    assert!(message.contains("spec.consumers[0]"), "{message}");
    assert!(
        message.contains(&account_id(&id)) && message.contains(HOME),
        "{message}"
    );
    assert!(
        h.take_calls().iter().all(|c| !c.mutating),
        "a refused pipeline changed something"
    );

    // Without consumers: Ready, and the status says what the bus's owner must allow.
    let mut p = p;
    p.spec.consumers.clear();
    let names = Names::new(&cluster, &p);
    let out = h.converge(&p).await;
    assert_eq!(out.status.bus_arn.as_deref(), Some(arn.as_str()));
    let relay_role = h
        .clients
        .iam
        .get_role()
        .role_name(names.role(&names.relay_function))
        .send()
        .await
        .unwrap()
        .role()
        .unwrap()
        .arn()
        .to_owned();
    let hint = out
        .status
        .required_actions
        .iter()
        .find(|a| a.contains(&arn))
        .unwrap_or_else(|| panic!("no bus policy hint: {:?}", out.status.required_actions));
    assert!(
        hint.contains(&relay_role) && hint.contains("events:PutEvents"),
        "{hint}"
    );
    assert_eq!(
        put_events_resource(&relay_policy(&h.clients, &names).await),
        serde_json::json!(arn)
    );
    assert_eq!(relay_bus_env(&h.clients, &names).await, arn);
    h.assert_steady(&p).await;

    h.engine.delete(&p).await.expect("delete");
    assert!(
        central_clients
            .eventbridge
            .describe_event_bus()
            .name(&arn)
            .send()
            .await
            .is_ok()
            || bus_in(&central_clients, &format!("central-{id}")).await,
        "the other account's bus stays"
    );
    assert_eq!(tags_of(&central_clients, &arn).await, before);
}

async fn bus_in(c: &AwsClients, name: &str) -> bool {
    c.eventbridge
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .is_ok()
}

async fn table_in(c: &AwsClients, name: &str) -> bool {
    c.dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .is_ok()
}

async fn function_in(c: &AwsClients, name: &str) -> bool {
    c.lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn two_pipelines_in_two_accounts_create_their_resources_there_and_only_there() {
    let Some(ep) = endpoint() else { return };
    let id = unique("2a");
    let cluster = format!("cl-{id}");
    let h = Harness::new(&ep, &cluster, false).await;
    let (acct_a, acct_b) = (account_id(&format!("a{id}")), account_id(&format!("b{id}")));
    let (ta, tb) = (target("team-a", &acct_a), target("team-b", &acct_b));
    h.engine.set_account(ta.clone());
    h.engine.set_account(tb.clone());
    let who = h.engine.account_identity(&ta).await.expect("assume team-a");
    assert_eq!(who.account, acct_a);

    let mut pa = example("user-created.yaml", &format!("a{id}"));
    pa.spec.account_ref = Some(AccountRef {
        name: "team-a".into(),
    });
    let mut pb = example("user-created.yaml", &format!("b{id}"));
    pb.spec.account_ref = Some(AccountRef {
        name: "team-b".into(),
    });
    let (na, nb) = (Names::new(&cluster, &pa), Names::new(&cluster, &pb));

    let plan = h.engine.plan(&pa).await.expect("plan in team-a");
    assert!(!plan.in_sync());
    let oa = h.converge(&pa).await;
    let ob = h.converge(&pb).await;
    assert!(oa.status.table_arn.as_deref().unwrap().contains(&acct_a));
    assert!(ob.status.table_arn.as_deref().unwrap().contains(&acct_b));
    assert!(oa.status.bus_arn.as_deref().unwrap().contains(&acct_a));

    let (ca, cb) = (clients_in(&ep, &ta).await, clients_in(&ep, &tb).await);
    assert!(table_in(&ca, &na.table).await && !table_in(&ca, &nb.table).await);
    assert!(table_in(&cb, &nb.table).await && !table_in(&cb, &na.table).await);
    assert!(!table_in(&h.clients, &na.table).await && !table_in(&h.clients, &nb.table).await);
    assert!(function_in(&ca, &na.relay_function).await);
    assert!(!function_in(&h.clients, &na.relay_function).await);
    assert!(bus_in(&ca, &na.bus).await && !bus_in(&h.clients, &na.bus).await);
    // Ownership per account: the cluster id and pipeline key on the table in its account.
    let tags = ca
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(oa.status.table_arn.clone().unwrap())
        .send()
        .await
        .unwrap();
    let tags = tags_of_table(tags.tags());
    assert_eq!(tags.get("outbox.dev/cluster-id"), Some(&cluster));
    h.assert_steady(&pa).await;

    // Deletion uses the same account.
    let del = h.engine.delete(&pa).await.expect("delete in team-a");
    assert!(del.done, "{del:?}");
    assert!(
        del.actions
            .iter()
            .any(|a| a.verb == Verb::Delete && a.resource.contains(&na.relay_function))
    );
    assert!(!function_in(&ca, &na.relay_function).await);
    assert!(!bus_in(&ca, &na.bus).await);
    assert!(
        function_in(&cb, &nb.relay_function).await,
        "team-b untouched"
    );
}

#[tokio::test]
async fn a_pipeline_whose_account_is_not_known_waits_without_an_aws_call() {
    let Some(ep) = endpoint() else { return };
    let id = unique("nk");
    let h = Harness::new(&ep, &format!("cl-{id}"), false).await;
    let mut p = example("user-created.yaml", &id);
    p.spec.account_ref = Some(AccountRef {
        name: "nobody".into(),
    });
    let out = h.engine.reconcile(&p).await;
    let e = out.error.expect("refused");
    assert!(
        e.is_transient() && e.to_string().contains("OutboxAccount nobody"),
        "{e}"
    );
    assert!(h.take_calls().is_empty(), "no AWS call");
}

/// A stand-in STS that refuses every AssumeRole as AWS does for a role whose trust policy does
/// not name the caller.
fn refusing_sts() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 16384];
            let _ = s.read(&mut buf);
            let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/operator is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::444455556666:role/outbox-operator/bad</Message></Error><RequestId>r</RequestId></ErrorResponse>";
            let _ = write!(
                s,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_role_sts_refuses_is_named_with_the_sts_error_in_the_account_and_the_pipeline() {
    // No emulator needed: the stand-in STS answers.
    let sts = refusing_sts();
    let sdk = emulator_sdk(&sts).await;
    let engine = outbox_operator::engine::Engine::new(&sdk, common::engine_config("cl-bad"));
    let bad = target("bad", "444455556666");
    let e = engine
        .account_identity(&bad)
        .await
        .expect_err("STS refuses");
    let text = e.to_string();
    assert!(
        text.contains("AccessDenied") && text.contains("not authorized to perform: sts:AssumeRole"),
        "{text}"
    );
    assert!(text.contains(&bad.role_arn), "{text}");

    engine.set_account(bad);
    let mut p = example("user-created.yaml", "bad");
    p.spec.account_ref = Some(AccountRef { name: "bad".into() });
    let out = engine.reconcile(&p).await;
    let ready = out
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("not authorized to perform: sts:AssumeRole"),
        "{ready:?}"
    );
}

/// The CLI binary with the emulator's environment.
fn cli(args: &[&str], ep: &str, cluster: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_outbox-operator"))
        .args(args)
        .env("AWS_ENDPOINT_URL", ep)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env("OUTBOX_CLUSTER_ID", cluster)
        .env("OUTBOX_ARTIFACTS_DIR", common::fixtures())
        .output()
        .expect("run outbox-operator")
}

fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn the_cli_plans_applies_and_deletes_in_another_account_with_account_role_arn() {
    let Some(ep) = endpoint() else { return };
    let id = unique("cli");
    let cluster = format!("cl-{id}");
    let account = account_id(&id);
    let t = target("cli", &account);
    let name = format!("xcli-{id}");
    let manifest = std::fs::read_to_string(format!(
        "{}/../examples/user-created.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace(
        "name: user-created\n  namespace",
        &format!("name: {name}\n  namespace"),
    )
    .replace("name: users", &format!("name: {name}-bus"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, &manifest).unwrap();
    let file = file.to_string_lossy().into_owned();
    let role = t.role_arn.clone();
    let flags = [
        "--account-role-arn",
        role.as_str(),
        "--external-id",
        "ext-id-of-the-test",
    ];

    let plan = cli(
        &[&["plan", "-f", &file, "--exit-code"][..], &flags].concat(),
        &ep,
        &cluster,
    );
    assert_eq!(plan.status.code(), Some(2), "{}", out_text(&plan));
    let apply = cli(
        &[&["apply", "-f", &file, "--timeout", "2m"][..], &flags].concat(),
        &ep,
        &cluster,
    );
    assert_eq!(apply.status.code(), Some(0), "{}", out_text(&apply));

    let p = {
        let mut p: OutboxPipeline = outbox_operator::manifest::parse_documents("p", &manifest)
            .unwrap()
            .remove(0)
            .pipeline;
        p.spec.account_ref = Some(AccountRef { name: "cli".into() });
        p
    };
    let names = Names::new(&cluster, &p);
    let there = clients_in(&ep, &t).await;
    let home = AwsClients::from_conf(&emulator_sdk(&ep).await);
    assert!(
        table_in(&there, &names.table).await,
        "created in account {account}"
    );
    assert!(!table_in(&home, &names.table).await, "and only there");

    let del = cli(
        &[&["delete", "-f", &file, "--timeout", "2m"][..], &flags].concat(),
        &ep,
        &cluster,
    );
    assert_eq!(del.status.code(), Some(0), "{}", out_text(&del));
    assert!(!function_in(&there, &names.relay_function).await);
}
