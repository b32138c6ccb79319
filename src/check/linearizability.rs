//! A linearizability checker for key-value histories (Wing & Gong's search with Lowe's
//! memoization, as in porcupine).
//!
//! Input: one [`Operation`] per client request, with its invoke and complete times on any
//! clock common to all clients (logical or real) and its [`Outcome`]. The history is
//! split per key (a key-value map is linearizable iff each key is, Herlihy & Wing's
//! locality), and each key is searched for an order of its operations that (1) respects
//! real time — an operation that completed before another was invoked comes first — and
//! (2) agrees with a sequential register: every read returns the latest write.
//!
//! Outcomes: `Failed` operations are known not to have taken effect and are dropped.
//! `Unknown` operations (timed out, connection lost) may take effect at any moment after
//! their invoke, or never: they have no completion time, so they never force the search
//! to backtrack, and the search succeeds as soon as every known operation is placed
//! (unplaced unknown operations are the ones that never happened). An operation that
//! completes at time `t` and one invoked at the same `t` count as concurrent.
//!
//! Search: a doubly linked list of call and return events sorted by time; the search
//! repeatedly linearizes the first call whose step is valid in the register model, or
//! backtracks when it meets the return of an operation not yet linearized. Visited
//! `(set of linearized operations, register value)` pairs are memoized (bitset + value),
//! which makes histories of ~10k operations over a few keys take milliseconds when
//! concurrency is modest.
//!
//! Pruning, sound for this model: an unknown write whose value is never read and never
//! the expected value of a cas can be dropped when the key has no failed cas (a write
//! nobody observes can always be assumed not to have happened).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCall {
    /// Set the key to the value.
    Put(Vec<u8>),
    /// Read the key.
    Get,
    /// Remove the key.
    Delete,
    /// Set the key to `new` if its value is `expected` (`None`: if absent).
    Cas {
        /// The value required (`None`: the key must be absent).
        expected: Option<Vec<u8>>,
        /// The value written on success.
        new: Vec<u8>,
    },
}

/// What the client learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A put or delete was acknowledged, or a cas succeeded.
    Ok,
    /// A get returned this value (`None`: absent).
    Read(Option<Vec<u8>>),
    /// A cas found another value and wrote nothing.
    CasFailed,
    /// Known not to have taken effect (refused before being proposed).
    Failed,
    /// May or may not have taken effect, at any time after the invoke.
    Unknown,
}

/// One client operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (only used in violation reports).
    pub client: u64,
    /// The key operated on.
    pub key: Vec<u8>,
    /// The request.
    pub call: KvCall,
    /// The response.
    pub outcome: Outcome,
    /// When the request was sent.
    pub invoke: u64,
    /// When the response arrived (ignored for `Unknown`).
    pub complete: u64,
}

/// A history that is not linearizable, or not well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations admit no linearization.
    pub key: Vec<u8>,
    /// Indexes into the checked history: first the operation that could not be placed,
    /// then the operations concurrent with it.
    pub operations: Vec<usize>,
    /// A human-readable account naming the key and operations.
    pub description: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Why [`check_with_budget`] did not accept a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not linearizable.
    Violation(Violation),
    /// The search of `key` took more steps than the budget allowed: no verdict.
    BudgetExceeded {
        /// The key being searched.
        key: Vec<u8>,
    },
}

/// Checks that `history` is linearizable, with no bound on the search.
///
/// # Errors
/// The [`Violation`] of the first key (in key order) with no linearization.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    match check_with_budget(history, u64::MAX) {
        Ok(()) => Ok(()),
        Err(CheckError::Violation(violation)) => Err(violation),
        Err(CheckError::BudgetExceeded { .. }) => unreachable!("an unbounded budget"),
    }
}

/// Checks `history`, giving up on a key after `steps_max` search steps.
///
/// # Errors
/// [`CheckError::Violation`] for a non-linearizable key, [`CheckError::BudgetExceeded`]
/// when a key's search ran out of steps first.
pub fn check_with_budget(history: &[Operation], steps_max: u64) -> Result<(), CheckError> {
    let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, operation) in history.iter().enumerate() {
        by_key.entry(&operation.key).or_default().push(i);
    }
    let mut keys: Vec<&[u8]> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let partition = Partition::new(history, &by_key[key]).map_err(CheckError::Violation)?;
        partition.search(history, steps_max)?;
    }
    Ok(())
}

/// The register value: 0 is absent, `id + 1` is the interned value `id`.
type State = u32;
const ABSENT: State = 0;

/// One operation of a partition in model form.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Index in the full history.
    history_index: usize,
    kind: StepKind,
    /// Whether the operation must be placed, before `complete`.
    known: bool,
    invoke: u64,
    complete: u64,
}

