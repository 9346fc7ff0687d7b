//! The one-second buckets behind [`PgStats::window`] and
//! [`HttpStats::window`], written once.
//!
//! Both stores keep the last [`RING_SECONDS`] seconds in a lock-free ring;
//! only what a second counts differs (fixed arrays for PostgreSQL, cells
//! per route for HTTP). The ring is concurrency code whose correctness
//! rests on a memory-ordering argument, so it lives here, once, generic
//! over the counters of a slot ([`SlotCounters`]), with its argument next
//! to it.
//!
//! # How it works
//!
//! The ring is indexed by the second since its creation; each slot carries
//! an epoch tag (its second + 1), so a slot left over from a previous lap
//! is recognised and cleared by the first writer of the new second. That
//! clearing is the one place that takes a lock (one `Mutex<()>` per ring,
//! taken about once a second and never across an `.await`); every other
//! record is one acquire load plus the caller's relaxed adds. A slot being
//! cleared is never read half-cleared, because the epoch works as a seqlock
//! for readers: a reader copies the counters and keeps the copy only if
//! the epoch did not change meanwhile.
//!
//! The ring is generic, not boxed behind a trait object, and recording
//! takes a closure by value: the data path pays no dynamic dispatch and no
//! allocation.
//!
//! [`PgStats::window`]: super::pg::PgStats::window
//! [`HttpStats::window`]: super::http::HttpStats::window

use std::ops::{Range, RangeInclusive};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// One bucket per second of retention, the current second included: 15
/// minutes covers a baseline, an injection and a recovery phase of typical
/// experiments (each store documents what that costs it).
pub(crate) const RING_SECONDS: u64 = 900;

/// A counter cell: `AtomicU64` for totals, `AtomicU32` in the per-second
/// buckets (no second holds 4 billion events, and it halves the ring).
pub(crate) trait Cell: Default {
    /// Adds `n`, relaxed.
    fn add(&self, n: u64);
    /// The current value, relaxed.
    fn get(&self) -> u64;
    /// Back to 0, relaxed (the ring orders it for readers).
    fn clear(&self);
}

