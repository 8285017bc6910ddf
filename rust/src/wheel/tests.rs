//! Unit tests of the timer wheel (`cargo test`).

use super::*;
use std::sync::Arc;

fn advance(w: &mut Wheel<u32>, now: u64) -> Vec<u32> {
    let mut out = Vec::new();
    w.advance(now, &mut out);
    out
}

#[test]
fn fires_in_deadline_order_with_ties_in_insertion_order() {
    let mut w = Wheel::new(0);
    w.insert(70, 0);
    w.insert(5, 1);
    w.insert(70, 2);
    w.insert(5000, 3);
    w.insert(5, 4);
    assert_eq!(w.next_deadline(), Some(5));
    assert_eq!(advance(&mut w, 4), Vec::<u32>::new());
    assert_eq!(advance(&mut w, 69), vec![1, 4]);
    w.insert(70, 5);
    assert_eq!(advance(&mut w, 100_000), vec![0, 2, 5, 3]);
    assert!(w.is_empty());
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn past_deadlines_fire_on_the_next_advance_sorted() {
    let mut w = Wheel::new(1000);
    w.insert(1000, 0);
    w.insert(3, 1);
    w.insert(500, 2);
    w.insert(3, 3);
    assert_eq!(w.next_deadline(), Some(3));
    // Even an advance that does not move the clock flushes them.
    assert_eq!(advance(&mut w, 10), vec![1, 3, 2, 0]);
    assert_eq!(w.elapsed(), 1000);
}

#[test]
fn cancel_is_exact_and_stale_handles_do_nothing() {
    let mut w = Wheel::new(0);
    let a = w.insert(10, 0);
    let b = w.insert(10, 1);
    assert_eq!(w.cancel(a), Some(0));
    assert_eq!(w.cancel(a), None);
    // The freed entry is reused; the old handle must not reach the new timer.
    let c = w.insert(20, 2);
    assert_eq!(c & 0xffff_ffff, a & 0xffff_ffff);
    assert_ne!(c, a);
    assert_eq!(w.cancel(a), None);
    assert_eq!(advance(&mut w, 15), vec![1]);
    assert_eq!(w.cancel(b), None, "cancel after fire");
    assert_eq!(w.cancel(u64::MAX), None);
    assert_eq!(w.len(), 1);
    assert_eq!(w.cancel(c), Some(2));
    assert!(w.is_empty());
}

#[test]
fn next_deadline_is_exact_at_every_level_and_after_cancel() {
    let mut w = Wheel::new(0);
    let far = w.insert(3 * 64 * 64 * 64 + 7, 0);
    assert_eq!(w.next_deadline(), Some(3 * 64 * 64 * 64 + 7));
    let mid = w.insert(64 * 64 + 99, 1);
    w.insert(64 * 64 + 130, 2);
    assert_eq!(w.next_deadline(), Some(64 * 64 + 99));
    w.cancel(mid);
    assert_eq!(w.next_deadline(), Some(64 * 64 + 130));
    assert_eq!(advance(&mut w, 64 * 64 + 129), Vec::<u32>::new());
    assert_eq!(w.next_deadline(), Some(64 * 64 + 130));
    assert_eq!(advance(&mut w, 64 * 64 + 130), vec![2]);
    assert_eq!(w.next_deadline(), Some(3 * 64 * 64 * 64 + 7));
    w.cancel(far);
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn beyond_the_range_overflows_and_still_fires_on_time() {
    let range = 1u64 << 36;
    let mut w = Wheel::new(5);
    w.insert(3 * range + 17, 0);
    w.insert(range + 1, 1);
    w.insert(range - 1, 2);
    w.insert(3 * range + 17, 3);
    assert_eq!(w.next_deadline(), Some(range - 1));
    assert_eq!(advance(&mut w, range), vec![2]);
    assert_eq!(w.next_deadline(), Some(range + 1));
    assert_eq!(advance(&mut w, 3 * range + 16), vec![1]);
    assert_eq!(advance(&mut w, 3 * range + 17), vec![0, 3]);
    // The very top of the clock works too.
    w.insert(u64::MAX, 4);
    assert_eq!(advance(&mut w, u64::MAX - 1), Vec::<u32>::new());
    assert_eq!(advance(&mut w, u64::MAX), vec![4]);
}

#[test]
fn huge_jump_only_visits_occupied_slots() {
    let mut w = Wheel::new(0);
    for i in 0..1000u32 {
        w.insert(u64::from(i) * 1_000_003 % 50_000_000_000, i);
    }
    let fired = advance(&mut w, 1 << 40);
    assert_eq!(fired.len(), 1000);
    let mut deadlines: Vec<u64> = fired
        .iter()
        .map(|&i| u64::from(i) * 1_000_003 % 50_000_000_000)
        .collect();
    let sorted = {
        let mut s = deadlines.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(deadlines, sorted);
    deadlines.dedup();
    assert_eq!(deadlines.len(), 1000);
}

#[test]
fn drop_and_cancel_release_items() {
    let marker = Arc::new(());
    {
        let mut w = Wheel::new(0);
        let h = w.insert(10, marker.clone());
        w.insert(1 << 40, marker.clone());
        w.insert(0, marker.clone());
        assert_eq!(Arc::strong_count(&marker), 4);
        drop(w.cancel(h));
        assert_eq!(Arc::strong_count(&marker), 3);
    }
    assert_eq!(Arc::strong_count(&marker), 1);
}

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn matches_a_sorted_list_model_on_random_operations() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut w = Wheel::new(rng.below(1 << 20));
        let mut now = w.elapsed();
        // (deadline, seq, handle)
        let mut model: Vec<(u64, u32, u64)> = Vec::new();
        let mut handles = Vec::new();
        for seq in 0..3000u32 {
            match rng.below(10) {
                0..=4 => {
                    let span = [4u64, 64, 5000, 1 << 24, 1 << 40][rng.below(5) as usize];
                    let deadline = (now + rng.below(span)).saturating_sub(rng.below(3));
                    let h = w.insert(deadline, seq);
                    model.push((deadline, seq, h));
                    handles.push(h);
                }
                5 | 6 => {
                    if handles.is_empty() {
                        continue;
                    }
                    let h = handles[rng.below(handles.len() as u64) as usize];
                    let expected = model
                        .iter()
                        .position(|m| m.2 == h)
                        .map(|p| model.remove(p).1);
                    assert_eq!(w.cancel(h), expected);
                }
                _ => {
                    let step = [1u64, 3, 63, 4097, 1 << 30, 1 << 38][rng.below(6) as usize];
                    now += rng.below(step);
                    model.sort_by_key(|m| (m.0, m.1));
                    let split = model.partition_point(|m| m.0 <= now);
                    let expected: Vec<u32> = model.drain(..split).map(|m| m.1).collect();
                    assert_eq!(advance(&mut w, now), expected, "seed {seed} now {now}");
                }
            }
            assert_eq!(w.len(), model.len());
            let expected_next = model.iter().map(|m| m.0).min();
            assert_eq!(w.next_deadline(), expected_next, "seed {seed}");
        }
    }
}