#[derive(Debug, Clone, Copy)]
enum StepKind {
    Write(State),
    Read(State),
    CasOk { expected: State, new: State },
    CasFailed { expected: State },
    CasUnknown { expected: State, new: State },
}

impl StepKind {
    /// The register after this operation from `state`, or `None` if its outcome is
    /// impossible there.
    fn apply(self, state: State) -> Option<State> {
        match self {
            StepKind::Write(value) => Some(value),
            StepKind::Read(value) => (value == state).then_some(state),
            StepKind::CasOk { expected, new } => (expected == state).then_some(new),
            StepKind::CasFailed { expected } => (expected != state).then_some(state),
            StepKind::CasUnknown { expected, new } => {
                Some(if expected == state { new } else { state })
            }
        }
    }
}

/// One key's operations, ready to search.
struct Partition {
    key: Vec<u8>,
    steps: Vec<Step>,
    /// Call and return events: `(time, is_return, step)`, sorted.
    events: Vec<(u64, bool, usize)>,
    /// For an unknown step, the identical unknown step invoked just before it, which must
    /// be placed first (see [`order_identical_unknown_steps`]).
    predecessor: Vec<Option<usize>>,
    values: Vec<Vec<u8>>,
}

fn malformed(history: &[Operation], i: usize) -> Violation {
    let operation = &history[i];
    Violation {
        key: operation.key.clone(),
        operations: vec![i],
        description: format!(
            "malformed history: operation #{i} ({}) has an outcome its call cannot have, \
             or completes before it is invoked",
            describe(operation)
        ),
    }
}

impl Partition {
    fn new<'h>(history: &'h [Operation], indexes: &[usize]) -> Result<Partition, Violation> {
        let mut interned: HashMap<&[u8], State> = HashMap::new();
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut intern = |value: Option<&'h [u8]>| -> State {
            match value {
                None => ABSENT,
                Some(bytes) => *interned.entry(bytes).or_insert_with(|| {
                    values.push(bytes.to_vec());
                    values.len() as State
                }),
            }
        };
        let mut steps = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let operation = &history[i];
            let known = operation.outcome != Outcome::Unknown;
            if known && operation.complete < operation.invoke {
                return Err(malformed(history, i));
            }
            let kind = match (&operation.call, &operation.outcome) {
                (_, Outcome::Failed) | (KvCall::Get, Outcome::Unknown) => continue,
                (KvCall::Put(value), Outcome::Ok | Outcome::Unknown) => {
                    StepKind::Write(intern(Some(value)))
                }
                (KvCall::Delete, Outcome::Ok | Outcome::Unknown) => StepKind::Write(ABSENT),
                (KvCall::Get, Outcome::Read(value)) => StepKind::Read(intern(value.as_deref())),
                (KvCall::Cas { expected, new }, outcome) => {
                    let expected = intern(expected.as_deref());
                    let new = intern(Some(new));
                    match outcome {
                        Outcome::Ok => StepKind::CasOk { expected, new },
                        Outcome::CasFailed => StepKind::CasFailed { expected },
                        Outcome::Unknown => StepKind::CasUnknown { expected, new },
                        _ => return Err(malformed(history, i)),
                    }
                }
                _ => return Err(malformed(history, i)),
            };
            steps.push(Step {
                history_index: i,
                kind,
                known,
                invoke: operation.invoke,
                complete: operation.complete,
            });
        }
        prune_unobserved_unknown_writes(&mut steps);
        bound_observed_unknown_writes(&mut steps, values.len());
        let predecessor = order_identical_unknown_steps(&steps);
        let mut events = Vec::with_capacity(steps.len() * 2);
        for (s, step) in steps.iter().enumerate() {
            events.push((step.invoke, false, s));
            if step.known {
                events.push((step.complete, true, s));
            }
        }
        // At equal times calls sort before returns: such operations are concurrent.
        events.sort_unstable();
        Ok(Partition {
            key: history[indexes[0]].key.clone(),
            steps,
            events,
            predecessor,
            values,
        })
    }

    fn search(&self, history: &[Operation], steps_max: u64) -> Result<(), CheckError> {
        let known_count = self.steps.iter().filter(|step| step.known).count();
        let mut list = EventList::new(&self.events, self.steps.len());
        let mut linearized = Bitset::new(self.steps.len());
        let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut state = ABSENT;
        let mut known_done = 0;
        let mut best = (0, linearized.clone(), state);
        let mut entry = list.first();
        let mut steps_taken: u64 = 0;
        while known_done < known_count {
            steps_taken += 1;
            if steps_taken > steps_max {
                return Err(CheckError::BudgetExceeded {
                    key: self.key.clone(),
                });
            }
            let backtrack = match entry {
                Some(event) if !self.events[event].1 => {
                    let s = self.events[event].2;
                    if self.predecessor[s].is_some_and(|p| !linearized.get(p)) {
                        entry = list.next(event);
                        continue;
                    }
                    let next_state = self.steps[s].kind.apply(state);
                    linearized.set(s);
                    if let Some(next_state) = next_state
                        && seen.insert((linearized.words.clone(), next_state))
                    {
                        stack.push((s, state));
                        state = next_state;
                        known_done += usize::from(self.steps[s].known);
                        list.lift(s);
                        if stack.len() > best.0 {
                            best = (stack.len(), linearized.clone(), state);
                        }
                        entry = list.first();
                        continue;
                    }
                    linearized.clear(s);
                    entry = list.next(event);
                    false
                }
                // A return of an operation not linearized yet, or the end of the list.
                _ => true,
            };
            if backtrack {
                let Some((s, previous)) = stack.pop() else {
                    return Err(CheckError::Violation(self.violation(history, &best)));
                };
                state = previous;
                known_done -= usize::from(self.steps[s].known);
                linearized.clear(s);
                list.unlift(s);
                entry = list.next(list.call_event[s]);
            }
        }
        Ok(())
    }

    fn violation(&self, history: &[Operation], best: &(usize, Bitset, State)) -> Violation {
        let (placed, linearized, state) = best;
        // The stuck operation: the known one with the earliest return not placed.
        let stuck = self
            .events
            .iter()
            .find(|(_, is_return, s)| *is_return && !linearized.get(*s))
            .map_or(0, |(_, _, s)| *s);
        let stuck_step = self.steps[stuck];
        let stuck_operation = &history[stuck_step.history_index];
        let mut operations = vec![stuck_step.history_index];
        let mut concurrent = String::new();
        for step in &self.steps {
            let overlaps = step.history_index != stuck_step.history_index
                && step.invoke <= stuck_step.complete
                && (!step.known || step.complete >= stuck_step.invoke);
            if overlaps && operations.len() <= 8 {
                operations.push(step.history_index);
                let other = &history[step.history_index];
                let _ = write!(
                    concurrent,
                    "\n  #{} {}",
                    step.history_index,
                    describe(other)
                );
            }
        }
        let value = match *state {
            ABSENT => "absent".to_owned(),
            id => format!(
                "{:?}",
                String::from_utf8_lossy(&self.values[id as usize - 1])
            ),
        };
        Violation {
            key: self.key.clone(),
            description: format!(
                "key {:?} is not linearizable: operation #{} {} cannot be placed; the longest \
                 linearizable prefix places {placed} of {} operations and leaves the value \
                 {value}; concurrent operations:{}",
                String::from_utf8_lossy(&self.key),
                operations[0],
                describe(stuck_operation),
                self.steps.len(),
                if concurrent.is_empty() {
                    " none"
                } else {
                    &concurrent
                },
            ),
            operations,
        }
    }
}

