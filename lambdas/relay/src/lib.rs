//! The relay Lambda's logic. Filled in by the data-plane issue.
