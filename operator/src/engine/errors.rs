//! SDK error → [`EngineError`]: the AWS error code and message are kept, and the error is
//! classified once, here: access denied, transient (throttling, 5xx, conflicts that settle,
//! a new role not yet assumable) or terminal.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::crd::Reason;

/// What kind of failure an AWS error code is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AccessDenied,
    Transient,
    Terminal,
}

/// True for the codes with which AWS says "slow down" (the control planes of Lambda and IAM
/// throttle at low rates): a throttle is waited out, never reported as a failure.
pub fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "ProvisionedThroughputExceededException"
    )
}

/// Classifies an AWS error by code, message and HTTP status.
pub fn classify(code: &str, message: &str, status: Option<u16>) -> Kind {
    if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" {
        return Kind::AccessDenied;
    }
    let transient_codes = [
        "LimitExceededException",
        "ContinuousBackupsUnavailableException",
        "ResourceInUseException",
        "ResourceConflictException",
        "ConcurrentModificationException",
        "ConcurrentModification",
        "OperationAbortedException",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "InternalError",
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TimeoutError",
        "DispatchFailure",
        "ResponseError",
    ];
    if is_throttle_code(code) || transient_codes.contains(&code) || status.is_some_and(|s| s >= 500)
    {
        return Kind::Transient;
    }
    // IAM is eventually consistent: a role or policy written seconds ago is not yet visible to
    // Lambda ("cannot be assumed", "execution role does not have permissions").
    if code == "InvalidParameterValueException"
        && (message.contains("cannot be assumed by Lambda")
            || message.contains("execution role does not have permissions"))
    {
        return Kind::Transient;
    }
    Kind::Terminal
}

/// True for the "does not exist" codes of the services the engine uses.
pub fn is_not_found_code(code: &str) -> bool {
    matches!(
        code,
        "ResourceNotFoundException"
            | "NoSuchEntity"
            | "NoSuchEntityException"
            | "NoSuchBucket"
            | "NotFound"
            | "NoSuchTagSet"
            | "NoSuchTagSetError"
            | "TableNotFoundException"
    )
}

/// The error code of an SDK error, if the service sent one.
pub fn code_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.code()
}

/// True when the SDK error says the resource does not exist (code or HTTP 404).
pub fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    if err.code().is_some_and(is_not_found_code) {
        return true;
    }
    matches!(err, SdkError::ServiceError(_))
        && err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() == 404)
}

/// Converts an SDK error into an [`EngineError`] naming the operation and resource.
pub fn aws_error<E>(err: &SdkError<E, HttpResponse>, operation: &str, resource: &str) -> EngineError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(e) = super::not_leading_error(err, operation, resource) {
        return e;
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (code, message) = match err {
        SdkError::ServiceError(_) => (
            err.code()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP{}", status.unwrap_or(0))),
            err.message()
                .map(str::to_owned)
                .unwrap_or_else(|| DisplayErrorContext(err).to_string()),
        ),
        SdkError::TimeoutError(_) => (
            "TimeoutError".to_owned(),
            DisplayErrorContext(err).to_string(),
        ),
        SdkError::DispatchFailure(_) => (
            "DispatchFailure".to_owned(),
            DisplayErrorContext(err).to_string(),
        ),
        SdkError::ResponseError(_) => (
            "ResponseError".to_owned(),
            DisplayErrorContext(err).to_string(),
        ),
        _ => (
            "ConstructionFailure".to_owned(),
            DisplayErrorContext(err).to_string(),
        ),
    };
    from_code(code, message, status, operation, resource)
}

