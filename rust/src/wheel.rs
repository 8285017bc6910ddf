//! Hierarchical timer wheel with a 1 ms tick.
//!
//! The structure is the hashed hierarchical wheel of Varghese & Lauck ("Hashed and
//! Hierarchical Timing Wheels", SOSP 1987) in the shape tokio and Kafka use: 6 levels of 64
//! slots. A slot of level `l` covers `64^l` ms, so level `l` spans `64^(l+1)` ms and the six
//! levels together span `2^36` ms (about 2.2 years).
//!
//! * `elapsed` is the last time the wheel was advanced to; every deadline `<= elapsed` has
//!   been handed out. A timer with deadline `d > elapsed` lives at the level of the highest
//!   bit in which `d` and `elapsed` differ (divided by 6), in slot `(d >> 6l) & 63`. So every
//!   timer of level `l` shares its `64^(l+1)`-aligned block with `elapsed`, and every timer of
//!   a lower level is earlier than every timer of a higher one.
//! * Each level keeps a `u64` bitmap of occupied slots. The next slot to process is the
//!   lowest set bit of the lowest non-empty level: a couple of instructions, independent of
//!   how far away it is, so an idle wheel never ticks and a jump of `now` by a year costs
//!   only the slots that actually hold timers.
//! * Processing a slot of level `l > 0` at its start time *cascades* it: its timers are
//!   re-placed relative to the new `elapsed` and land in lower levels (those due exactly then
//!   fire). Each timer moves down at most five times.
//! * Every slot is an intrusive doubly linked list through a slab of entries, so insert and
//!   cancel are O(1). Lists are FIFO and cascading preserves their order, which is why timers
//!   with equal deadlines fire in insertion order without any sorting.
//! * A handle is `generation << 32 | index`. Freeing an entry bumps its generation, so a
//!   stale handle (fired, cancelled, or of an entry since reused) never cancels anything.
//! * Deadlines `<= elapsed` at insert go to the `PENDING` list and fire, sorted, on the
//!   next advance. Deadlines outside the top level's current `2^36` ms block go to the
//!   `OVERFLOW` list (no clamping: they fire exactly on time); when the wheel reaches the
//!   block of the earliest of them, the list is re-placed.

/// Slots per level, as a power of two.
const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
pub const LEVELS: usize = 6;
/// Bits of time the levels cover together: deadlines in another block of this size overflow.
const RANGE_BITS: u32 = BITS * LEVELS as u32;
const RANGE_MASK: u64 = (1 << RANGE_BITS) - 1;

const NIL: u32 = u32::MAX;
const PENDING: u16 = (LEVELS * SLOTS) as u16;
const OVERFLOW: u16 = PENDING + 1;
const LISTS: usize = OVERFLOW as usize + 1;
const FREE: u16 = u16::MAX;

struct Entry<T> {
    /// Expiry time in ms; meaningless while the entry is free.
    deadline: u64,
    /// `Some` exactly while the timer is live (inserted, neither fired nor cancelled).
    item: Option<T>,
    /// Neighbours in the entry's list (`NIL` at the ends); while free, `next` links the
    /// free stack.
    prev: u32,
    next: u32,
    /// Bumped each time the entry is freed, so handles to an earlier occupant go stale.
    generation: u32,
    /// The list holding the entry: a slot (`level * 64 + slot`), `PENDING`, `OVERFLOW`,
    /// or `FREE`.
    list: u16,
}

/// The next slot (or the overflow list) the wheel must process, and when.
#[derive(Debug, Clone, Copy)]
struct Expiration {
    list: u16,
    time: u64,
}