fn prune_unobserved_unknown_writes(steps: &mut Vec<Step>) {
    if steps
        .iter()
        .any(|step| matches!(step.kind, StepKind::CasFailed { .. }))
    {
        return;
    }
    let mut observed: HashSet<State> = HashSet::new();
    for step in steps.iter() {
        match step.kind {
            StepKind::Read(value) => {
                observed.insert(value);
            }
            StepKind::CasOk { expected, .. }
            | StepKind::CasFailed { expected }
            | StepKind::CasUnknown { expected, .. } => {
                observed.insert(expected);
            }
            StepKind::Write(_) => {}
        }
    }
    steps.retain(|step| match step.kind {
        StepKind::Write(value) | StepKind::CasUnknown { new: value, .. } if !step.known => {
            value == ABSENT || observed.contains(&value)
        }
        _ => true,
    });
}

/// An unknown write of a value that no other operation writes, and that some operation
/// observed (a read returning it, or a successful cas expecting it), certainly happened,
/// before the first observer completed: it becomes a known operation completing then (a
/// cas of unknown outcome becomes a successful one). Without this, every unknown write
/// stays pending to the end of the history and the search space doubles with each one.
fn bound_observed_unknown_writes(steps: &mut [Step], value_count: usize) {
    let mut writers = vec![0u32; value_count + 1];
    let mut first_observed: Vec<Option<u64>> = vec![None; value_count + 1];
    for step in steps.iter() {
        match step.kind {
            StepKind::Write(value)
            | StepKind::CasOk { new: value, .. }
            | StepKind::CasUnknown { new: value, .. } => {
                writers[value as usize] = writers[value as usize].saturating_add(1);
            }
            StepKind::CasFailed { .. } => {}
            StepKind::Read(_) => {}
        }
        if let StepKind::Read(value)
        | StepKind::CasOk {
            expected: value, ..
        } = step.kind
        {
            let first = &mut first_observed[value as usize];
            *first = Some(first.map_or(step.complete, |time| time.min(step.complete)));
        }
    }
    for step in steps.iter_mut().filter(|step| !step.known) {
        let (StepKind::Write(value) | StepKind::CasUnknown { new: value, .. }) = step.kind else {
            continue;
        };
        if value == ABSENT || writers[value as usize] != 1 {
            continue;
        }
        if let Some(time) = first_observed[value as usize] {
            step.known = true;
            step.complete = time;
            if let StepKind::CasUnknown { expected, new } = step.kind {
                step.kind = StepKind::CasOk { expected, new };
            }
        }
    }
}

