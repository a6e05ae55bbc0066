//! The operator's startup check of its AWS identity (as cert-manager's startupapicheck checks its
//! API): `sts:GetCallerIdentity` with the same credentials chain the engine uses (IRSA, Pod
//! Identity, environment, profile). Missing or wrong credentials stop `run` with a message that
//! says what to fix, before the controller watches anything (so the pod never turns ready).
//! GetCallerIdentity needs no IAM permission.

use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};

/// Who the operator is in AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub arn: String,
}

/// Asks STS who the credentials belong to; the error says what to check.
pub async fn check(sts: &aws_sdk_sts::Client) -> anyhow::Result<Identity> {
    match sts.get_caller_identity().send().await {
        Ok(out) => Ok(Identity {
            account: out.account().unwrap_or_default().to_owned(),
            arn: out.arn().unwrap_or_default().to_owned(),
        }),
        Err(e) => {
            let hint = match e.code() {
                Some(
                    "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "UnrecognizedClientException",
                ) => {
                    "the credentials are not valid: check the access key, or the role the service account assumes"
                }
                Some("ExpiredToken" | "ExpiredTokenException") => {
                    "the credentials have expired: refresh them (IRSA and Pod Identity refresh on their own)"
                }
                Some("AccessDenied" | "AccessDeniedException") => {
                    "the identity may not call STS here (an SCP or VPC endpoint policy denies it)"
                }
                Some(_) => "STS refused the call",
                None => {
                    "no usable credentials or no route to STS: give the pod an IAM role (IRSA annotation eks.amazonaws.com/role-arn on its service account, or an EKS Pod Identity association) or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and check AWS_REGION and AWS_ENDPOINT_URL"
                }
            };
            anyhow::bail!(
                "cannot verify the operator's AWS identity (sts:GetCallerIdentity): {hint}: {}",
                DisplayErrorContext(&e)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sts::operation::get_caller_identity::{
        GetCallerIdentityError, GetCallerIdentityOutput,
    };
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
    };
    use aws_smithy_types::error::ErrorMetadata;

    fn sts(rule: &Rule) -> aws_sdk_sts::Client {
        let conf = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "AKID", "SECRET", None, None, "test",
            ))
            .http_client(create_mock_http_client())
            .interceptor(
                MockResponseInterceptor::new()
                    .rule_mode(RuleMode::Sequential)
                    .with_rule(rule),
            )
            .build();
        aws_sdk_sts::Client::from_conf(conf)
    }

    #[tokio::test]
    async fn good_credentials_give_the_account_and_arn() {
        let ok = mock!(aws_sdk_sts::Client::get_caller_identity).then_output(|| {
            GetCallerIdentityOutput::builder()
                .account("123456789012")
                .arn("arn:aws:sts::123456789012:assumed-role/outbox-operator/pod")
                .build()
        });
        let sts = sts(&ok);
        let id = check(&sts).await.expect("identity");
        assert_eq!(id.account, "123456789012");
        assert!(id.arn.contains("assumed-role/outbox-operator"));
    }

    #[tokio::test]
    async fn invalid_credentials_say_what_to_check() {
        let bad = mock!(aws_sdk_sts::Client::get_caller_identity).then_error(|| {
            GetCallerIdentityError::generic(
                ErrorMetadata::builder()
                    .code("InvalidClientTokenId")
                    .message("The security token included in the request is invalid.")
                    .build(),
            )
        });
        let sts = sts(&bad);
        let e = check(&sts).await.expect_err("bad credentials").to_string();
        assert!(e.contains("sts:GetCallerIdentity"), "{e}");
        assert!(e.contains("credentials are not valid"), "{e}");
        assert!(e.contains("InvalidClientTokenId"), "{e}");
    }
}
