//! PutEvents in the awsJson1.1 protocol, as the SDK's serialiser and deserialiser speak it: the
//! request body of a list of entries, and a response read back into the publisher's
//! [`CallResult`]. Pure: no I/O.

use std::borrow::Cow;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::{Deserialize, Serialize};

use crate::event::Prepared;
use crate::publish::{CallResult, call_failed, entry_results};

/// The `X-Amz-Target` header of the operation.
pub const TARGET: &str = "AWSEvents.PutEvents";
/// The protocol's content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

#[derive(Serialize)]
struct Request<'a> {
    #[serde(rename = "Entries")]
    entries: Vec<Entry<'a>>,
}

/// One entry as the SDK writes it: absent members left out, `Time` in epoch seconds.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<EpochSeconds>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    resources: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    detail_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_bus_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_header: Option<&'a str>,
}

/// A timestamp as awsJson1.1 writes it: whole seconds as an integer, otherwise a fraction.
#[derive(Serialize)]
#[serde(untagged)]
enum EpochSeconds {
    Whole(i64),
    Fraction(f64),
}

impl<'a> From<&'a PutEventsRequestEntry> for Entry<'a> {
    fn from(entry: &'a PutEventsRequestEntry) -> Self {
        Entry {
            time: entry.time().map(|t| {
                if t.subsec_nanos() == 0 {
                    EpochSeconds::Whole(t.secs())
                } else {
                    EpochSeconds::Fraction(t.as_secs_f64())
                }
            }),
            source: entry.source(),
            resources: entry.resources(),
            detail_type: entry.detail_type(),
            detail: entry.detail(),
            event_bus_name: entry.event_bus_name(),
            trace_header: entry.trace_header(),
        }
    }
}

/// The request body of one PutEvents call with `entries`, in order.
pub fn request_body(entries: &[&Prepared]) -> Vec<u8> {
    let capacity = 16 + entries.iter().map(|p| p.size + 256).sum::<usize>();
    let mut body = Vec::with_capacity(capacity);
    let request = Request {
        entries: entries.iter().map(|p| Entry::from(&p.entry)).collect(),
    };
    // Writing borrowed strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut body, &request).is_err() {
        body.clear();
    }
    body
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "Entries", default, borrow)]
    entries: Vec<ResultEntry<'a>>,
}

#[derive(Deserialize)]
struct ResultEntry<'a> {
    #[serde(rename = "ErrorCode", default, borrow)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorMessage", default, borrow)]
    error_message: Option<Cow<'a, str>>,
}

/// An error response's body: the code (`code`, else `__type`) and message members.
#[derive(Deserialize, Default)]
struct ErrorBody<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(rename = "__type", default, borrow)]
    type_: Option<Cow<'a, str>>,
    #[serde(alias = "Message", alias = "errorMessage", default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// What a PutEvents call of `sent` entries came to, from the response's status, its
/// `x-amzn-errortype` header and its body.
pub fn read_response(
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
    sent: usize,
) -> CallResult {
    if (200..300).contains(&status) {
        let Ok(response) = serde_json::from_slice::<Response<'_>>(body) else {
            // The call may or may not have published: send the entries again (duplicates carry
            // the same event id), as the SDK's unreadable-response error is handled.
            return CallResult::Transient("ResponseError".to_owned());
        };
        return entry_results(
            sent,
            response.entries.into_iter().map(|r| {
                r.error_code.map(|code| {
                    let message = r.error_message.unwrap_or_default();
                    (code.into_owned(), message.into_owned())
                })
            }),
        );
    }
    let error = serde_json::from_slice::<ErrorBody<'_>>(body).unwrap_or_default();
    let code = error_type
        .or(error.code.as_deref())
        .or(error.type_.as_deref())
        .map_or("Unknown", sanitize_error_code);
    call_failed(
        code.to_owned(),
        error.message.unwrap_or_default().into_owned(),
        status,
    )
}

/// The bare error code of a `x-amzn-errortype` header or `__type` member: without a namespace
/// (`aws.protocoltests#FooError`) and without a trailing URI (`FooError:http://…`).
fn sanitize_error_code(code: &str) -> &str {
    let code = code.split_once(':').map_or(code, |(code, _)| code);
    code.split_once('#').map_or(code, |(_, code)| code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_lose_their_namespace_and_uri() {
        assert_eq!(
            sanitize_error_code("ThrottlingException:http://internal.amazon.com/coral/"),
            "ThrottlingException"
        );
        assert_eq!(
            sanitize_error_code("com.amazon.coral.validate#ValidationException"),
            "ValidationException"
        );
        assert_eq!(
            sanitize_error_code("InternalException"),
            "InternalException"
        );
    }
}
