//! The relay's own PutEvents client ([`outbox_relay::wire::SignedClient`], what the binary
//! publishes with) against a local awsJson1.1 endpoint, held to the SDK's client: the same
//! request body and headers for the same entries, the same outcome for each kind of response,
//! a SigV4 signature that verifies, and credentials renewed before they expire.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use outbox_relay::event::{Prepared, entry_size};
use outbox_relay::publish::{CallResult, PutEventsApi};
use outbox_relay::wire::SignedClient;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const REGION: &str = "us-east-1";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// One scripted answer: status, headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

/// What the endpoint answers, in turn, and what it was sent.
#[derive(Default)]
struct Endpoint {
    answers: VecDeque<Answer>,
    received: Vec<(HeaderMap, Bytes)>,
}

type Shared = Arc<Mutex<Endpoint>>;

async fn answer(State(endpoint): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut endpoint = endpoint.lock().unwrap();
    endpoint.received.push((headers, body));
    let (status, headers, body) = endpoint.answers.pop_front().expect("an answer is scripted");
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Sets what the endpoint answers next, in turn.
fn script(endpoint: &Shared, answers: Vec<Answer>) {
    endpoint.lock().unwrap().answers = answers.into();
}

/// The requests the endpoint received since the last call.
fn take_received(endpoint: &Shared) -> Vec<(HeaderMap, Bytes)> {
    std::mem::take(&mut endpoint.lock().unwrap().received)
}

async fn endpoint() -> (String, Shared) {
    let shared = Shared::default();
    let router = axum::Router::new()
        .route("/", axum::routing::post(answer))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, shared)
}

fn credentials(token: Option<&str>, expiry: Option<SystemTime>) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        SECRET,
        token.map(str::to_owned),
        expiry,
        "test",
    )
}