/// A hierarchical timer wheel of `T`s; see the module docs.
pub struct Wheel<T> {
    entries: Vec<Entry<T>>,
    /// Top of the LIFO stack of free entries (`NIL` when empty).
    free_head: u32,
    /// First and last entry of each list (`NIL` when empty).
    heads: [u32; LISTS],
    tails: [u32; LISTS],
    /// Bit `s` of `occupied[l]` is set iff slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    /// Last time advanced to; every deadline `<= elapsed` has fired or sits in `PENDING`.
    elapsed: u64,
    /// Live timers.
    len: usize,
    /// Memo of `next_deadline()`: `None` = unknown, `Some(x)` = the answer.
    cached_next: Option<Option<u64>>,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<T> Wheel<T> {
    /// An empty wheel whose clock reads `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Wheel {
            entries: Vec::new(),
            free_head: NIL,
            heads: [NIL; LISTS],
            tails: [NIL; LISTS],
            occupied: [0; LEVELS],
            elapsed: start_ms,
            len: 0,
            cached_next: Some(None),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live item, in no particular order (for garbage-collector traversal).
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|e| e.item.as_ref())
    }

    /// The time the wheel was last advanced to (or its start time).
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Adds a timer; O(1). A deadline `<= elapsed()` fires on the next `advance`.
    pub fn insert(&mut self, deadline: u64, item: T) -> u64 {
        let idx = self.alloc(deadline, item);
        self.place(idx);
        self.len += 1;
        if let Some(next) = self.cached_next {
            self.cached_next = Some(Some(next.map_or(deadline, |n| n.min(deadline))));
        }
        let e = &self.entries[idx as usize];
        (u64::from(e.generation) << 32) | u64::from(idx)
    }

    /// Removes the live timer behind `handle` and returns its item; O(1).
    /// `None` for a handle that fired, was cancelled, or never existed.
    pub fn cancel(&mut self, handle: u64) -> Option<T> {
        let idx = (handle & u64::from(u32::MAX)) as usize;
        let e = self.entries.get(idx)?;
        if e.item.is_none() || u64::from(e.generation) != handle >> 32 {
            return None;
        }
        let deadline = e.deadline;
        self.unlink(idx as u32);
        if self.cached_next == Some(Some(deadline)) {
            self.cached_next = None;
        }
        Some(self.release(idx as u32))
    }

    /// Moves the clock to `now` and appends every timer with deadline `<= now` to `out`,
    /// in deadline order (insertion order among equal deadlines). Timers that were already
    /// past at insert come first. A `now` earlier than `elapsed()` only flushes those.
    /// Returns how many were appended.
    pub fn advance(&mut self, now: u64, out: &mut Vec<T>) -> usize {
        let before = out.len();
        let mut changed = false;
        if self.heads[PENDING as usize] != NIL {
            self.flush_pending(out);
            changed = true;
        }
        if now > self.elapsed {
            while let Some(exp) = self.next_expiration() {
                if exp.time > now {
                    break;
                }
                self.process(exp, out);
                changed = true;
            }
            self.elapsed = now;
        }
        if changed {
            self.cached_next = None;
        }
        out.len() - before
    }

    /// The earliest deadline of all live timers (`None` when empty). O(1) while nothing
    /// changed; otherwise one scan of the earliest occupied slot.
    pub fn next_deadline(&mut self) -> Option<u64> {
        if let Some(next) = self.cached_next {
            return next;
        }
        let next = self.compute_next_deadline();
        self.cached_next = Some(next);
        next
    }

    // -- internals ---------------------------------------------------------------------

    fn compute_next_deadline(&self) -> Option<u64> {
        if self.heads[PENDING as usize] != NIL {
            return self.list_min(PENDING);
        }
        match self.next_expiration() {
            // A level-0 slot holds exactly one deadline: its start time.
            Some(exp) if exp.list < SLOTS as u16 => Some(exp.time),
            Some(exp) => self.list_min(exp.list),
            None => None,
        }
    }

    fn list_min(&self, list: u16) -> Option<u64> {
        let mut min = None;
        let mut idx = self.heads[list as usize];
        while idx != NIL {
            let e = &self.entries[idx as usize];
            min = Some(min.map_or(e.deadline, |m: u64| m.min(e.deadline)));
            idx = e.next;
        }
        min
    }

    /// The lowest occupied slot of the lowest non-empty level, else the overflow list.
    fn next_expiration(&self) -> Option<Expiration> {
        for level in 0..LEVELS {
            let bits = self.occupied[level];
            if bits == 0 {
                continue;
            }
            let shift = BITS * level as u32;
            // Invariant: every occupied slot lies after the slot holding `elapsed`.
            debug_assert!(bits.trailing_zeros() as u64 > (self.elapsed >> shift) & SLOT_MASK);
            let slot = u64::from(bits.trailing_zeros());
            let level_start = self.elapsed & !((1u64 << (shift + BITS)) - 1);
            return Some(Expiration {
                list: (level * SLOTS) as u16 + slot as u16,
                time: level_start + (slot << shift),
            });
        }
        // Overflowed timers live in later 2^36 blocks; re-place them at the earliest one.
        self.list_min(OVERFLOW).map(|min| Expiration {
            list: OVERFLOW,
            time: min & !RANGE_MASK,
        })
    }

    /// Fires or re-places every timer of `exp`'s list at `exp.time`.
    fn process(&mut self, exp: Expiration, out: &mut Vec<T>) {
        debug_assert!(exp.time > self.elapsed);
        self.elapsed = exp.time;
        let mut idx = self.take_list(exp.list);
        while idx != NIL {
            let next = self.entries[idx as usize].next;
            if self.entries[idx as usize].deadline <= exp.time {
                out.push(self.release(idx));
            } else {
                self.place(idx);
            }
            idx = next;
        }
    }

    fn flush_pending(&mut self, out: &mut Vec<T>) {
        let mut due = Vec::new();
        let mut idx = self.take_list(PENDING);
        while idx != NIL {
            let e = &self.entries[idx as usize];
            due.push((e.deadline, idx));
            idx = e.next;
        }
        // Stable: equal deadlines keep their insertion order.
        due.sort_by_key(|&(deadline, _)| deadline);
        for (_, idx) in due {
            out.push(self.release(idx));
        }
    }

    fn alloc(&mut self, deadline: u64, item: T) -> u32 {
        if self.free_head != NIL {
            let idx = self.free_head;
            let e = &mut self.entries[idx as usize];
            self.free_head = e.next;
            e.deadline = deadline;
            e.item = Some(item);
            idx
        } else {
            let idx = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("timer wheel holds at most 2^32 - 1 timers");
            self.entries.push(Entry {
                deadline,
                item: Some(item),
                prev: NIL,
                next: NIL,
                generation: 0,
                list: FREE,
            });
            idx
        }
    }

    /// Takes the item of an already unlinked entry and frees the entry.
    fn release(&mut self, idx: u32) -> T {
        self.len -= 1;
        let e = &mut self.entries[idx as usize];
        e.generation = e.generation.wrapping_add(1);
        e.list = FREE;
        e.prev = NIL;
        e.next = self.free_head;
        self.free_head = idx;
        e.item.take().expect("released entry was live")
    }

    /// Links entry `idx` into the list its deadline belongs to, relative to `elapsed`.
    fn place(&mut self, idx: u32) {
        let deadline = self.entries[idx as usize].deadline;
        let list = if deadline <= self.elapsed {
            PENDING
        } else {
            let masked = (self.elapsed ^ deadline) | SLOT_MASK;
            if masked > RANGE_MASK {
                OVERFLOW
            } else {
                let level = (63 - masked.leading_zeros()) / BITS;
                let slot = (deadline >> (BITS * level)) & SLOT_MASK;
                self.occupied[level as usize] |= 1 << slot;
                (level as usize * SLOTS + slot as usize) as u16
            }
        };
        let tail = self.tails[list as usize];
        let e = &mut self.entries[idx as usize];
        e.list = list;
        e.prev = tail;
        e.next = NIL;
        if tail == NIL {
            self.heads[list as usize] = idx;
        } else {
            self.entries[tail as usize].next = idx;
        }
        self.tails[list as usize] = idx;
    }

    fn unlink(&mut self, idx: u32) {
        let (list, prev, next) = {
            let e = &self.entries[idx as usize];
            (e.list as usize, e.prev, e.next)
        };
        if prev == NIL {
            self.heads[list] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[list] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.heads[list] == NIL && list < LEVELS * SLOTS {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
    }

    /// Detaches a whole list and returns its first entry (the rest follow via `next`).
    fn take_list(&mut self, list: u16) -> u32 {
        let list = list as usize;
        let head = self.heads[list];
        self.heads[list] = NIL;
        self.tails[list] = NIL;
        if list < LEVELS * SLOTS {
            self.occupied[list / SLOTS] &= !(1 << (list % SLOTS));
        }
        head
    }
}

#[cfg(test)]
mod tests;