impl Cell for AtomicU64 {
    fn add(&self, n: u64) {
        self.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
    fn clear(&self) {
        self.store(0, Ordering::Relaxed);
    }
}

impl Cell for AtomicU32 {
    fn add(&self, n: u64) {
        self.fetch_add(n as u32, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        u64::from(self.load(Ordering::Relaxed))
    }
    fn clear(&self) {
        self.store(0, Ordering::Relaxed);
    }
}

/// What one slot of a [`Ring`] counts: atomics the data path adds to with
/// relaxed ordering, and the plain sums a reader copies them into.
pub(crate) trait SlotCounters {
    /// Plain sums of these counters.
    type Acc;
    /// An all-zero accumulator shaped like these counters (for HTTP, with
    /// the same routes).
    fn new_acc(&self) -> Self::Acc;
    /// Zeroes every counter with relaxed stores; the ring orders them.
    fn clear(&self);
    /// Adds every counter to `acc` with relaxed loads; the ring checks that
    /// they were not being cleared meanwhile.
    fn add_to(&self, acc: &mut Self::Acc);
    /// Adds `one` (a second's copy) to `acc`.
    fn merge(acc: &mut Self::Acc, one: &Self::Acc);
}

/// One second of the ring.
pub(crate) struct Slot<C> {
    /// The second it holds + 1; 0 while never written or being cleared.
    epoch: AtomicU64,
    counters: C,
}

/// Per-second buckets for the last [`RING_SECONDS`], indexed by the second
/// since `base`.
pub(crate) struct Ring<C> {
    base: Instant,
    slots: Box<[Slot<C>]>,
    /// Serialises the clearing of a stale slot (once a second).
    reset: Mutex<()>,
}

impl<C: SlotCounters + Default> Default for Ring<C> {
    fn default() -> Self {
        Self::new(C::default)
    }
}

impl<C> std::fmt::Debug for Ring<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("base", &self.base)
            .field("seconds", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Which seconds a window `[from, to)` covers, from [`Ring::seconds_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WindowSeconds {
    /// The seconds to read: those of the window that are retained and have
    /// started.
    pub(crate) read: Range<u64>,
    /// Whole seconds the window covers, retained or not: the second holding
    /// `from` up to, not including, the one holding `to`.
    pub(crate) covered: u64,
    /// True if part of the window is older than retention (and not in
    /// `read`).
    pub(crate) truncated: bool,
    /// The seconds from the one holding `to` through the current one
    /// (empty if `to` is in the future), to learn what changed since the
    /// window ended; `None` if the second holding `to` is no longer
    /// retained.
    pub(crate) after: Option<RangeInclusive<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: SlotCounters> Ring<C> {
    /// A ring starting now, each slot's counters made by `counters`.
    pub(crate) fn new(mut counters: impl FnMut() -> C) -> Self {
        Self {
            base: Instant::now(),
            slots: (0..RING_SECONDS)
                .map(|_| Slot {
                    epoch: AtomicU64::new(0),
                    counters: counters(),
                })
                .collect(),
            reset: Mutex::new(()),
        }
    }

    /// The instant second 0 starts at, for tests that place events.
    #[cfg(test)]
    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    /// Slots in the ring, for tests of its size.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn second(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_secs()
    }

    fn slot(&self, sec: u64) -> &Slot<C> {
        &self.slots[(sec % RING_SECONDS) as usize]
    }

    /// Runs `f` on the bucket of the second holding `now`, clearing the
    /// slot first if it still holds an older lap.
    pub(crate) fn record(&self, now: Instant, f: impl FnOnce(&C)) {
        let sec = self.second(now);
        let want = sec + 1;
        let slot = self.slot(sec);
        let epoch = slot.epoch.load(Ordering::Acquire);
        if epoch == want {
            return f(&slot.counters);
        }
        if epoch > want {
            // A writer more than RETENTION late: its second has expired.
            return;
        }
        {
            let _guard = lock(&self.reset);
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch > want {
                return;
            }
            if epoch < want {
                // Seqlock write: readers that saw the old epoch notice it
                // changed; writers that see 0 wait on the lock.
                slot.epoch.store(0, Ordering::Relaxed);
                fence(Ordering::Release);
                slot.counters.clear();
                slot.epoch.store(want, Ordering::Release);
            }
        }
        f(&slot.counters);
    }

    /// Adds the bucket of second `sec` to `acc`; false (and `acc`
    /// untouched) if the slot holds another second.
    fn read(&self, sec: u64, acc: &mut C::Acc) -> bool {
        let want = sec + 1;
        let slot = self.slot(sec);
        if slot.epoch.load(Ordering::Acquire) != want {
            return false;
        }
        let mut one = slot.counters.new_acc();
        slot.counters.add_to(&mut one);
        fence(Ordering::Acquire);
        if slot.epoch.load(Ordering::Relaxed) != want {
            return false; // recycled while read: that second just expired
        }
        C::merge(acc, &one);
        true
    }

    /// Adds the buckets of `seconds` to `acc`, skipping those whose slot
    /// holds another second (never written, or expired).
    pub(crate) fn sum(&self, seconds: impl IntoIterator<Item = u64>, acc: &mut C::Acc) {
        for sec in seconds {
            self.read(sec, acc);
        }
    }

    /// The seconds of the window `[from, to)` as seen at `now`: the bucket
    /// holding `from` is in, the one holding `to` is out (so adjacent
    /// windows never count an event twice), and only the last
    /// [`RING_SECONDS`], the current one included, are read.
    pub(crate) fn seconds_for(&self, now: Instant, from: Instant, to: Instant) -> WindowSeconds {
        let (from_s, to_s, now_s) = (self.second(from), self.second(to), self.second(now));
        // The last RING_SECONDS seconds, the current one included.
        let oldest = (now_s + 1).saturating_sub(RING_SECONDS);
        WindowSeconds {
            read: from_s.max(oldest)..to_s.min(now_s + 1),
            covered: to_s.saturating_sub(from_s),
            truncated: from_s < oldest && from_s < to_s,
            // `to_s < oldest` implies `to_s <= now_s`: a future `to` always
            // gets an empty range, never `None`.
            after: (to_s >= oldest).then_some(to_s..=now_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// The smallest counters: one cell, summed into a `u64`.
    #[derive(Default)]
    struct One(AtomicU32);

    impl SlotCounters for One {
        type Acc = u64;
        fn new_acc(&self) -> u64 {
            0
        }
        fn clear(&self) {
            self.0.clear();
        }
        fn add_to(&self, acc: &mut u64) {
            *acc += self.0.get();
        }
        fn merge(acc: &mut u64, one: &u64) {
            *acc += one;
        }
    }

    fn at(r: &Ring<One>, secs: f64) -> Instant {
        r.base() + Duration::from_secs_f64(secs)
    }

    fn read(r: &Ring<One>, sec: u64) -> Option<u64> {
        let mut acc = 0;
        r.read(sec, &mut acc).then_some(acc)
    }

    #[test]
    fn a_slot_holds_one_second_per_lap() {
        let r = Ring::<One>::default();
        assert_eq!(r.len() as u64, RING_SECONDS);
        assert_eq!(read(&r, 3), None, "never written");
        r.record(at(&r, 3.2), |c| c.0.add(2));
        r.record(at(&r, 3.9), |c| c.0.add(1));
        assert_eq!(read(&r, 3), Some(3));
        assert_eq!(
            read(&r, 3 + RING_SECONDS),
            None,
            "the next lap is not there yet"
        );

        // The next lap's first writer clears the slot.
        r.record(at(&r, (3 + RING_SECONDS) as f64 + 0.5), |c| c.0.add(5));
        assert_eq!(read(&r, 3), None, "expired");
        assert_eq!(read(&r, 3 + RING_SECONDS), Some(5), "cleared on reuse");

        // A writer a lap late is dropped, not mixed in.
        r.record(at(&r, 3.5), |c| c.0.add(100));
        assert_eq!(read(&r, 3 + RING_SECONDS), Some(5));

        let mut acc = 0;
        r.sum([2, 3, 3 + RING_SECONDS, 4], &mut acc);
        assert_eq!(acc, 5);
    }

    #[test]
    fn window_seconds_follow_retention() {
        let r = Ring::<One>::default();
        let lap = RING_SECONDS as f64;
        let w = |now: f64, from: f64, to: f64| r.seconds_for(at(&r, now), at(&r, from), at(&r, to));

        let inside = w(6.5, 0.7, 2.3);
        assert_eq!(inside.read, 0..2);
        assert_eq!(inside.covered, 2);
        assert!(!inside.truncated);
        assert_eq!(inside.after, Some(2..=6));

        let future = w(6.5, 2.0, 100.0);
        assert_eq!(future.read, 2..7, "up to the current second");
        assert_eq!(future.covered, 98);
        assert_eq!(future.after.map(|a| a.is_empty()), Some(true));

        let reversed = w(6.5, 3.0, 1.0);
        assert!(reversed.read.is_empty());
        assert_eq!(reversed.covered, 0);
        assert!(!reversed.truncated);

        // At second 903, seconds 4..=903 are retained.
        let old = w(lap + 3.9, 0.0, 10.0);
        assert_eq!(old.read, 4..10);
        assert_eq!(old.covered, 10);
        assert!(old.truncated);
        assert_eq!(old.after, Some(10..=903));
        let gone = w(lap + 3.9, 0.0, 3.0);
        assert!(gone.truncated);
        assert!(gone.read.is_empty());
        assert_eq!(gone.after, None, "ended before retention");
        let edge = w(lap + 3.9, 4.0, 5.0);
        assert!(!edge.truncated);
        assert_eq!(edge.read, 4..5);
    }

    #[test]
    fn concurrent_writers_across_a_lap_sum_exactly() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 10_000;
        const SECONDS: u64 = 5;
        let r = Arc::new(Ring::<One>::default());
        for lap in [0, RING_SECONDS] {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let r = Arc::clone(&r);
                    std::thread::spawn(move || {
                        for i in 0..PER_THREAD {
                            let now = at(&r, (lap + i % SECONDS) as f64 + 0.5);
                            r.record(now, |c| c.0.add(1));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let mut acc = 0;
            r.sum(lap..lap + SECONDS, &mut acc);
            assert_eq!(acc, THREADS * PER_THREAD);
        }
    }
}
