//! Reads shared within one pass, so a converged pipeline's pass reads each thing once: the
//! pipeline's log groups and alarms are listed once by their name prefix and each step takes its
//! resource from the listing, and the bus pre-flight reads is handed to the bus step.
//!
//! Never kept across passes: a [`Seen`] lives in the pass's [`super::context::Ctx`] and goes with
//! it, so every pass reads AWS afresh and sees drift as before. Each entry is handed out once: a
//! second observe of the same resource in the same pass (e.g. after the pass changed it) reads
//! AWS again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use aws_sdk_cloudwatch::types::MetricAlarm;
use aws_sdk_cloudwatchlogs::types::LogGroup;

use super::EngineError;
use super::bus;

/// What the current pass has already read and not yet handed out.
#[derive(Default)]
pub struct Seen {
    /// The pipeline's log groups (`/aws/lambda/outbox-<hash>-*`).
    pub(super) log_groups: Memo<LogGroup>,
    /// The pipeline's alarms (`outbox-<hash>-*`).
    pub(super) alarms: Memo<MetricAlarm>,
    /// The bus as pre-flight read it, for the bus step.
    pub(super) bus: Kept<Option<bus::Observed>>,
}

/// One resource as a step read it, for the next step that observes the same name.
#[derive(Debug)]
pub struct Kept<T>(Mutex<Option<(String, T)>>);

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(Mutex::new(None))
    }
}

impl<T> Kept<T> {
    pub fn keep(&self, name: &str, observed: T) {
        if let Ok(mut k) = self.0.lock() {
            *k = Some((name.to_owned(), observed));
        }
    }

    /// What was kept of `name`, once (None: read AWS).
    pub fn take(&self, name: &str) -> Option<T> {
        let mut k = self.0.lock().ok()?;
        match k.take() {
            Some((n, o)) if n == name => Some(o),
            other => {
                *k = other;
                None
            }
        }
    }
}

/// Every resource whose name starts with `prefix`, as one paged listing read them, and which of
/// them were handed out.
#[derive(Debug)]
pub struct Listing<T> {
    prefix: String,
    items: BTreeMap<String, T>,
    handed_out: BTreeSet<String>,
}

impl<T: Clone> Listing<T> {
    /// `items` by name: everything AWS has under `prefix`.
    pub fn new(prefix: impl Into<String>, items: BTreeMap<String, T>) -> Listing<T> {
        Listing {
            prefix: prefix.into(),
            items,
            handed_out: BTreeSet::new(),
        }
    }

    /// What the listing says of `name`, once: `Some(Some(item))` listed, `Some(None)` absent;
    /// `None` when the listing cannot say (the name is not under its prefix, or was handed out
    /// already this pass: read AWS).
    pub fn take(&mut self, name: &str) -> Option<Option<T>> {
        if !name.starts_with(&self.prefix) || !self.handed_out.insert(name.to_owned()) {
            return None;
        }
        Some(self.items.get(name).cloned())
    }

    /// Every name listed (handed out or not), sorted.
    pub fn names(&self) -> Vec<String> {
        self.items.keys().cloned().collect()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// One kind's listing in the pass, if read. A lock is never held across an AWS call.
#[derive(Debug)]
pub struct Memo<T>(Mutex<Option<Listing<T>>>);

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(Mutex::new(None))
    }
}

impl<T: Clone> Memo<T> {
    /// True when a listing of `prefix` was read this pass.
    pub fn has(&self, prefix: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|l| l.as_ref().is_some_and(|l| l.prefix == prefix))
    }

    /// Keeps a listing for the rest of the pass (replacing an earlier one).
    pub fn keep(&self, listing: Listing<T>) {
        if let Ok(mut l) = self.0.lock() {
            *l = Some(listing);
        }
    }

    /// See [`Listing::take`]; `None` too when nothing was listed.
    pub fn take(&self, name: &str) -> Option<Option<T>> {
        self.0.lock().ok()?.as_mut()?.take(name)
    }

    /// [`Memo::take`], after listing `prefix` with `list` when `name` is under it and this pass
    /// has not listed it yet: the one place where a pass decides to list instead of reading by
    /// name.
    pub async fn take_or_list<Fut>(
        &self,
        prefix: &str,
        name: &str,
        list: impl FnOnce() -> Fut,
    ) -> Result<Option<Option<T>>, EngineError>
    where
        Fut: std::future::Future<Output = Result<Listing<T>, EngineError>>,
    {
        if name.starts_with(prefix) && !self.has(prefix) {
            self.keep(list().await?);
        }
        Ok(self.take(name))
    }

    /// The names of the listing of `prefix`, if it was read this pass.
    pub fn names(&self, prefix: &str) -> Option<Vec<String>> {
        let l = self.0.lock().ok()?;
        l.as_ref()
            .filter(|l| l.prefix == prefix)
            .map(Listing::names)
    }
}

/// Pure: a paged listing's items by name.
pub fn by_name<T>(items: Vec<T>, name: impl Fn(&T) -> Option<&str>) -> BTreeMap<String, T> {
    items
        .into_iter()
        .filter_map(|i| Some((name(&i)?.to_owned(), i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing<u32> {
        Listing::new(
            "p-",
            BTreeMap::from([("p-a".to_owned(), 1), ("p-b".to_owned(), 2)]),
        )
    }

    #[test]
    fn each_listed_name_is_handed_out_once_then_read_again() {
        let mut l = listing();
        assert_eq!(l.take("p-a"), Some(Some(1)));
        assert_eq!(l.take("p-a"), None, "a second observe reads AWS");
        assert_eq!(l.take("p-c"), Some(None), "absent under the prefix");
        assert_eq!(l.take("p-c"), None);
        assert_eq!(l.take("other"), None, "not under the prefix: unknown");
        assert_eq!(l.names(), vec!["p-a".to_owned(), "p-b".to_owned()]);
    }

    #[test]
    fn a_memo_says_nothing_before_a_listing_and_only_of_its_prefix() {
        let m: Memo<u32> = Memo::default();
        assert!(!m.has("p-"));
        assert_eq!(m.take("p-a"), None);
        assert_eq!(m.names("p-"), None);
        m.keep(listing());
        assert!(m.has("p-") && !m.has("q-"));
        assert_eq!(m.names("q-"), None);
        assert_eq!(m.take("p-b"), Some(Some(2)));
        assert_eq!(m.names("p-").map(|n| n.len()), Some(2));
    }

    #[test]
    fn a_kept_read_goes_once_and_only_to_its_name() {
        let k: Kept<Option<u32>> = Kept::default();
        assert_eq!(k.take("b"), None);
        k.keep("b", None);
        assert_eq!(k.take("bb"), None, "another name reads AWS");
        assert_eq!(k.take("b"), Some(None));
        assert_eq!(k.take("b"), None, "handed out once");
    }
}
