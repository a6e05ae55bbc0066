//! The benchmark's input: INSERT stream records of users shaped like the sample's (the item the
//! writer puts: `id`, `username`, `email`, `displayName`, `createdAt`), on a `NEW_IMAGE` stream.

use serde_json::json;

/// The stream the records come from.
pub const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/users/stream/2026-01-01T00:00:00.000";

/// The relay's `OUTBOX_EVENTS`: the sample's pipeline (examples/user-created.yaml).
pub const EVENTS: &str = r#"[{"change":"INSERT","source":"myapp.users","detailType":"UserCreated","payload":"newImage"}]"#;

/// The records, each serialised once, with what the checks need to know of each.
pub struct Records {
    /// Each record as JSON text, in stream order.
    pub json: Vec<String>,
    /// Each record's sequence number.
    pub seqs: Vec<String>,
    /// Each record's item id (the partition key).
    pub ids: Vec<String>,
}

impl Records {
    /// `n` INSERTs of distinct users, sequence numbers increasing.
    pub fn users(n: usize) -> Records {
        let mut records = Records {
            json: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
        };
        for i in 0..n {
            let id = format!(
                "{:08x}-7c1e-4b7a-9f00-{:012x}",
                i * 2_654_435_761 % (1 << 32),
                i
            );
            let seq = format!("49{:019}", 1_000_000 + i);
            let created = 1_767_225_600 + i;
            let record = json!({
                "eventID": format!("{i:032x}"),
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": STREAM_ARN,
                "dynamodb": {
                    "ApproximateCreationDateTime": created,
                    "Keys": {"id": {"S": id}},
                    "NewImage": {
                        "id": {"S": id},
                        "username": {"S": format!("user_{i}")},
                        "email": {"S": format!("user_{i}@example.com")},
                        "displayName": {"S": format!("User Number {i}")},
                        "createdAt": {"S": format!("2026-01-01T00:{:02}:{:02}.000Z", (i / 60) % 60, i % 60)},
                    },
                    "SequenceNumber": seq,
                    "SizeBytes": 180,
                    "StreamViewType": "NEW_IMAGE",
                },
            });
            records.json.push(record.to_string());
            records.seqs.push(seq);
            records.ids.push(id);
        }
        records
    }

    pub fn len(&self) -> usize {
        self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// The invocation payload of records `range`: `{"Records": [...]}`.
    pub fn event(&self, range: std::ops::Range<usize>) -> String {
        let body: usize = self.json[range.clone()].iter().map(|r| r.len() + 1).sum();
        let mut out = String::with_capacity(body + 16);
        out.push_str(r#"{"Records":["#);
        for (i, record) in self.json[range].iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(record);
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_stream_batch_of_distinct_users_in_order() {
        let records = Records::users(3);
        let event: serde_json::Value = serde_json::from_str(&records.event(1..3)).unwrap();
        let batch = event["Records"].as_array().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0]["dynamodb"]["SequenceNumber"], records.seqs[1]);
        assert!(records.seqs[1] < records.seqs[2]);
        assert_ne!(records.ids[1], records.ids[2]);
        assert_eq!(batch[1]["dynamodb"]["Keys"]["id"]["S"], records.ids[2]);
    }
}
