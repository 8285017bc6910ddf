//! Bounded multi-producer multi-consumer ring buffer.
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC queue: every slot carries a sequence
//! number that tells producers and consumers whose turn the slot is, so a push or a pop is
//! one compare-and-swap on `tail` or `head` and no mutex is ever taken.
//!
//! * slot `i` is free for the producer holding ticket `pos` when `seq == pos`;
//! * it holds a value for the consumer holding ticket `pos` when `seq == pos + 1`;
//! * after a pop the slot's `seq` becomes `pos + capacity`, ready for the next lap.
//!
//! Capacity is rounded up to a power of two so a ticket maps to a slot with a mask; the
//! caller's exact bound (`limit`) is enforced separately by the `reserved` counter.
//!
//! Wake-ups happen on the empty → non-empty edge only: a consumer about to sleep calls
//! [`Ring::arm`]; the first producer to push after that sees `armed` and takes the wake-up
//! on itself ([`Ring::push`] returns `Pushed::Woke`). Every later push until the next `arm`
//! is silent, so a burst of a million events costs one wake-up, not a million.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

/// Keeps a hot atomic on its own cache line (128 bytes covers adjacent-line prefetch).
#[repr(align(128))]
struct CachePadded<T>(T);

struct Slot<T> {
    /// Turn marker; see the module docs for the three states.
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Outcome of a successful push.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Pushed {
    /// Stored; no consumer is waiting.
    Quiet,
    /// Stored, and this push ended an armed wait: the caller must wake the consumer.
    Woke,
}

/// One Vyukov queue; a [`Ring`] has one lane per priority level.
struct Lane<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    /// Next ticket a consumer takes. Only ever increases.
    head: CachePadded<AtomicUsize>,
    /// Next ticket a producer takes. Only ever increases.
    tail: CachePadded<AtomicUsize>,
}

impl<T> Lane<T> {
    fn new(capacity: usize) -> Self {
        let slots = (0..capacity)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Lane {
            slots,
            mask: capacity - 1,
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Stores `value`; the caller holds a reservation, so a slot is free or about to be.
    fn push(&self, value: T) {
        let mut pos = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.tail.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS made this ticket ours; no one else touches the slot
                        // until the Release store below publishes it.
                        unsafe { (*slot.value.get()).write(value) };
                        slot.seq.store(pos + 1, Ordering::Release);
                        return;
                    }
                    Err(current) => pos = current,
                }
            } else {
                if diff < 0 {
                    // The consumer of the previous lap has not released this slot yet.
                    std::hint::spin_loop();
                }
                pos = self.tail.0.load(Ordering::Relaxed);
            }
        }
    }

    fn pop(&self) -> Option<T> {
        let mut pos = self.head.0.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq as isize - (pos + 1) as isize;
            if diff == 0 {
                match self.head.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: seq == pos + 1 means a producer finished writing this slot,
                        // and the CAS made us its only reader.
                        let value = unsafe { (*slot.value.get()).assume_init_read() };
                        slot.seq.store(pos + self.mask + 1, Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.0.load(Ordering::Relaxed);
            }
        }
    }

    fn has_items(&self) -> bool {
        self.head.0.load(Ordering::SeqCst) != self.tail.0.load(Ordering::SeqCst)
    }
}

impl<T> Drop for Lane<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

/// A bounded MPMC ring with `lanes` strict-priority lanes (the highest lane pops first).
pub struct Ring<T> {
    lanes: Box<[Lane<T>]>,
    limit: usize,
    /// Items stored or being stored over all lanes; a push commits only below `limit`.
    reserved: CachePadded<AtomicUsize>,
    /// True while a consumer sleeps waiting for the next push.
    armed: AtomicBool,
}

