//! What both floor examples read from the payload: each record's sequence number and keys,
//! borrowed (no image is converted). Included with `#[path]`, not an example of its own.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub struct Batch<'a> {
    #[serde(rename = "Records", borrow)]
    pub records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub dynamodb: Change<'a>,
}

#[derive(Deserialize)]
pub struct Change<'a> {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: &'a str,
    #[serde(rename = "Keys", borrow)]
    pub keys: &'a RawValue,
}

impl Change<'_> {
    /// The minimal Detail both floors publish.
    pub fn detail(&self) -> String {
        format!(
            r#"{{"sequenceNumber":"{}","keys":{}}}"#,
            self.sequence_number,
            self.keys.get()
        )
    }
}