/// Unknown steps with the same effect (say two unknown deletes) are interchangeable, and
/// as they have no completion bound, any placement of some of them can be replaced by
/// one that uses the earliest-invoked ones, in invoke order. So each may be placed only
/// after its identical predecessor: k such steps give k + 1 placed subsets, not 2^k.
fn order_identical_unknown_steps(steps: &[Step]) -> Vec<Option<usize>> {
    let mut unknown: Vec<usize> = (0..steps.len()).filter(|&s| !steps[s].known).collect();
    unknown.sort_by_key(|&s| (steps[s].invoke, s));
    let mut last: HashMap<(u8, State, State), usize> = HashMap::new();
    let mut predecessor = vec![None; steps.len()];
    for s in unknown {
        let signature = match steps[s].kind {
            StepKind::Write(value) => (0, value, 0),
            StepKind::CasUnknown { expected, new } => (1, expected, new),
            StepKind::Read(_) | StepKind::CasOk { .. } | StepKind::CasFailed { .. } => continue,
        };
        predecessor[s] = last.insert(signature, s);
    }
    predecessor
}

fn describe(operation: &Operation) -> String {
    let show = |value: &Option<Vec<u8>>| match value {
        Some(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        None => "absent".to_owned(),
    };
    let call = match &operation.call {
        KvCall::Put(value) => format!("put({})", show(&Some(value.clone()))),
        KvCall::Get => "get()".to_owned(),
        KvCall::Delete => "delete()".to_owned(),
        KvCall::Cas { expected, new } => {
            format!("cas({} -> {})", show(expected), show(&Some(new.clone())))
        }
    };
    let outcome = match &operation.outcome {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Read(value) => show(value),
        Outcome::CasFailed => "cas failed".to_owned(),
        Outcome::Failed => "failed".to_owned(),
        Outcome::Unknown => "unknown".to_owned(),
    };
    let complete = if operation.outcome == Outcome::Unknown {
        "?".to_owned()
    } else {
        operation.complete.to_string()
    };
    format!(
        "client {} {call} -> {outcome} [{}, {complete}]",
        operation.client, operation.invoke
    )
}

/// A fixed-size set of partition steps.
#[derive(Debug, Clone)]
struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset {
            words: vec![0; bits.div_ceil(64)],
        }
    }
    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }
    fn clear(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }
    fn get(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// The events as a doubly linked list with a sentinel, supporting Knuth's "dancing
/// links" removal and reinsertion of an operation's call and return events.
struct EventList {
    /// `prev[e]` / `next[e]` for event `e`; index `events.len()` is the sentinel.
    prev: Vec<usize>,
    next: Vec<usize>,
    call_event: Vec<usize>,
    return_event: Vec<Option<usize>>,
    sentinel: usize,
}

impl EventList {
    fn new(events: &[(u64, bool, usize)], steps: usize) -> EventList {
        let sentinel = events.len();
        let count = events.len() + 1;
        let mut call_event = vec![0; steps];
        let mut return_event = vec![None; steps];
        for (e, &(_, is_return, s)) in events.iter().enumerate() {
            if is_return {
                return_event[s] = Some(e);
            } else {
                call_event[s] = e;
            }
        }
        EventList {
            prev: (0..count).map(|e| (e + count - 1) % count).collect(),
            next: (0..count).map(|e| (e + 1) % count).collect(),
            call_event,
            return_event,
            sentinel,
        }
    }

    fn first(&self) -> Option<usize> {
        self.next(self.sentinel)
    }

    fn next(&self, event: usize) -> Option<usize> {
        let next = self.next[event];
        (next != self.sentinel).then_some(next)
    }

    fn unlink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, event: usize) {
        let (prev, next) = (self.prev[event], self.next[event]);
        self.next[prev] = event;
        self.prev[next] = event;
    }

    /// Removes step `s`'s events (call first, then return).
    fn lift(&mut self, s: usize) {
        self.unlink(self.call_event[s]);
        if let Some(event) = self.return_event[s] {
            self.unlink(event);
        }
    }

    /// Undoes [`EventList::lift`] of the most recently lifted step `s`.
    fn unlift(&mut self, s: usize) {
        if let Some(event) = self.return_event[s] {
            self.relink(event);
        }
        self.relink(self.call_event[s]);
    }
}

#[cfg(test)]
#[path = "linearizability_tests.rs"]
mod tests;
