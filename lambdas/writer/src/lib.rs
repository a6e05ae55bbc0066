//! The writer Lambda's logic. Filled in by the data-plane issue.
