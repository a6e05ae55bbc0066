//! Pre-flight existence of the SQS queues a spec names (consumer targets, dead-letter queues and
//! an SQS failure destination): a queue that does not exist is refused before anything is
//! created, instead of a rule that delivers nowhere going Ready. A queue in another account
//! whose policy does not let the operator look it up cannot be checked; that is not an error.

use aws_sdk_sqs::error::ProvideErrorMetadata;

use super::context::Ctx;
use super::errors::aws_error;
use super::{Component, EngineError};

/// Every SQS ARN the spec names, with the field that names it.
fn queue_arns<'s>(ctx: &Ctx<'s>) -> Vec<(String, &'s str, Component)> {
    let mut out = Vec::new();
    if let Some(arn) = &ctx.spec.relay.on_failure_destination_arn {
        out.push((
            "spec.relay.onFailureDestinationArn".to_owned(),
            arn.as_str(),
            Component::Relay,
        ));
    }
    for (i, c) in ctx.spec.consumers.iter().enumerate() {
        if let Some(arn) = &c.target.sqs_queue_arn {
            let field = format!("spec.consumers[{i}].target.sqsQueueArn");
            out.push((field, arn.as_str(), Component::Consumers));
        }
        if let Some(arn) = &c.dead_letter_arn {
            let field = format!("spec.consumers[{i}].deadLetterArn");
            out.push((field, arn.as_str(), Component::Consumers));
        }
    }
    out.retain(|(_, arn, _)| arn.starts_with("arn:") && arn.split(':').nth(2) == Some("sqs"));
    out
}

/// `(account, queue name)` of `arn:<partition>:sqs:<region>:<account>:<name>`.
pub fn account_and_name(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        [_, _, _, _, account, name] if !account.is_empty() && !name.is_empty() => {
            Some((account, name))
        }
        _ => None,
    }
}

/// Each named queue exists (GetQueueUrl by name and owner account).
pub async fn exist(ctx: &Ctx<'_>) -> Result<(), (Component, EngineError)> {
    for (field, arn, component) in queue_arns(ctx) {
        let Some((account, name)) = account_and_name(arn) else {
            continue; // the pure ARN check has refused it already
        };
        let result = ctx
            .clients
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await;
        let Err(e) = result else { continue };
        let missing = e
            .as_service_error()
            .is_some_and(|s| s.is_queue_does_not_exist())
            || e.code().is_some_and(|c| c.contains("NonExistentQueue"));
        if missing {
            let message = format!("{field} {arn} does not exist");
            return Err((component, EngineError::InvalidSpec { message }));
        }
        let error = aws_error(&e, "GetQueueUrl", &format!("sqs queue {arn}"));
        if matches!(error, EngineError::AccessDenied { .. }) {
            tracing::info!(%field, %arn, "cannot look the queue up (another account's policy?); not checked");
            continue;
        }
        return Err((component, error));
    }
    Ok(())
}
