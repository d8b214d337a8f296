//! Pages of a thread's history that can no longer change, kept in memory.
//!
//! A stored message never changes and `seq` is gap-free, so a page that has
//! a message after its last one (`has_more`) is final: the same request
//! always gets the same bytes. Such pages are kept here, assembled, keyed by
//! the thread's public id and the page's range, and a read of one skips the
//! page's query. A page with nothing after it is never kept: the next post
//! would change its `has_more`.
//!
//! A public id names one thread at a time, not forever: `open_thread` with
//! the id of a deleted thread creates a new, empty thread under it. So a
//! kept page also records which thread it is of ([`Incarnation`]), and a
//! read uses it only for that thread.
//!
//! The cache holds no permission: a read still authenticates, looks the
//! thread up and checks the reader in its read transaction before it asks
//! for a page, so a deleted thread (or one the caller may not see) answers
//! 404 before its kept pages could be reached. Memory is bounded by two
//! generations: new pages go to the current one; when it holds half the
//! budget it becomes the previous one (the old previous is dropped), and a
//! page found in the previous generation moves back to the current.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::model::Incarnation;
use crate::domain::ThreadId;

/// The default memory budget: bytes of page JSON kept, both generations.
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// A kept page: its messages as one JSON array, the last one's seq, and
/// the thread it is of.
#[derive(Debug)]
pub struct FinalPage {
    /// Shared, not copied, into each answer that carries it.
    pub array: bytes::Bytes,
    pub last_seq: i64,
    /// The thread it is of (not one created later under the same id).
    pub thread: Incarnation,
}

/// What identifies a page: the thread, the seq it starts after, its limit.
type Key = (ThreadId, i64, i64);

/// Assembled final pages, within a memory budget.
pub struct PageCache {
    budget: usize,
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<Key, Arc<FinalPage>>,
    current_bytes: usize,
    previous: HashMap<Key, Arc<FinalPage>>,
    previous_bytes: usize,
}

/// What one entry costs against the budget: its bytes and a rough
/// allowance for the key, the map slot and the allocation.
fn cost(page: &FinalPage) -> usize {
    page.array.len() + 128
}

impl PageCache {
    /// A cache that keeps at most `budget` bytes (0: keeps nothing).
    pub fn new(budget: usize) -> PageCache {
        PageCache {
            budget,
            inner: Mutex::new(Generations::default()),
        }
    }

    /// The kept page of `thread` starting after seq `from` with `limit`
    /// messages, if any.
    pub fn get(&self, thread: ThreadId, from: i64, limit: i64) -> Option<Arc<FinalPage>> {
        let key = (thread, from, limit);
        let mut g = self.lock();
        if let Some(page) = g.current.get(&key) {
            return Some(page.clone());
        }
        let page = g.previous.remove(&key)?;
        g.previous_bytes -= cost(&page);
        g.admit(key, page.clone(), self.budget);
        Some(page)
    }

    /// Keeps a final page (the caller has seen a message after it), and
    /// hands it back shared.
    pub fn put(&self, thread: ThreadId, from: i64, limit: i64, page: FinalPage) -> Arc<FinalPage> {
        let page = Arc::new(page);
        if cost(&page) <= self.budget / 2 {
            self.lock()
                .admit((thread, from, limit), page.clone(), self.budget);
        }
        page
    }

    /// Bytes kept now, counted as against the budget.
    pub fn bytes(&self) -> usize {
        let g = self.lock();
        g.current_bytes + g.previous_bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // A panic while holding the lock leaves at worst a page missing:
        // the maps are only ever changed whole entries at a time.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Generations {
    fn admit(&mut self, key: Key, page: Arc<FinalPage>, budget: usize) {
        let bytes = cost(&page);
        if self.current_bytes + bytes > budget / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.previous_bytes = std::mem::replace(&mut self.current_bytes, 0);
        }
        if let Some(old) = self.current.insert(key, page) {
            self.current_bytes -= cost(&old);
        }
        self.current_bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Thread, ThreadRecord};

    fn page(n: usize) -> FinalPage {
        FinalPage {
            array: vec![b'x'; n].into(),
            last_seq: 1,
            thread: Incarnation::of(&thread(7, "2026-11-29T08:00:00.000Z")),
        }
    }

    fn thread(row_id: i64, created_at: &str) -> ThreadRecord {
        ThreadRecord {
            row_id,
            kind: crate::domain::kinds::ThreadKind::Turn,
            owner_account_id: 1,
            participants: None,
            integrations: None,
            turn_epoch: 0,
            view: Thread {
                id: ThreadId::new().to_text(),
                creator_aid: None,
                target_aid: None,
                subject: None,
                status: "active",
                message_count: 0,
                metadata: crate::store::model::raw_json("{}".into()),
                created_at: created_at.into(),
                updated_at: created_at.into(),
            },
        }
    }

    #[test]
    fn a_kept_page_is_of_one_thread_not_of_its_id() {
        let p = page(10);
        assert!(p.thread.is(&thread(7, "2026-11-29T08:00:00.000Z")));
        // The same row id given again (SQLite reuses a deleted last row's).
        assert!(!p.thread.is(&thread(7, "2026-11-29T08:00:01.000Z")));
        assert!(!p.thread.is(&thread(8, "2026-11-29T08:00:00.000Z")));
    }

    #[test]
    fn a_kept_page_is_found_by_thread_start_and_limit_only() {
        let cache = PageCache::new(1 << 20);
        let (a, b) = (ThreadId::new(), ThreadId::new());
        cache.put(a, 0, 50, page(10));
        assert_eq!(cache.get(a, 0, 50).map(|p| p.array.len()), Some(10));
        assert!(cache.get(a, 0, 49).is_none());
        assert!(cache.get(a, 1, 50).is_none());
        assert!(cache.get(b, 0, 50).is_none());
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let budget = 10_000;
        let cache = PageCache::new(budget);
        let thread = ThreadId::new();
        for from in 0..1_000 {
            cache.put(thread, from, 50, page(300));
            assert!(cache.bytes() <= budget, "{} > {budget}", cache.bytes());
        }
        // The newest pages are kept, the oldest are not.
        assert!(cache.get(thread, 999, 50).is_some());
        assert!(cache.get(thread, 0, 50).is_none());
        // A page larger than half the budget is never kept.
        cache.put(thread, 5_000, 50, page(budget));
        assert!(cache.get(thread, 5_000, 50).is_none());
        assert!(PageCache::new(0).get(thread, 0, 50).is_none());
    }

    #[test]
    fn a_page_read_from_the_previous_generation_survives_the_next_turn() {
        let cache = PageCache::new(2 * (300 + 128) * 4);
        let thread = ThreadId::new();
        for from in 0..4 {
            cache.put(thread, from, 50, page(300));
        }
        // Turns over: 0..4 become the previous generation.
        cache.put(thread, 4, 50, page(300));
        assert!(cache.get(thread, 0, 50).is_some(), "moved back to current");
        for from in 5..8 {
            cache.put(thread, from, 50, page(300));
        }
        assert!(cache.get(thread, 0, 50).is_some());
        assert!(cache.get(thread, 1, 50).is_none());
    }
}
