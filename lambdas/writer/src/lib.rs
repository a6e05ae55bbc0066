//! The writer Lambda: creates a user in the outbox table.
//!
//! Accepts an API Gateway HTTP API (payload v2) request or a direct JSON invoke whose payload is
//! the new user. Validates it (400 naming the field), generates the id (UUID v4), stores the item
//! with `attribute_not_exists` on the partition key (a repeated id is a 409, never an overwrite)
//! and answers 201 with the user. AWS errors become 5xx and are logged.
//!
//! The response to an HTTP API request is the HTTP API response (`statusCode`, `headers`, `body`
//! as a JSON string); to a direct invoke it is `{"statusCode": n, "body": <the JSON body>}`.

pub mod validate;

use std::collections::HashMap;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
pub use outbox_contract::ConfigError;
use outbox_contract::{User, env};
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::validate::{NewUser, ValidationError, validate};

/// Largest request body accepted, in bytes (a user is far smaller).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Attributes the writer stores besides the partition key; the key must not reuse one.
const USER_ATTRIBUTES: [&str; 4] = ["username", "email", "displayName", "createdAt"];

/// The writer's configuration, read once at init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    pub table_name: String,
    /// Name of the table's partition key attribute, which holds the generated id.
    pub partition_key: String,
}

impl WriterConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads [`env::TABLE_NAME`] (required) and [`env::PARTITION_KEY`] (default `id`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table_name = ConfigError::required(&lookup, env::TABLE_NAME)?;
        let partition_key = lookup(env::PARTITION_KEY)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "id".to_owned());
        if USER_ATTRIBUTES.contains(&partition_key.as_str()) {
            return Err(ConfigError::Invalid {
                var: env::PARTITION_KEY,
                reason: format!(
                    "{partition_key:?} is a user attribute; the key holds the generated id"
                ),
            });
        }
        Ok(WriterConfig {
            table_name,
            partition_key,
        })
    }
}

/// A response before it is shaped for HTTP API or direct invoke.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    fn error(status: u16, error: &str, message: impl Into<String>) -> Self {
        Response {
            status,
            body: json!({ "error": error, "message": message.into() }),
        }
    }
}

/// The user as the writer answers it: the generated id and the stored attributes.
pub fn user_body(id: Uuid, user: &User) -> Value {
    let mut body = serde_json::to_value(user).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut body {
        map.insert("id".to_owned(), Value::String(id.to_string()));
    }
    body
}

/// How the request arrived.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// API Gateway HTTP API, payload format 2.0.
    Http {
        method: String,
        body: Result<Value, ValidationError>,
    },
    /// A direct invoke: the payload is the new user.
    Direct(Value),
}

impl Request {
    /// Tells an HTTP API event from a direct invoke and extracts the JSON body.
    pub fn parse(event: Value) -> Request {
        let is_http = event.get("requestContext").is_some()
            && (event.get("routeKey").is_some() || event.get("rawPath").is_some());
        if !is_http {
            return Request::Direct(event);
        }
        match serde_json::from_value::<ApiGatewayV2httpRequest>(event) {
            Ok(req) => Request::Http {
                method: req.request_context.http.method.to_string(),
                body: http_body(req.body.as_deref(), req.is_base64_encoded),
            },
            Err(e) => Request::Http {
                method: String::new(),
                body: Err(ValidationError::new(
                    "body",
                    format!("not an HTTP API request: {e}"),
                )),
            },
        }
    }
}

