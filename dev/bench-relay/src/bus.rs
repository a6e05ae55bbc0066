//! A local EventBridge PutEvents endpoint (awsJson1.1): publishes every entry, except that each
//! entry is throttled (`ThrottlingException` in its result) with a fixed probability, drawn from
//! a seeded generator so a run is repeatable. It logs what was published, in order, for the
//! lossless and per-item order checks.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// What the endpoint saw.
#[derive(Clone, Debug, Default)]
pub struct BusStats {
    pub calls: usize,
    /// Entries received, retries included.
    pub entries: usize,
    pub throttled: usize,
    /// Published entries in publishing order: (sequence number, item keys as JSON text).
    pub published: Vec<(String, String)>,
    /// Requests that were not a PutEvents call with readable entries.
    pub bad_requests: usize,
}

pub struct Bus {
    throttle: f64,
    /// Entries' Detail is not the contract's (another relay, e.g. the AWS sample's): count them,
    /// record nothing to check.
    opaque: bool,
    state: Mutex<(StdRng, BusStats)>,
}

impl Bus {
    /// `throttle` is the probability, in [0, 1], that an entry is throttled; `opaque`: the
    /// entries' Detail is not the contract's event (nothing is recorded for the checks).
    pub fn new(throttle: f64, seed: u64, opaque: bool) -> Arc<Self> {
        Arc::new(Bus {
            throttle: throttle.clamp(0.0, 1.0),
            opaque,
            state: Mutex::new((StdRng::seed_from_u64(seed), BusStats::default())),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", post(put_events))
            .with_state(self.clone())
    }

    pub fn stats(&self) -> BusStats {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }

    /// The response body to a PutEvents request body, or None for an unreadable request.
    fn answer(&self, body: &[u8]) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Request {
            #[serde(rename = "Entries")]
            entries: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "Detail")]
            detail: String,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Detail {
            sequence_number: String,
            keys: serde_json::Value,
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (rng, stats) = &mut *state;
        let Ok(request) = serde_json::from_slice::<Request>(body) else {
            stats.bad_requests += 1;
            return None;
        };
        stats.calls += 1;
        stats.entries += request.entries.len();
        let mut results = Vec::with_capacity(request.entries.len());
        let mut failed = 0;
        for entry in request.entries {
            if rng.random_bool(self.throttle) {
                failed += 1;
                results.push(
                    r#"{"ErrorCode":"ThrottlingException","ErrorMessage":"Rate exceeded"}"#
                        .to_owned(),
                );
                continue;
            }
            let n = stats.published.len();
            let published = if self.opaque {
                (n.to_string(), String::new())
            } else {
                let Ok(detail) = serde_json::from_str::<Detail>(&entry.detail) else {
                    stats.bad_requests += 1;
                    return None;
                };
                (detail.sequence_number, detail.keys.to_string())
            };
            stats.published.push(published);
            results.push(format!(
                r#"{{"EventId":"00000000-0000-4000-8000-{n:012x}"}}"#
            ));
        }
        stats.throttled += failed;
        Some(format!(
            r#"{{"FailedEntryCount":{failed},"Entries":[{}]}}"#,
            results.join(",")
        ))
    }
}

async fn put_events(State(bus): State<Arc<Bus>>, body: Bytes) -> Response {
    match bus.answer(&body) {
        Some(answer) => (
            [
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amzn-requestid", "00000000-0000-4000-8000-000000000000"),
            ],
            answer,
        )
            .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.1")],
            r#"{"__type":"ValidationException","message":"not a PutEvents request"}"#,
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seqs: &[&str]) -> String {
        let entries: Vec<serde_json::Value> = seqs
            .iter()
            .map(|s| {
                let detail = serde_json::json!({"sequenceNumber": s, "keys": {"id": s}});
                serde_json::json!({"Source": "s", "DetailType": "d", "Detail": detail.to_string()})
            })
            .collect();
        serde_json::json!({ "Entries": entries }).to_string()
    }

    #[test]
    fn every_entry_gets_a_result_and_only_throttled_ones_fail() {
        let bus = Bus::new(0.5, 7, false);
        let answer: serde_json::Value = serde_json::from_str(
            &bus.answer(request(&["1", "2", "3", "4"]).as_bytes())
                .unwrap(),
        )
        .unwrap();
        let entries = answer["Entries"].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        let failed = entries
            .iter()
            .filter(|e| e.get("ErrorCode").is_some())
            .count();
        assert_eq!(answer["FailedEntryCount"], failed);
        let stats = bus.stats();
        assert_eq!(
            (stats.calls, stats.entries, stats.throttled),
            (1, 4, failed)
        );
        assert_eq!(stats.published.len(), 4 - failed);
    }

    #[test]
    fn without_throttling_everything_is_published_in_order() {
        let bus = Bus::new(0.0, 7, false);
        bus.answer(request(&["1", "2"]).as_bytes()).unwrap();
        let seqs: Vec<String> = bus.stats().published.into_iter().map(|p| p.0).collect();
        assert_eq!(seqs, ["1", "2"]);
        assert!(bus.answer(b"{}").is_none());
    }

    #[test]
    fn an_opaque_bus_counts_entries_whatever_their_detail() {
        let body = r#"{"Entries":[{"Source":"s","DetailType":"d","Detail":"{\"name\":\"x\"}"}]}"#;
        assert!(Bus::new(0.0, 7, false).answer(body.as_bytes()).is_none());
        let bus = Bus::new(0.0, 7, true);
        assert!(bus.answer(body.as_bytes()).unwrap().contains("EventId"));
        let stats = bus.stats();
        assert_eq!(
            (stats.calls, stats.entries, stats.published.len()),
            (1, 1, 1)
        );
    }
}