/// Builds the [`EngineError`] for an AWS error code.
pub fn from_code(
    code: String,
    message: String,
    status: Option<u16>,
    operation: &str,
    resource: &str,
) -> EngineError {
    match classify(&code, &message, status) {
        Kind::AccessDenied => EngineError::AccessDenied {
            resource: resource.to_owned(),
            operation: operation.to_owned(),
            code,
            message,
        },
        Kind::Transient => EngineError::Aws {
            resource: resource.to_owned(),
            operation: operation.to_owned(),
            code,
            message,
            class: ErrorClass::Transient,
        },
        Kind::Terminal => EngineError::Aws {
            resource: resource.to_owned(),
            operation: operation.to_owned(),
            code,
            message,
            class: ErrorClass::Terminal,
        },
    }
}

/// `result.aws("Operation", "resource")?` converts SDK errors in one place.
pub trait AwsResultExt<T> {
    fn aws(self, operation: &str, resource: &str) -> Result<T, EngineError>;
}

impl<T, E> AwsResultExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn aws(self, operation: &str, resource: &str) -> Result<T, EngineError> {
        self.map_err(|e| aws_error(&e, operation, resource))
    }
}

/// `result.found("Operation", "resource")?`: "not found" means absent (`None`); any other error
/// is converted like [`AwsResultExt::aws`].
pub trait FoundExt<T> {
    fn found(self, operation: &str, resource: &str) -> Result<Option<T>, EngineError>;
}

impl<T, E> FoundExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn found(self, operation: &str, resource: &str) -> Result<Option<T>, EngineError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(aws_error(&e, operation, resource)),
        }
    }
}

/// A defect of ours (a request the SDK cannot build, a document that does not serialize, a
/// mutating call in a read-only pass): reported as InternalError, never blamed on the spec.
pub fn internal(context: impl Into<String>, err: impl std::fmt::Display) -> EngineError {
    let e = EngineError::Internal {
        context: context.into(),
        message: err.to_string(),
    };
    tracing::error!(error = %e, "internal error: a defect of outbox-operator, please report it");
    e
}

/// True when an engine error means "a role the engine just created is not assumable yet".
pub fn is_role_not_ready(err: &EngineError) -> bool {
    matches!(err, EngineError::Aws { code, message, .. }
        if code == "InvalidParameterValueException" && message.contains("cannot be assumed by Lambda"))
}

/// How an error should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, not-yet-active, role not yet assumable: retry with backoff.
    Transient,
    /// Needs a change first (spec, permissions, a foreign resource): no hot loop.
    Terminal,
}

/// Engine errors. Every message names the AWS resource (and the AWS error code where there is one).
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    /// The spec cannot be realised (e.g. a lambda artifact for the architecture is missing).
    #[error("invalid spec: {message}")]
    InvalidSpec { message: String },
    /// A resource exists that this pipeline does not own.
    #[error("conflict: {resource} exists and is not owned by this pipeline ({detail})")]
    Conflict { resource: String, detail: String },
    /// AWS refused for lack of permission.
    #[error("access denied: {operation} on {resource}: {code}: {message}")]
    AccessDenied {
        resource: String,
        operation: String,
        code: String,
        message: String,
    },
    /// Any other AWS error.
    #[error("{operation} on {resource} failed: {code}: {message}")]
    Aws {
        resource: String,
        operation: String,
        code: String,
        message: String,
        class: ErrorClass,
    },
    /// A defect of ours, not of the spec or of AWS (see [`internal`]).
    #[error("internal error: {context}: {message}")]
    Internal { context: String, message: String },
    /// A mutating call was stopped by the leadership fence: this replica is not (or no longer
    /// sure to be) the leader. Transient; the new leader does the work.
    #[error("{operation} on {resource} not sent: this replica is not the leader")]
    NotLeading { operation: String, resource: String },
}

