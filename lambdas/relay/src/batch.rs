//! In-order packing of entries into PutEvents requests (pure).
//!
//! A request takes entries from the front of the pending queue, in stream order, until the next
//! entry would make it exceed [`MAX_ENTRIES_PER_REQUEST`] entries or the byte limit, or would be
//! a second change of an item already in the request. It stops there rather than skipping ahead,
//! so a later change of an item is never sent in the same or an earlier request than an earlier
//! one: that is what keeps per-item order across retries (a failed entry goes back to the front).

pub use outbox_contract::MAX_ENTRIES_PER_REQUEST;

/// What packing needs to know of one pending entry.
pub trait Packable {
    /// Identity of the changed item (canonical keys JSON).
    fn item_key(&self) -> &str;
    /// Entry size as PutEvents counts it.
    fn size(&self) -> usize;
}

/// How many entries from the front of `pending` form the next request. Zero only when the first
/// entry alone exceeds `limit_bytes` (the caller never queues such an entry).
pub fn next_request_len<'a, P: Packable + 'a>(
    pending: impl IntoIterator<Item = &'a P>,
    limit_bytes: usize,
) -> usize {
    let mut keys: Vec<&str> = Vec::with_capacity(MAX_ENTRIES_PER_REQUEST);
    let mut bytes = 0usize;
    for entry in pending {
        if keys.len() == MAX_ENTRIES_PER_REQUEST
            || bytes + entry.size() > limit_bytes
            || keys.contains(&entry.item_key())
        {
            break;
        }
        bytes += entry.size();
        keys.push(entry.item_key());
    }
    keys.len()
}

/// The request sizes (entry counts) that publishing `entries` takes when every call succeeds.
pub fn plan<P: Packable>(entries: &[P], limit_bytes: usize) -> Vec<usize> {
    let mut requests = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let n = next_request_len(rest, limit_bytes);
        if n == 0 {
            break;
        }
        requests.push(n);
        rest = &rest[n..];
    }
    requests
}

/// The fewest requests any packing could use: ⌈n/10⌉ and ⌈total bytes/limit⌉.
pub fn lower_bound<P: Packable>(entries: &[P], limit_bytes: usize) -> usize {
    let bytes: usize = entries.iter().map(Packable::size).sum();
    entries
        .len()
        .div_ceil(MAX_ENTRIES_PER_REQUEST)
        .max(bytes.div_ceil(limit_bytes.max(1)))
}

impl Packable for crate::event::Prepared {
    fn item_key(&self) -> &str {
        &self.item_key
    }
    fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(&'static str, usize);
    impl Packable for E {
        fn item_key(&self) -> &str {
            self.0
        }
        fn size(&self) -> usize {
            self.1
        }
    }

    const KEYS: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];

    #[test]
    fn at_most_ten_entries_per_request() {
        let entries: Vec<E> = KEYS.iter().map(|k| E(k, 10)).collect();
        assert_eq!(plan(&entries, 1_000), vec![10, 2]);
        assert_eq!(lower_bound(&entries, 1_000), 2);
    }

    #[test]
    fn requests_stay_within_the_byte_limit_and_may_fill_it_exactly() {
        let entries = [E("a", 40), E("b", 60), E("c", 1), E("d", 100)];
        assert_eq!(plan(&entries, 100), vec![2, 1, 1]);
        assert_eq!(lower_bound(&entries, 100), 3);
    }

    #[test]
    fn two_changes_of_one_item_never_share_a_request() {
        let entries = [E("a", 1), E("b", 1), E("a", 1), E("c", 1)];
        assert_eq!(plan(&entries, 100), vec![2, 2]);
    }

    #[test]
    fn packing_stops_at_a_conflict_instead_of_skipping_ahead() {
        // "c" would fit in the first request, but taking it would send it before the second "a".
        let entries = [E("a", 1), E("a", 1), E("c", 1)];
        assert_eq!(next_request_len(&entries, 100), 1);
    }

    #[test]
    fn an_entry_over_the_limit_packs_nothing() {
        let entries = [E("a", 101)];
        assert_eq!(next_request_len(&entries, 100), 0);
        assert!(plan(&entries, 100).is_empty());
    }
}