// SAFETY: values move between threads only through slots whose ownership is handed over by
// the Release store / Acquire load pair on `seq`; a slot is touched by one thread at a time.
unsafe impl<T: Send> Send for Ring<T> {}
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A single-lane ring that holds at most `limit` items.
    pub fn new(limit: usize) -> Self {
        Self::with_lanes(limit, 1)
    }

    /// A ring of `lanes` priority lanes sharing one bound of `limit` items.
    pub fn with_lanes(limit: usize, lanes: usize) -> Self {
        let limit = limit.max(1);
        let capacity = limit.next_power_of_two().max(2);
        Ring {
            lanes: (0..lanes.max(1)).map(|_| Lane::new(capacity)).collect(),
            limit,
            reserved: CachePadded(AtomicUsize::new(0)),
            armed: AtomicBool::new(false),
        }
    }

    /// Slots allocated per lane (a power of two, at least `limit`).
    pub fn capacity(&self) -> usize {
        self.lanes[0].mask + 1
    }

    /// The exact bound on stored items.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub fn len(&self) -> usize {
        self.reserved.0.load(Ordering::Acquire).min(self.limit)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `value` in the single lane; see [`Ring::push_lane`].
    pub fn push(&self, value: T) -> Result<Pushed, T> {
        self.push_lane(0, value)
    }

    /// Stores `value` in `lane` (clamped to the lanes there are), or hands it back when the
    /// ring already holds `limit` items.
    pub fn push_lane(&self, lane: usize, value: T) -> Result<Pushed, T> {
        if self.reserved.0.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.reserved.0.fetch_sub(1, Ordering::AcqRel);
            return Err(value);
        }
        self.lanes[lane.min(self.lanes.len() - 1)].push(value);
        // Pairs with the fence in `arm`: either we see `armed`, or the consumer sees our item.
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            Ok(Pushed::Woke)
        } else {
            Ok(Pushed::Quiet)
        }
    }

    /// The oldest item of the highest non-empty lane.
    pub fn pop(&self) -> Option<T> {
        for lane in self.lanes.iter().rev() {
            if let Some(v) = lane.pop() {
                self.reserved.0.fetch_sub(1, Ordering::AcqRel);
                return Some(v);
            }
        }
        None
    }

    /// Pops up to `max` items into `out` in pop order; returns how many.
    pub fn drain_into(&self, max: usize, out: &mut Vec<T>) -> usize {
        let mut n = 0;
        for lane in self.lanes.iter().rev() {
            while n < max {
                match lane.pop() {
                    Some(v) => {
                        out.push(v);
                        n += 1;
                    }
                    None => break,
                }
            }
        }
        if n > 0 {
            self.reserved.0.fetch_sub(n, Ordering::AcqRel);
        }
        n
    }

    /// Announces that a consumer is about to sleep. Returns `false` when items are already
    /// there (the consumer must not sleep; the ring stays disarmed).
    pub fn arm(&self) -> bool {
        self.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.lanes.iter().any(Lane::has_items) {
            self.armed.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Cancels a pending `arm` (e.g. the consumer is shutting down).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_and_bounds() {
        let r = Ring::new(3);
        assert_eq!(r.capacity(), 4);
        for i in 0..3 {
            assert!(r.push(i).is_ok());
        }
        assert_eq!(r.push(9), Err(9));
        assert_eq!(r.len(), 3);
        assert_eq!(r.pop(), Some(0));
        assert!(r.push(3).is_ok());
        let mut out = Vec::new();
        assert_eq!(r.drain_into(10, &mut out), 3);
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn wraps_around_many_laps() {
        let r = Ring::new(2);
        for i in 0..1000 {
            r.push(i).unwrap();
            assert_eq!(r.pop(), Some(i));
        }
        assert!(r.is_empty());
    }

    #[test]
    fn wakes_only_on_edge() {
        let r = Ring::new(8);
        assert!(r.arm());
        assert_eq!(r.push(1), Ok(Pushed::Woke));
        assert_eq!(r.push(2), Ok(Pushed::Quiet));
        assert!(!r.arm(), "non-empty ring must refuse to arm");
        assert_eq!(r.push(3), Ok(Pushed::Quiet));
    }

    #[test]
    fn lanes_pop_highest_first_and_share_the_bound() {
        let r = Ring::with_lanes(3, 4);
        r.push_lane(0, "low").unwrap();
        r.push_lane(3, "critical").unwrap();
        r.push_lane(1, "normal").unwrap();
        assert_eq!(r.push_lane(2, "high"), Err("high"));
        let mut out = Vec::new();
        r.drain_into(8, &mut out);
        assert_eq!(out, vec!["critical", "normal", "low"]);
    }

    #[test]
    fn drops_remaining_values() {
        let marker = Arc::new(());
        {
            let r = Ring::new(4);
            r.push(marker.clone()).unwrap();
            r.push(marker.clone()).unwrap();
            assert_eq!(Arc::strong_count(&marker), 3);
        }
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    #[test]
    fn concurrent_producers_and_consumers_lose_nothing() {
        let r = Arc::new(Ring::new(64));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let mut v = p * 1_000_000 + i;
                        loop {
                            match r.push(v) {
                                Ok(_) => break,
                                Err(back) => {
                                    v = back;
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while got.len() < 20_000 {
                        match r.pop() {
                            Some(v) => got.push(v),
                            None => std::thread::yield_now(),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let mut expected: Vec<u64> = (0..4)
            .flat_map(|p| (0..10_000).map(move |i| p * 1_000_000 + i))
            .collect();
        expected.sort_unstable();
        assert_eq!(all, expected);
    }
}
