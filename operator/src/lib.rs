//! outbox-operator library.
