//! The relay's own PutEvents client: each call's body written from the prepared entries
//! ([`protocol`]), signed with SigV4 by the SDK's signer (`aws-sigv4`) and sent over a pooled
//! hyper connection (HTTPS through rustls with aws-lc, the SDK's own stack), without the SDK's
//! request pipeline.
//!
//! Why: measured, the SDK's orchestrator (interceptors, endpoint rules, identity cache,
//! configuration layers) is about 100 µs of CPU per call, 60 % of a PutEvents call's cost, for
//! a function that makes one call per ten records (docs/data-plane.md, *Cost*). What the SDK
//! decides is still the SDK's: the endpoint comes from its rules (`AWS_ENDPOINT_URL[_EVENTBRIDGE]`,
//! FIPS, dual-stack, partitions), resolved once; the credentials from aws-config's chain, kept
//! until shortly before they expire; the error codes and outcomes are read as its deserialiser
//! reads them ([`protocol::read_response`]), and tests hold the two clients to the same answers.

pub mod protocol;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_eventbridge::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_types::service_config::ServiceConfigKey;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::event::Prepared;
use crate::publish::{CallResult, PutEventsApi};

/// The SigV4 signing name of EventBridge.
const SIGNING_NAME: &str = "events";
/// Credentials are fetched again when less than this is left before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// The SDK's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Why the client cannot be built (at start-up: the function reports an init error).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no AWS region is configured (AWS_REGION)")]
    NoRegion,
    #[error("no AWS credentials provider is configured")]
    NoCredentials,
    #[error("the EventBridge endpoint cannot be resolved: {0}")]
    Endpoint(String),
    #[error("the TLS root certificates cannot be loaded: {0}")]
    TlsRoots(#[source] std::io::Error),
    #[error("TLS cannot be set up: {0}")]
    Tls(String),
}

/// The relay's PutEvents client (cheap to clone: one shared connection pool and credentials).
#[derive(Clone)]
pub struct SignedClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The endpoint URL every call is posted to and signed for.
    endpoint: String,
    /// The `host` header: the endpoint's authority.
    host: String,
    region: String,
    user_agent: String,
    credentials: SharedCredentialsProvider,
    /// The credentials last fetched.
    identity: RwLock<Option<Identity>>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for SignedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedClient")
            .field("endpoint", &self.inner.endpoint)
            .field("region", &self.inner.region)
            .finish_non_exhaustive()
    }
}

impl SignedClient {
    /// The client for the SDK configuration's region, endpoint settings and credentials.
    pub async fn from_sdk(sdk: &aws_config::SdkConfig) -> Result<Self, WireError> {
        let region = sdk.region().ok_or(WireError::NoRegion)?.to_string();
        let credentials = sdk.credentials_provider().ok_or(WireError::NoCredentials)?;
        let endpoint = resolve_endpoint(sdk, &region).await?;
        Self::new(&endpoint, &region, credentials)
    }

    /// The client for an endpoint URL, signing for `region` with `credentials`.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
    ) -> Result<Self, WireError> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| WireError::Endpoint(format!("{endpoint:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) {
            return Err(WireError::Endpoint(format!(
                "{endpoint:?} is not an http:// or https:// URL"
            )));
        }
        let host = uri
            .authority()
            .ok_or_else(|| WireError::Endpoint(format!("{endpoint:?} names no host")))?
            .to_string();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = connector_builder(&uri)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(SignedClient {
            inner: Arc::new(Inner {
                endpoint: uri.to_string(),
                host,
                region: region.to_owned(),
                user_agent: format!("outbox-relay/{}", env!("CARGO_PKG_VERSION")),
                credentials,
                identity: RwLock::new(None),
                http: Client::builder(TokioExecutor::new()).build(https),
            }),
        })
    }

    /// The endpoint URL calls go to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The credentials to sign with: the ones last fetched while they have more than
    /// [`REFRESH_BEFORE_EXPIRY`] left, else fresh ones from the provider.
    async fn identity(&self) -> Result<Identity, CallResult> {
        let now = SystemTime::now();
        let cached = (self.inner.identity.read())
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|i| fresh(i, now));
        if let Some(identity) = cached {
            return Ok(identity);
        }
        let credentials = self
            .inner
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| {
                tracing::warn!(
                    error = %aws_smithy_types::error::display::DisplayErrorContext(&e),
                    "no AWS credentials to sign PutEvents with"
                );
                CallResult::Transient("CredentialsError".to_owned())
            })?;
        let identity = Identity::from(credentials);
        *self
            .inner
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
        Ok(identity)
    }

    /// The signed HTTP request of one call.
    fn request(
        &self,
        body: Vec<u8>,
        identity: &Identity,
    ) -> Result<http::Request<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
        let inner = &*self.inner;
        let headers = [
            ("host", inner.host.as_str()),
            ("content-type", protocol::CONTENT_TYPE),
            ("x-amz-target", protocol::TARGET),
        ];
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(identity)
            .region(&inner.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            "POST",
            inner.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::post(inner.endpoint.as_str());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut request = request
            .header("user-agent", inner.user_agent.as_str())
            .body(Full::new(Bytes::from(body)))?;
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

impl PutEventsApi for SignedClient {
    async fn put_entries(&self, entries: &[&Prepared]) -> CallResult {
        let body = protocol::request_body(entries);
        let identity = match self.identity().await {
            Ok(identity) => identity,
            Err(result) => return result,
        };
        let request = match self.request(body, &identity) {
            Ok(request) => request,
            Err(e) => return CallResult::Terminal("SigningError".to_owned(), e.to_string()),
        };
        let response = match self.inner.http.request(request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(error = %e, "PutEvents request not answered");
                return CallResult::Transient("DispatchFailure".to_owned());
            }
        };
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.into_body().collect().await {
            Ok(body) => protocol::read_response(
                status,
                error_type.as_deref(),
                &body.to_bytes(),
                entries.len(),
            ),
            Err(_) => CallResult::Transient("ResponseError".to_owned()),
        }
    }
}