fn sdk_client(url: &str) -> aws_sdk_eventbridge::Client {
    let config = aws_sdk_eventbridge::Config::builder()
        .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
        .region(aws_sdk_eventbridge::config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(credentials(Some("TOKEN"), None))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_eventbridge::Client::from_conf(config)
}

fn signed_client(url: &str, provider: SharedCredentialsProvider) -> SignedClient {
    SignedClient::new(url, REGION, provider).expect("client")
}

fn prepared(entry: PutEventsRequestEntry) -> Prepared {
    Prepared {
        sequence_number: "1".into(),
        item_key: "{}".into(),
        size: entry_size(&entry),
        entry,
    }
}

/// Entries with every member the relay sets, and some it leaves out.
fn entries() -> Vec<Prepared> {
    let full = PutEventsRequestEntry::builder()
        .event_bus_name("outbox-bus")
        .source("myapp.users")
        .detail_type("UserCreated")
        .detail(r#"{"name":"Zoë \"Z\" O'Brien","note":"tab\there\nline","emoji":"🚀"}"#)
        .resources("arn:aws:dynamodb:us-east-1:123456789012:table/users")
        .time(DateTime::from_secs(1_767_225_600))
        .trace_header("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
        .build();
    let fractional = PutEventsRequestEntry::builder()
        .event_bus_name("outbox-bus")
        .source("myapp.users")
        .detail_type("UserDeleted")
        .detail("{}")
        .resources("r1")
        .resources("r2")
        .time(DateTime::from_secs_and_nanos(1_767_225_600, 250_000_000))
        .build();
    let bare = PutEventsRequestEntry::builder()
        .source("s")
        .detail_type("d")
        .detail("{}")
        .build();
    vec![prepared(full), prepared(fractional), prepared(bare)]
}

const OK_3: &str =
    r#"{"FailedEntryCount":0,"Entries":[{"EventId":"a"},{"EventId":"b"},{"EventId":"c"}]}"#;

#[tokio::test]
async fn both_clients_send_the_same_request_for_the_same_entries() {
    let (url, endpoint) = endpoint().await;
    script(&endpoint, vec![(200, vec![], OK_3); 2]);
    let entries = entries();
    let refs: Vec<&Prepared> = entries.iter().collect();
    let provider = SharedCredentialsProvider::new(credentials(Some("TOKEN"), None));
    let sdk = sdk_client(&url).put_entries(&refs).await;
    let ours = signed_client(&url, provider).put_entries(&refs).await;
    assert_eq!(sdk, CallResult::Entries(vec![None; 3]));
    assert_eq!(ours, sdk);

    let received = take_received(&endpoint);
    let [(sdk_headers, sdk_body), (our_headers, our_body)] = &received[..] else {
        panic!("two requests, got {}", received.len());
    };
    let json = |b: &Bytes| serde_json::from_slice::<Value>(b).expect("a JSON body");
    assert_eq!(json(our_body), json(sdk_body));
    for header in [
        "content-type",
        "x-amz-target",
        "host",
        "x-amz-security-token",
    ] {
        assert_eq!(our_headers.get(header), sdk_headers.get(header), "{header}");
    }
    let auth = our_headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains(&format!("/{REGION}/events/aws4_request")),
        "{auth}"
    );
}

#[tokio::test]
async fn both_clients_read_each_kind_of_response_alike() {
    let transient = |code: &str| CallResult::Transient(code.to_owned());
    let terminal = |code: &str, msg: &str| CallResult::Terminal(code.to_owned(), msg.to_owned());
    let throttled = Some(("ThrottlingException".to_owned(), "Rate exceeded".to_owned()));
    let json = vec![("content-type", "application/x-amz-json-1.1")];
    #[rustfmt::skip]
    let cases: Vec<(Answer, CallResult)> = vec![
        ((200, json.clone(), OK_3), CallResult::Entries(vec![None; 3])),
        ((200, json.clone(),
         r#"{"FailedEntryCount":1,"Entries":[{"EventId":"a"},{"ErrorCode":"ThrottlingException","ErrorMessage":"Rate exceeded"},{"EventId":"c"}]}"#),
         CallResult::Entries(vec![None, throttled, None])),
        ((200, json.clone(), r#"{"FailedEntryCount":0,"Entries":[{"EventId":"a"}]}"#),
         transient("PutEvents answered 1 results for 3 entries")),
        ((400, json.clone(), r#"{"__type":"com.amazonaws.events#ValidationException","message":"bad"}"#),
         terminal("ValidationException", "bad")),
        ((400, vec![("x-amzn-errortype", "AccessDeniedException:http://internal.amazon.com/coral/")],
         r#"{"Message":"denied"}"#), terminal("AccessDeniedException", "denied")),
        ((403, json.clone(), r#"{"__type":"UnrecognizedClientException","message":"invalid token"}"#),
         terminal("UnrecognizedClientException", "invalid token")),
        ((400, json.clone(), r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
         transient("ThrottlingException")),
        ((500, json.clone(), r#"{"__type":"InternalException","message":"oops"}"#),
         transient("InternalException")),
        ((503, vec![], ""), transient("Unknown")),
    ];
    let (url, endpoint) = endpoint().await;
    let entries = entries();
    let refs: Vec<&Prepared> = entries.iter().collect();
    let sdk = sdk_client(&url);
    let provider = SharedCredentialsProvider::new(credentials(None, None));
    let ours = signed_client(&url, provider);
    for (answer, expected) in cases {
        let (status, body) = (answer.0, answer.2);
        script(&endpoint, vec![answer.clone(), answer]);
        let by_sdk = sdk.put_entries(&refs).await;
        let by_ours = ours.put_entries(&refs).await;
        assert_eq!(by_sdk, expected, "SDK, {status} {body}");
        assert_eq!(by_ours, expected, "ours, {status} {body}");
    }
}

#[tokio::test]
async fn an_unreadable_answer_or_no_answer_is_worth_another_call() {
    let (url, endpoint) = endpoint().await;
    script(&endpoint, vec![(200, vec![], "<html>proxy</html>")]);
    let entries = entries();
    let refs: Vec<&Prepared> = entries.iter().collect();
    let provider = SharedCredentialsProvider::new(credentials(None, None));
    let ours = signed_client(&url, provider.clone());
    assert_eq!(
        ours.put_entries(&refs).await,
        CallResult::Transient("ResponseError".into())
    );
    // Nothing listens on the port any more once the listener is gone: a refused connection.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let nobody = signed_client(&closed, provider);
    assert_eq!(
        nobody.put_entries(&refs).await,
        CallResult::Transient("DispatchFailure".into())
    );
}

/// Recomputes the request's SigV4 signature from what the endpoint received (the canonical
/// request of the signed headers it names) and the secret key.
fn verify_signature(headers: &HeaderMap, body: &[u8]) {
    let auth = headers["authorization"].to_str().unwrap();
    let field = |name: &str| {
        auth.split([' ', ','])
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {auth}"))
    };
    let (credential, signed_headers, signature) = (
        field("Credential="),
        field("SignedHeaders="),
        field("Signature="),
    );
    let scope = credential.split_once('/').unwrap().1;
    let amz_date = headers["x-amz-date"].to_str().unwrap();
    let canonical_headers: String = signed_headers
        .split(';')
        .map(|name| format!("{name}:{}\n", headers[name].to_str().unwrap().trim()))
        .collect();
    let canonical_request = format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let time = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    let key = aws_sigv4::sign::v4::generate_signing_key(SECRET, time.into(), REGION, "events");
    let expected = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
    assert_eq!(
        signature, expected,
        "canonical request:\n{canonical_request}"
    );
    for required in ["host", "x-amz-date", "x-amz-target", "content-type"] {
        assert!(
            signed_headers.split(';').any(|h| h == required),
            "{required} signed"
        );
    }
}

#[tokio::test]
async fn the_signature_verifies_against_the_secret_key() {
    let (url, endpoint) = endpoint().await;
    script(&endpoint, vec![(200, vec![], OK_3); 2]);
    let entries = entries();
    let refs: Vec<&Prepared> = entries.iter().collect();
    for token in [Some("SESSION-TOKEN"), None] {
        let provider = SharedCredentialsProvider::new(credentials(token, None));
        signed_client(&url, provider).put_entries(&refs).await;
    }
    let received = take_received(&endpoint);
    assert_eq!(received.len(), 2);
    for (headers, body) in &received {
        verify_signature(headers, body);
    }
    assert_eq!(received[0].0["x-amz-security-token"], "SESSION-TOKEN");
    assert!(!received[1].0.contains_key("x-amz-security-token"));
}

/// Hands out credentials numbered by the call, each expiring `lifetime` from now.
#[derive(Debug)]
struct Counting {
    calls: Arc<AtomicUsize>,
    lifetime: Duration,
}

impl ProvideCredentials for Counting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        future::ProvideCredentials::ready(Ok(Credentials::new(
            format!("AKID{n}"),
            SECRET,
            None,
            Some(SystemTime::now() + self.lifetime),
            "counting",
        )))
    }
}

#[tokio::test]
async fn credentials_are_fetched_once_while_fresh_and_again_near_their_expiry() {
    let (url, endpoint) = endpoint().await;
    let entries = entries();
    let refs: Vec<&Prepared> = entries.iter().collect();
    for (lifetime, expected_fetches) in [(3600, 1), (120, 3)] {
        script(&endpoint, vec![(200, vec![], OK_3); 3]);
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            lifetime: Duration::from_secs(lifetime),
        };
        let client = signed_client(&url, SharedCredentialsProvider::new(provider));
        for _ in 0..3 {
            client.put_entries(&refs).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), expected_fetches);
        let received = take_received(&endpoint);
        let last = received.last().unwrap().0["authorization"]
            .to_str()
            .unwrap();
        let last_key = format!("Credential=AKID{}/", expected_fetches - 1);
        assert!(last.contains(&last_key), "{last}");
    }
}