impl EngineError {
    /// The condition reason this error is reported with.
    pub fn reason(&self) -> Reason {
        match self {
            EngineError::InvalidSpec { .. } => Reason::InvalidSpec,
            EngineError::Internal { .. } => Reason::InternalError,
            EngineError::Conflict { .. } => Reason::Conflict,
            EngineError::AccessDenied { .. } => Reason::AccessDenied,
            // Throttled: the pass is requeued with backoff; the pipeline is progressing, not failing.
            EngineError::Aws { code, .. } if is_throttle_code(code) => Reason::Progressing,
            EngineError::Aws { .. } | EngineError::NotLeading { .. } => Reason::AwsError,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Aws { class, .. } => *class,
            EngineError::NotLeading { .. } => ErrorClass::Transient,
            _ => ErrorClass::Terminal,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_is_transient_and_progressing_never_aws_error() {
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "Throttling",
        ] {
            let e = from_code(
                code.into(),
                "Rate exceeded".into(),
                Some(400),
                "CreateRole",
                "iam role r",
            );
            assert!(e.is_transient(), "{code}");
            assert_eq!(e.reason(), Reason::Progressing, "{code}");
        }
        let other = from_code(
            "ServiceUnavailable".into(),
            "".into(),
            Some(503),
            "GetRole",
            "iam role r",
        );
        assert_eq!(other.reason(), Reason::AwsError);
    }

    #[test]
    fn a_defect_of_ours_is_an_internal_error_not_the_users_invalid_spec() {
        let e = internal("building table tag k", "missing value");
        assert_eq!(e.reason(), Reason::InternalError);
        assert_eq!(e.class(), ErrorClass::Terminal);
        assert!(
            e.to_string()
                .starts_with("internal error: building table tag k"),
            "{e}"
        );
    }

    #[test]
    fn access_denied_codes_are_access_denied() {
        assert_eq!(classify("AccessDenied", "", Some(403)), Kind::AccessDenied);
        assert_eq!(
            classify("AccessDeniedException", "", Some(400)),
            Kind::AccessDenied
        );
        assert_eq!(
            classify("UnauthorizedOperation", "", None),
            Kind::AccessDenied
        );
    }

    #[test]
    fn throttling_5xx_conflicts_and_unassumable_roles_are_transient() {
        assert_eq!(
            classify("ThrottlingException", "", Some(400)),
            Kind::Transient
        );
        assert_eq!(classify("Throttling", "", Some(400)), Kind::Transient);
        assert_eq!(classify("Whatever", "", Some(503)), Kind::Transient);
        assert_eq!(
            classify("ResourceConflictException", "", Some(409)),
            Kind::Transient
        );
        assert_eq!(
            classify(
                "InvalidParameterValueException",
                "The role defined for the function cannot be assumed by Lambda.",
                Some(400)
            ),
            Kind::Transient
        );
        assert_eq!(
            classify(
                "InvalidParameterValueException",
                "The function execution role does not have permissions to call GetRecords on DynamoDB",
                Some(400)
            ),
            Kind::Transient
        );
    }

    #[test]
    fn validation_errors_are_terminal() {
        assert_eq!(
            classify("ValidationException", "bad", Some(400)),
            Kind::Terminal
        );
        assert_eq!(
            classify("InvalidParameterValueException", "bad memory", Some(400)),
            Kind::Terminal
        );
    }

    #[test]
    fn errors_keep_code_and_message() {
        let e = from_code(
            "AccessDeniedException".into(),
            "no".into(),
            Some(400),
            "CreateTable",
            "dynamodb table t",
        );
        assert_eq!(e.reason(), crate::crd::Reason::AccessDenied);
        let text = e.to_string();
        assert!(text.contains("AccessDeniedException") && text.contains("CreateTable"));
    }
}

#[cfg(test)]
mod mutating_tests {
    #[test]
    fn reads_are_not_mutating() {
        use crate::engine::is_mutating;
        for op in [
            "DescribeTable",
            "GetRole",
            "ListRules",
            "HeadBucket",
            "GetPolicy",
        ] {
            assert!(!is_mutating(op), "{op}");
        }
        for op in [
            "CreateTable",
            "PutRolePolicy",
            "UpdateEventSourceMapping",
            "TagResource",
            "AddPermission",
        ] {
            assert!(is_mutating(op), "{op}");
        }
    }
}