fn http_body(body: Option<&str>, base64: bool) -> Result<Value, ValidationError> {
    let body = body
        .filter(|b| !b.is_empty())
        .ok_or_else(|| ValidationError::new("body", "is empty"))?;
    let bytes = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ValidationError::new("body", "is not valid base64"))?
    } else {
        body.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ValidationError::new(
            "body",
            format!("is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ValidationError::new("body", format!("is not JSON: {e}")))
}

/// The writer: its configuration and DynamoDB client, built once per execution environment.
#[derive(Clone, Debug)]
pub struct Writer {
    config: WriterConfig,
    client: aws_sdk_dynamodb::Client,
}

impl Writer {
    pub fn new(config: WriterConfig, client: aws_sdk_dynamodb::Client) -> Self {
        Writer { config, client }
    }

    /// The Lambda handler: any event in, the shaped response out.
    pub async fn handle(&self, event: Value) -> Value {
        match Request::parse(event) {
            Request::Direct(body) => {
                let r = self.create(Ok(body), Uuid::new_v4()).await;
                json!({ "statusCode": r.status, "body": r.body })
            }
            Request::Http { method, body } => {
                let r = if method.eq_ignore_ascii_case("POST") || method.is_empty() {
                    self.create(body, Uuid::new_v4()).await
                } else {
                    Response::error(
                        405,
                        "method_not_allowed",
                        format!("{method} is not supported; use POST"),
                    )
                };
                json!({
                    "statusCode": r.status,
                    "headers": { "content-type": "application/json" },
                    "body": r.body.to_string(),
                    "isBase64Encoded": false,
                })
            }
        }
    }

    /// Validates the body and stores the user under `id`.
    pub async fn create(&self, body: Result<Value, ValidationError>, id: Uuid) -> Response {
        let new_user = match body.and_then(|b| validate(&b)) {
            Ok(u) => u,
            Err(e) => {
                tracing::info!(field = %e.field, "rejected an invalid user");
                return Response {
                    status: 400,
                    body: json!({ "error": "validation", "field": e.field, "message": e.to_string() }),
                };
            }
        };
        let user = new_user.into_user(chrono::Utc::now());
        let item = match self.item(id, &user) {
            Ok(item) => item,
            Err(e) => {
                tracing::error!(error = %e, "could not build the item");
                return Response::error(500, "internal", "could not store the user");
            }
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.config.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", &self.config.partition_key)
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!(id = %id, table = %self.config.table_name, "user created");
                Response {
                    status: 201,
                    body: user_body(id, &user),
                }
            }
            Err(err) => {
                let err = err.into_service_error();
                match &err {
                    PutItemError::ConditionalCheckFailedException(_) => {
                        tracing::warn!(id = %id, "id already exists; not overwritten");
                        Response::error(
                            409,
                            "conflict",
                            format!("a user with id {id} already exists"),
                        )
                    }
                    PutItemError::ProvisionedThroughputExceededException(_)
                    | PutItemError::RequestLimitExceeded(_)
                    | PutItemError::ThrottlingException(_) => {
                        tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "PutItem throttled");
                        Response::error(503, "unavailable", "the table is busy; retry later")
                    }
                    _ => {
                        tracing::error!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&err), "PutItem failed");
                        Response::error(500, "internal", "could not store the user")
                    }
                }
            }
        }
    }

    fn item(
        &self,
        id: Uuid,
        user: &User,
    ) -> Result<HashMap<String, AttributeValue>, serde_dynamo::Error> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::aws_sdk_dynamodb_1::to_item(user)?;
        item.insert(
            self.config.partition_key.clone(),
            AttributeValue::S(id.to_string()),
        );
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_defaults_to_id_and_table_is_required() {
        let config =
            WriterConfig::from_lookup(|k| (k == env::TABLE_NAME).then(|| "users".to_owned()))
                .unwrap();
        assert_eq!(config.partition_key, "id");
        let err = WriterConfig::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains("OUTBOX_TABLE_NAME"), "{err}");
    }

    #[test]
    fn partition_key_may_not_shadow_a_user_attribute() {
        let err = WriterConfig::from_lookup(|k| {
            Some(
                if k == env::TABLE_NAME {
                    "users"
                } else {
                    "email"
                }
                .to_owned(),
            )
        })
        .unwrap_err();
        assert!(err.to_string().contains("OUTBOX_PARTITION_KEY"), "{err}");
    }

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
        ResourceNotFoundException,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    const HTTP_FIXTURE: &str = include_str!("../tests/fixtures/http-api-create.json");

    fn writer(client: Client) -> Writer {
        Writer::new(
            WriterConfig {
                table_name: "users".into(),
                partition_key: "pk".into(),
            },
            client,
        )
    }

    fn body(user: &str) -> Result<Value, ValidationError> {
        Ok(json!({"username": user, "email": "ada@example.com"}))
    }

    #[test]
    fn http_api_requests_are_told_from_direct_invokes() {
        let event: Value = serde_json::from_str(HTTP_FIXTURE).unwrap();
        let Request::Http { method, body } = Request::parse(event.clone()) else {
            panic!("not recognised as HTTP API");
        };
        assert_eq!(method, "POST");
        assert_eq!(body.unwrap()["username"], "ada");

        let mut b64 = event.clone();
        b64["body"] =
            json!(base64::engine::general_purpose::STANDARD.encode(br#"{"username":"bob"}"#));
        b64["isBase64Encoded"] = json!(true);
        let Request::Http { body, .. } = Request::parse(b64) else {
            panic!()
        };
        assert_eq!(body.unwrap()["username"], "bob");

        let direct = json!({"username": "ada", "email": "ada@example.com"});
        assert_eq!(Request::parse(direct.clone()), Request::Direct(direct));
    }

    #[test]
    fn unparseable_http_bodies_are_400_on_body() {
        let mut event: Value = serde_json::from_str(HTTP_FIXTURE).unwrap();
        event["body"] = json!("{not json");
        let Request::Http { body, .. } = Request::parse(event) else {
            panic!()
        };
        assert_eq!(body.unwrap_err().field, "body");
    }

    #[tokio::test]
    async fn created_user_is_put_with_a_condition_on_the_partition_key() {
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                let item = r.item().cloned().unwrap_or_default();
                r.table_name() == Some("users")
                    && r.condition_expression() == Some("attribute_not_exists(#pk)")
                    && r.expression_attribute_names()
                        .and_then(|n| n.get("#pk"))
                        .map(String::as_str)
                        == Some("pk")
                    && item.get("pk")
                        == Some(&AttributeValue::S(
                            "00000000-0000-4000-8000-000000000001".into(),
                        ))
                    && item.get("username") == Some(&AttributeValue::S("ada".into()))
                    && item.contains_key("createdAt")
            })
            .then_output(|| PutItemOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let id = Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap();
        let r = writer(client).create(body("ada"), id).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.body["id"], id.to_string());
        assert_eq!(r.body["username"], "ada");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn existing_id_is_409_not_an_overwrite() {
        let rule = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("exists")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let r = writer(client).create(body("ada"), Uuid::new_v4()).await;
        assert_eq!(r.status, 409);
        assert_eq!(r.body["error"], "conflict");
    }

    #[tokio::test]
    async fn aws_errors_are_5xx() {
        let missing = mock!(Client::put_item).then_error(|| {
            PutItemError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .message("no table")
                    .build(),
            )
        });
        let throttled = mock!(Client::put_item).then_error(|| {
            PutItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .build(),
            )
        });
        let client = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::Sequential,
            [&missing, &throttled]
        );
        let w = writer(client);
        let r = w.create(body("ada"), Uuid::new_v4()).await;
        assert_eq!(r.status, 500);
        // The caller learns nothing of the table; the log has the AWS error.
        assert!(!r.body.to_string().contains("no table"));
        assert_eq!(w.create(body("ada"), Uuid::new_v4()).await.status, 503);
    }

    #[tokio::test]
    async fn invalid_input_is_400_and_never_reaches_dynamodb() {
        let rule = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let w = writer(client);
        let r = w
            .create(
                Ok(json!({"username": "ada", "email": "nope"})),
                Uuid::new_v4(),
            )
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["field"], "email");
        assert_eq!(rule.num_calls(), 0);
    }

    #[tokio::test]
    async fn http_api_response_carries_status_json_header_and_string_body() {
        let rule = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule]);
        let w = writer(client);
        let out = w.handle(serde_json::from_str(HTTP_FIXTURE).unwrap()).await;
        assert_eq!(out["statusCode"], 201);
        assert_eq!(out["headers"]["content-type"], "application/json");
        let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["email"], "ada@example.com");
        assert_eq!(body["displayName"], "Ada");

        let direct = w.handle(json!({"username": "ada"})).await;
        assert_eq!(direct["statusCode"], 400);
        assert_eq!(direct["body"]["field"], "email");

        let mut get: Value = serde_json::from_str(HTTP_FIXTURE).unwrap();
        get["requestContext"]["http"]["method"] = json!("GET");
        assert_eq!(w.handle(get).await["statusCode"], 405);
    }
}
