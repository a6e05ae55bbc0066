//! The SQS failure destination as replay uses it: one message per parked batch, its body the
//! invocation record (metadata only).
//!
//! Calls: GetQueueUrl, ReceiveMessage, DeleteMessage (a batch fully replayed: the mark, so a
//! second run publishes nothing), ChangeMessageVisibility to 0 (a batch left parked, or not
//! reached: visible again at once). A run holds the messages it received invisible for
//! [`HOLD_SECONDS`]; a dry run receives with `VisibilityTimeout=0` (the read-only guard's one
//! exception, see `fence.rs`), so nothing is held.

use std::collections::HashSet;

use aws_sdk_sqs::Client;

use super::metadata::Found;
use crate::engine::EngineError;
use crate::engine::errors::aws_error;

/// How long a run holds the messages it received (seconds): longer than a run takes normally;
/// after a crash they are visible again once it passes.
pub const HOLD_SECONDS: i32 = 900;
/// The most batches one run reads from the queue (a re-run takes the rest).
pub const MAX_MESSAGES: usize = 1000;
/// The most receive calls of a dry run (it sees the same messages again and again).
const MAX_PEEKS: usize = 100;

fn resource(url: &str) -> String {
    format!("sqs queue {url}")
}

/// The queue's URL from its name and owning account.
pub async fn url(sqs: &Client, name: &str, account: &str) -> Result<String, EngineError> {
    let out = sqs
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| aws_error(&e, "sqs:GetQueueUrl", &format!("sqs queue {name}")))?;
    Ok(out.queue_url.unwrap_or_default())
}

/// Every message in the queue (up to [`MAX_MESSAGES`]). A dry run peeks (visibility 0): it stops
/// once a receive brings no message it has not seen.
pub async fn receive(sqs: &Client, url: &str, dry_run: bool) -> Result<Vec<Found>, EngineError> {
    let mut found: Vec<Found> = Vec::new();
    let mut seen = HashSet::new();
    let visibility = if dry_run { 0 } else { HOLD_SECONDS };
    for _ in 0..MAX_PEEKS {
        if found.len() >= MAX_MESSAGES {
            break;
        }
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(visibility)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| aws_error(&e, "sqs:ReceiveMessage", &resource(url)))?;
        let mut new = 0;
        for m in out.messages() {
            let id = m.message_id().unwrap_or_default().to_owned();
            if !seen.insert(id.clone()) {
                continue;
            }
            new += 1;
            found.push(Found {
                key: format!("sqs message {id}"),
                body: m.body().unwrap_or_default().as_bytes().to_vec(),
                handle: m.receipt_handle().map(str::to_owned),
            });
        }
        if new == 0 {
            break;
        }
    }
    Ok(found)
}

/// Deletes the message of a fully replayed batch.
pub async fn delete(sqs: &Client, url: &str, handle: &str) -> Result<(), EngineError> {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(handle)
        .send()
        .await
        .map_err(|e| aws_error(&e, "sqs:DeleteMessage", &resource(url)))?;
    Ok(())
}

/// Makes the message of a batch left parked visible again at once.
pub async fn release(sqs: &Client, url: &str, handle: &str) -> Result<(), EngineError> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(handle)
        .visibility_timeout(0)
        .send()
        .await
        .map_err(|e| aws_error(&e, "sqs:ChangeMessageVisibility", &resource(url)))?;
    Ok(())
}