/// TLS with rustls and aws-lc (the SDK's default stack) and the system's root certificates,
/// loaded at start for an HTTPS endpoint. A plain-HTTP endpoint (a local emulator) needs none,
/// so its client loads none: a few milliseconds less before the function's first invocation.
fn connector_builder(
    uri: &http::Uri,
) -> Result<hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>, WireError>
{
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        return builder
            .with_provider_and_native_roots(provider)
            .map_err(WireError::TlsRoots);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WireError::Tls(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(builder.with_tls_config(config))
}

/// True when `identity` does not expire within [`REFRESH_BEFORE_EXPIRY`] of `now`.
fn fresh(identity: &Identity, now: SystemTime) -> bool {
    identity.expiration().is_none_or(|expiry| {
        expiry
            .duration_since(now)
            .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
    })
}

/// The endpoint URL by the SDK's rules for EventBridge: the configured endpoint URL (as its
/// client reads it), FIPS and dual-stack settings, the region's partition.
async fn resolve_endpoint(sdk: &aws_config::SdkConfig, region: &str) -> Result<String, WireError> {
    let params = Params::builder()
        .region(region)
        .use_fips(sdk.use_fips().unwrap_or(false))
        .use_dual_stack(sdk.use_dual_stack().unwrap_or(false))
        .set_endpoint(configured_endpoint_url(sdk))
        .build()
        .map_err(|e| WireError::Endpoint(e.to_string()))?;
    let endpoint = DefaultResolver::new()
        .resolve_endpoint(&params)
        .await
        .map_err(|e| WireError::Endpoint(e.to_string()))?;
    Ok(endpoint.url().to_owned())
}

/// The endpoint URL configured for EventBridge, as the SDK's client takes it from an
/// [`aws_config::SdkConfig`]: one set in code wins; else the service's own setting
/// (`AWS_ENDPOINT_URL_EVENTBRIDGE`, a profile's `services` section), else the global one
/// (`AWS_ENDPOINT_URL`).
fn configured_endpoint_url(sdk: &aws_config::SdkConfig) -> Option<String> {
    let global = sdk.endpoint_url().map(str::to_owned);
    if sdk.get_origin("endpoint_url").is_client_config() {
        return global;
    }
    let key = ServiceConfigKey::builder()
        .service_id("EventBridge")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok()?;
    sdk.service_config()
        .and_then(|c| c.load_config(key))
        .or(global)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::{BehaviorVersion, Region, SdkConfig};

    fn sdk() -> aws_types::sdk_config::Builder {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
    }

    #[tokio::test]
    async fn the_endpoint_follows_the_sdk_rules() {
        let resolve = |sdk: SdkConfig| async move { resolve_endpoint(&sdk, "eu-west-1").await };
        assert_eq!(
            resolve(sdk().build()).await.unwrap(),
            "https://events.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            resolve(sdk().use_fips(true).build()).await.unwrap(),
            "https://events-fips.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            resolve(sdk().endpoint_url("http://127.0.0.1:4566").build())
                .await
                .unwrap(),
            "http://127.0.0.1:4566"
        );
        let china = resolve_endpoint(&sdk().build(), "cn-north-1")
            .await
            .unwrap();
        assert_eq!(china, "https://events.cn-north-1.amazonaws.com.cn");
    }

    #[tokio::test]
    async fn an_endpoint_that_is_no_http_url_is_an_error_naming_it() {
        for endpoint in ["not a url", "localhost:4566", "ftp://127.0.0.1/"] {
            let sdk = sdk()
                .endpoint_url(endpoint)
                .credentials_provider(SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("AKID", "secret", None, None, "t"),
                ))
                .build();
            let error = SignedClient::from_sdk(&sdk).await.expect_err(endpoint);
            assert!(error.to_string().contains(endpoint), "{error}");
        }
    }

    #[test]
    fn credentials_are_kept_until_shortly_before_they_expire() {
        let now = SystemTime::now();
        let expiring = |left: Duration| {
            Identity::from(aws_credential_types::Credentials::new(
                "AKID",
                "secret",
                None,
                Some(now + left),
                "test",
            ))
        };
        assert!(fresh(&expiring(Duration::from_secs(3600)), now));
        assert!(!fresh(&expiring(Duration::from_secs(60)), now));
        let forever = aws_credential_types::Credentials::new("AKID", "secret", None, None, "t");
        assert!(fresh(&Identity::from(forever), now));
    }
}
