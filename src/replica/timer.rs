//! A hashed timer wheel, sans-IO: time is passed in as milliseconds, never read here.
//!
//! Timers live in a slab; each wheel slot lists the timers whose deadline falls in that
//! slot's tick modulo the wheel size, so schedule and cancel are O(1) (cancel swaps the
//! timer out of its slot's list). A deadline more than one revolution away simply stays
//! in its slot until the cursor passes it in the right revolution; a deadline in the past
//! is put in the current slot and expires at the next [`TimerWheel::expire`].
//!
//! Invariants:
//! - every live timer is in exactly one slot list, at the position it records;
//! - no live timer's slot tick is below `cursor_tick` (past deadlines are clamped);
//! - [`TimerWheel::expire`] returns timers in deadline order, ties in scheduling order.

use slab::Slab;

/// Names one scheduled timer; stale ids (fired or cancelled) are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    sequence: u64,
}

#[derive(Debug)]
struct Timer<T> {
    deadline_ms: u64,
    /// Scheduling order; also tells a live id from a stale one that reuses the slab key.
    sequence: u64,
    slot: usize,
    /// Invariant: `slots[slot][position] == key of this timer`.
    position: usize,
    value: T,
}

/// A hashed timer wheel holding values of type `T` (e.g. an enum of timer kinds).
#[derive(Debug)]
pub struct TimerWheel<T> {
    timers: Slab<Timer<T>>,
    slots: Vec<Vec<usize>>,
    slot_ms: u64,
    /// The tick (`time / slot_ms`) up to which slots have been scanned; its own slot may
    /// still hold timers later in the same tick.
    cursor_tick: u64,
    next_sequence: u64,
    /// Cached answer of `next_deadline`; `None` when it must be recomputed.
    earliest: Option<Option<u64>>,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slot_count` slots of `slot_ms` milliseconds each, starting at time
    /// `now_ms`. One revolution covers `slot_count * slot_ms` milliseconds.
    ///
    /// # Panics
    /// If `slot_count` or `slot_ms` is 0 (a programming error).
    pub fn new(slot_count: usize, slot_ms: u64, now_ms: u64) -> TimerWheel<T> {
        assert!(
            slot_count > 0 && slot_ms > 0,
            "timer wheel needs slots of positive width"
        );
        TimerWheel {
            timers: Slab::new(),
            slots: (0..slot_count).map(|_| Vec::new()).collect(),
            slot_ms,
            cursor_tick: now_ms / slot_ms,
            next_sequence: 0,
            earliest: Some(None),
        }
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// Schedules `value` to expire at `deadline_ms` (may be in the past). O(1).
    pub fn schedule(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let tick = (deadline_ms / self.slot_ms).max(self.cursor_tick);
        let slot = self.slot_of(tick);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let position = self.slots[slot].len();
        let key = self.timers.insert(Timer {
            deadline_ms,
            sequence,
            slot,
            position,
            value,
        });
        self.slots[slot].push(key);
        if let Some(earliest) = self.earliest {
            self.earliest = Some(Some(earliest.map_or(deadline_ms, |e| e.min(deadline_ms))));
        }
        TimerId { key, sequence }
    }

    /// Cancels a timer, returning its value; `None` if it already fired or was cancelled.
    /// O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        match self.timers.get(id.key) {
            Some(timer) if timer.sequence == id.sequence => {}
            _ => return None,
        }
        let timer = self.remove(id.key);
        if self.earliest == Some(Some(timer.deadline_ms)) {
            self.earliest = None;
        }
        Some(timer.value)
    }

    /// The deadline of a live timer.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.timers
            .get(id.key)
            .filter(|t| t.sequence == id.sequence)
            .map(|t| t.deadline_ms)
    }

    /// The earliest deadline of any live timer (the poll timeout of the loop).
    ///
    /// Usually answered from a cache; after the earliest timer was cancelled or fired it
    /// scans the slots of one revolution, and only scans every timer when none falls in it.
    pub fn next_deadline(&mut self) -> Option<u64> {
        if let Some(earliest) = self.earliest {
            return earliest;
        }
        let earliest = self.compute_earliest();
        self.earliest = Some(earliest);
        earliest
    }

    /// Moves every timer with `deadline_ms <= now_ms` into `expired` (appended in deadline
    /// order, ties in scheduling order). `now_ms` earlier than a previous call is treated
    /// as that earlier time. Cost: the slots between the previous call and `now_ms` (at
    /// most one revolution) plus the timers in them.
    pub fn expire(&mut self, now_ms: u64, expired: &mut Vec<T>) {
        let now_tick = now_ms / self.slot_ms;
        if now_tick < self.cursor_tick {
            return;
        }
        let revolution = self.slots.len() as u64;
        let last_tick = now_tick.min(self.cursor_tick + revolution - 1);
        let mut fired: Vec<(u64, u64, usize)> = Vec::new();
        for tick in self.cursor_tick..=last_tick {
            let slot = self.slot_of(tick);
            for &key in &self.slots[slot] {
                let timer = &self.timers[key];
                if timer.deadline_ms <= now_ms {
                    fired.push((timer.deadline_ms, timer.sequence, key));
                }
            }
        }
        self.cursor_tick = now_tick;
        if fired.is_empty() {
            return;
        }
        fired.sort_unstable();
        expired.reserve(fired.len());
        for (_, _, key) in fired {
            expired.push(self.remove(key).value);
        }
        self.earliest = None;
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick % self.slots.len() as u64) as usize
    }

    fn remove(&mut self, key: usize) -> Timer<T> {
        let timer = self.timers.remove(key);
        let list = &mut self.slots[timer.slot];
        list.swap_remove(timer.position);
        if let Some(&moved) = list.get(timer.position) {
            self.timers[moved].position = timer.position;
        }
        timer
    }

    fn compute_earliest(&self) -> Option<u64> {
        let revolution = self.slots.len() as u64;
        for tick in self.cursor_tick..self.cursor_tick + revolution {
            // Timers of later revolutions share the slot; only this tick's (or clamped
            // past ones) count.
            let in_this_revolution = self.slots[self.slot_of(tick)]
                .iter()
                .map(|&key| self.timers[key].deadline_ms)
                .filter(|&d| d / self.slot_ms <= tick)
                .min();
            if in_this_revolution.is_some() {
                return in_this_revolution;
            }
        }
        self.timers.iter().map(|(_, t)| t.deadline_ms).min()
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the wheel behaves exactly like a sorted map of deadlines.
    //! Method: hand-written edge cases, then a proptest against a BTreeMap model.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn drain(wheel: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        wheel.expire(now, &mut out);
        out
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut wheel = TimerWheel::new(8, 10, 1000);
        wheel.schedule(1025, 1);
        assert_eq!(wheel.next_deadline(), Some(1025));
        assert_eq!(drain(&mut wheel, 1024), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, 1025), vec![1]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn same_slot_later_in_tick_stays_until_due() {
        let mut wheel = TimerWheel::new(4, 10, 0);
        wheel.schedule(13, 1);
        wheel.schedule(17, 2);
        assert_eq!(drain(&mut wheel, 14), vec![1]);
        assert_eq!(wheel.next_deadline(), Some(17));
        assert_eq!(drain(&mut wheel, 16), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, 17), vec![2]);
    }

    #[test]
    fn deadlines_many_revolutions_away_wait_for_their_revolution() {
        let mut wheel = TimerWheel::new(4, 10, 0);
        // Same slot as tick 1, but ten revolutions later.
        wheel.schedule(410, 1);
        wheel.schedule(15, 2);
        assert_eq!(wheel.next_deadline(), Some(15));
        assert_eq!(drain(&mut wheel, 15), vec![2]);
        for now in (20..410).step_by(7) {
            assert_eq!(
                drain(&mut wheel, now),
                Vec::<u32>::new(),
                "fired early at {now}"
            );
        }
        assert_eq!(wheel.next_deadline(), Some(410));
        assert_eq!(drain(&mut wheel, 410), vec![1]);
    }

    #[test]
    fn a_jump_past_many_revolutions_fires_everything_due_in_order() {
        let mut wheel = TimerWheel::new(4, 10, 0);
        for (i, deadline) in [95u64, 5, 1000, 47, 5, 12_000].iter().enumerate() {
            wheel.schedule(*deadline, i as u32);
        }
        assert_eq!(drain(&mut wheel, 1000), vec![1, 4, 3, 0, 2]);
        assert_eq!(wheel.next_deadline(), Some(12_000));
    }

    #[test]
    fn past_deadlines_fire_on_next_expire() {
        let mut wheel = TimerWheel::new(8, 1, 0);
        drain(&mut wheel, 500);
        wheel.schedule(3, 7);
        assert_eq!(wheel.next_deadline(), Some(3));
        assert_eq!(drain(&mut wheel, 500), vec![7]);
    }

    #[test]
    fn time_going_backwards_fires_nothing() {
        let mut wheel = TimerWheel::new(8, 1, 100);
        wheel.schedule(150, 1);
        assert_eq!(drain(&mut wheel, 50), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, 150), vec![1]);
    }

    #[test]
    fn cancel_returns_value_once_and_ignores_stale_ids() {
        let mut wheel = TimerWheel::new(8, 1, 0);
        let a = wheel.schedule(5, 1);
        let b = wheel.schedule(5, 2);
        let c = wheel.schedule(6, 3);
        assert_eq!(wheel.deadline(a), Some(5));
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.deadline(a), None);
        // The slab key of `a` is reused; the stale id must not cancel the new timer.
        let d = wheel.schedule(9, 4);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.next_deadline(), Some(5));
        assert_eq!(wheel.cancel(b), Some(2));
        assert_eq!(wheel.next_deadline(), Some(6));
        assert_eq!(drain(&mut wheel, 100), vec![3, 4]);
        assert_eq!(wheel.cancel(c), None);
        assert_eq!(wheel.cancel(d), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..3000).prop_map(Op::Schedule),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => (0u64..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The wheel and a BTreeMap keyed by (deadline, sequence) agree after every step:
        /// same expired values in the same order, same next deadline, same cancels.
        #[test]
        fn matches_btreemap_model(
            slot_count in 1usize..16,
            slot_ms in 1u64..20,
            start in 0u64..1000,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut wheel = TimerWheel::new(slot_count, slot_ms, start);
            let mut model: BTreeMap<(u64, u32), ()> = BTreeMap::new();
            let mut ids: Vec<(TimerId, u64, u32)> = Vec::new();
            let mut now = start;
            let mut next_value = 0u32;
            for op in ops {
                match op {
                    Op::Schedule(offset) => {
                        // Deadlines from well in the past to several revolutions ahead.
                        let deadline = (now + offset).saturating_sub(500);
                        let id = wheel.schedule(deadline, next_value);
                        model.insert((deadline, next_value), ());
                        ids.push((id, deadline, next_value));
                        next_value += 1;
                    }
                    Op::Cancel(pick) => {
                        if ids.is_empty() { continue; }
                        let (id, deadline, value) = ids[pick % ids.len()];
                        let want = model.remove(&(deadline, value)).map(|_| value);
                        prop_assert_eq!(wheel.cancel(id), want);
                    }
                    Op::Advance(step) => {
                        now += step;
                        let mut got = Vec::new();
                        wheel.expire(now, &mut got);
                        let due: Vec<(u64, u32)> =
                            model.range(..(now + 1, 0)).map(|(k, _)| *k).collect();
                        for k in &due { model.remove(k); }
                        let want: Vec<u32> = due.iter().map(|(_, v)| *v).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                prop_assert_eq!(wheel.next_deadline(), model.keys().next().map(|(d, _)| *d));
            }
        }
    }
}
