//! Errors safe to log: a JSON error's kind and position, never its message.
//!
//! serde_json's messages quote the offending value (`invalid type: string "ada@example.com"`),
//! and item values are personal data that no Lambda may log. [`JsonErrorSummary`] keeps what a
//! reader needs to find the fault (the kind, line and column) and drops the rest.

use std::fmt;

/// A serde_json error without its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonErrorSummary {
    pub category: serde_json::error::Category,
    pub line: usize,
    pub column: usize,
}

impl From<&serde_json::Error> for JsonErrorSummary {
    fn from(e: &serde_json::Error) -> Self {
        JsonErrorSummary {
            category: e.classify(),
            line: e.line(),
            column: e.column(),
        }
    }
}

impl From<serde_json::Error> for JsonErrorSummary {
    fn from(e: serde_json::Error) -> Self {
        JsonErrorSummary::from(&e)
    }
}

impl fmt::Display for JsonErrorSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use serde_json::error::Category;
        let kind = match self.category {
            Category::Io => "I/O error",
            Category::Syntax => "malformed JSON",
            Category::Data => "JSON of the wrong shape (a field missing or of another type)",
            Category::Eof => "JSON cut short",
        };
        if self.line == 0 {
            write!(f, "{kind} (value not shown: item data)")
        } else {
            write!(
                f,
                "{kind} at line {} column {} (value not shown: item data)",
                self.line, self.column
            )
        }
    }
}

impl std::error::Error for JsonErrorSummary {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_never_quotes_the_value() {
        let err = serde_json::from_str::<u64>(r#""ada@example.com""#).unwrap_err();
        assert!(
            err.to_string().contains("ada@example.com"),
            "premise: serde quotes it"
        );
        let summary = JsonErrorSummary::from(&err).to_string();
        assert!(!summary.contains("ada"), "{summary}");
        assert!(summary.contains("wrong shape"), "{summary}");
    }
}
