//! Tests of the linearizability checker: each kind of violation it must catch, valid
//! concurrent histories it must accept, agreement with a brute-force search over every
//! order on small random histories, and the step budget on large generated ones.

use super::*;

fn op(client: u64, call: KvCall, outcome: Outcome, invoke: u64, complete: u64) -> Operation {
    Operation {
        client,
        key: b"k".to_vec(),
        call,
        outcome,
        invoke,
        complete,
    }
}

fn put(v: &str) -> KvCall {
    KvCall::Put(v.as_bytes().to_vec())
}

fn read(v: Option<&str>) -> Outcome {
    Outcome::Read(v.map(|v| v.as_bytes().to_vec()))
}

fn cas(expected: Option<&str>, new: &str) -> KvCall {
    KvCall::Cas {
        expected: expected.map(|v| v.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    }
}

#[test]
fn catches_a_stale_read() {
    let history = [
        op(1, put("1"), Outcome::Ok, 0, 10),
        op(1, put("2"), Outcome::Ok, 20, 30),
        op(2, KvCall::Get, read(Some("1")), 40, 50),
    ];
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.key, b"k");
    assert_eq!(violation.operations[0], 2, "{violation}");
    assert!(violation.description.contains("#2"), "{violation}");
}

#[test]
fn catches_a_lost_acknowledged_write() {
    let history = [
        op(1, put("1"), Outcome::Ok, 0, 10),
        op(2, KvCall::Get, read(None), 20, 30),
    ];
    assert_eq!(check(&history).unwrap_err().operations, vec![1]);
    // An acknowledged cas that later reads do not see is lost as well.
    let history = [
        op(1, put("1"), Outcome::Ok, 0, 10),
        op(1, cas(Some("1"), "2"), Outcome::Ok, 20, 30),
        op(2, KvCall::Get, read(Some("1")), 40, 50),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn catches_a_read_of_a_value_never_written() {
    let history = [
        op(1, put("1"), Outcome::Unknown, 0, 0),
        op(2, KvCall::Get, read(Some("x")), 5, 6),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn catches_a_cas_that_should_have_succeeded() {
    let history = [
        op(1, put("1"), Outcome::Ok, 0, 10),
        op(2, cas(Some("1"), "2"), Outcome::CasFailed, 20, 30),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn accepts_valid_concurrent_histories() {
    let cases: Vec<Vec<Operation>> = vec![
        // Two overlapping puts, reads see them in either order consistently.
        vec![
            op(1, put("1"), Outcome::Ok, 0, 10),
            op(2, put("2"), Outcome::Ok, 5, 15),
            op(3, KvCall::Get, read(Some("1")), 12, 20),
            op(3, KvCall::Get, read(Some("1")), 21, 22),
        ],
        // A read overlapping a write may see the old or the new value.
        vec![
            op(1, put("1"), Outcome::Ok, 0, 10),
            op(2, KvCall::Get, read(None), 1, 3),
            op(3, KvCall::Get, read(Some("1")), 2, 4),
        ],
        // An unknown put may take effect long after its invoke ...
        vec![
            op(1, put("1"), Outcome::Unknown, 0, 0),
            op(2, KvCall::Get, read(None), 50, 60),
            op(2, KvCall::Get, read(Some("1")), 100, 110),
        ],
        // ... or never.
        vec![
            op(1, put("1"), Outcome::Unknown, 0, 0),
            op(2, KvCall::Get, read(None), 50, 60),
            op(1, cas(None, "2"), Outcome::Ok, 70, 80),
            op(2, KvCall::Get, read(Some("2")), 100, 110),
        ],
        // Failed operations have no effect; cas outcomes follow the value.
        vec![
            op(1, put("9"), Outcome::Failed, 0, 1),
            op(1, cas(None, "1"), Outcome::Ok, 2, 3),
            op(2, cas(None, "2"), Outcome::CasFailed, 4, 5),
            op(2, KvCall::Delete, Outcome::Unknown, 6, 0),
            op(3, KvCall::Get, read(Some("1")), 7, 8),
            op(3, KvCall::Get, read(None), 9, 10),
        ],
        // Equal times at a boundary count as concurrent.
        vec![
            op(1, put("1"), Outcome::Ok, 0, 10),
            op(2, KvCall::Get, read(None), 10, 12),
        ],
    ];
    for (i, history) in cases.iter().enumerate() {
        assert_eq!(check(history), Ok(()), "#{i}");
    }
}

#[test]
fn an_unknown_write_cannot_be_undone() {
    // Once its value was read, an unknown put has happened; it cannot vanish.
    let history = [
        op(1, put("1"), Outcome::Unknown, 0, 0),
        op(2, KvCall::Get, read(Some("1")), 10, 20),
        op(2, KvCall::Get, read(None), 30, 40),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn keys_are_checked_independently_and_named() {
    let mut history = vec![
        op(1, put("1"), Outcome::Ok, 0, 10),
        op(1, KvCall::Get, read(Some("1")), 20, 30),
    ];
    history.push(Operation {
        key: b"other".to_vec(),
        ..op(2, KvCall::Get, read(Some("1")), 40, 50)
    });
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.key, b"other");
    assert!(violation.description.contains("\"other\""), "{violation}");
}

#[test]
fn malformed_histories_are_reported() {
    let history = [op(1, KvCall::Delete, read(None), 0, 1)];
    assert!(
        check(&history)
            .unwrap_err()
            .description
            .contains("malformed")
    );
}

/// The reference semantics, by exhaustion: some subset of the unknown operations plus
/// every known one, in some order respecting real time, replays on a register.
fn brute_force(history: &[Operation]) -> bool {
    let known: Vec<usize> = (0..history.len())
        .filter(|&i| !matches!(history[i].outcome, Outcome::Unknown | Outcome::Failed))
        .collect();
    let unknown: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].outcome == Outcome::Unknown)
        .collect();
    (0..1u32 << unknown.len()).any(|mask| {
        let mut chosen = known.clone();
        chosen.extend(
            (0..unknown.len())
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| unknown[b]),
        );
        permutations_replay(history, &mut chosen, 0)
    })
}

fn permutations_replay(history: &[Operation], order: &mut Vec<usize>, at: usize) -> bool {
    if at == order.len() {
        return replays(history, order);
    }
    for i in at..order.len() {
        order.swap(at, i);
        if permutations_replay(history, order, at + 1) {
            order.swap(at, i);
            return true;
        }
        order.swap(at, i);
    }
    false
}

fn replays(history: &[Operation], order: &[usize]) -> bool {
    let precedes =
        |a: &Operation, b: &Operation| a.outcome != Outcome::Unknown && a.complete < b.invoke;
    for (x, &i) in order.iter().enumerate() {
        if order[x + 1..]
            .iter()
            .any(|&j| precedes(&history[j], &history[i]))
        {
            return false;
        }
    }
    let mut state: Option<Vec<u8>> = None;
    for &i in order {
        let operation = &history[i];
        match (&operation.call, &operation.outcome) {
            (KvCall::Put(value), _) => state = Some(value.clone()),
            (KvCall::Delete, _) => state = None,
            (KvCall::Get, Outcome::Read(value)) if *value != state => return false,
            (KvCall::Get, _) => {}
            (KvCall::Cas { expected, new }, outcome) => {
                let matches = *expected == state;
                match outcome {
                    Outcome::Ok if !matches => return false,
                    Outcome::CasFailed if matches => return false,
                    Outcome::CasFailed => {}
                    _ if matches => state = Some(new.clone()),
                    _ => {}
                }
            }
        }
    }
    true
}

fn small_history() -> impl proptest::strategy::Strategy<Value = Vec<Operation>> {
    use proptest::prelude::*;
    let value = || (0u8..3).prop_map(|v| vec![b'a' + v]);
    let call = prop_oneof![
        value().prop_map(KvCall::Put),
        Just(KvCall::Get),
        Just(KvCall::Delete),
        (proptest::option::of(value()), value())
            .prop_map(|(expected, new)| KvCall::Cas { expected, new }),
    ];
    let operation = (
        call,
        0u8..10,
        proptest::option::of(value()),
        0u64..12,
        0u64..6,
    )
        .prop_map(|(call, roll, read, invoke, length)| {
            let outcome = match (&call, roll) {
                (_, 0 | 1) => Outcome::Unknown,
                (_, 2) => Outcome::Failed,
                (KvCall::Get, _) => Outcome::Read(read),
                (KvCall::Cas { .. }, 3..=5) => Outcome::CasFailed,
                _ => Outcome::Ok,
            };
            Operation {
                client: 0,
                key: b"k".to_vec(),
                call,
                outcome,
                invoke,
                complete: invoke + length,
            }
        });
    proptest::collection::vec(operation, 1..7)
}

proptest::proptest! {
    /// Goal: the search and its reductions (pruning unobserved unknown writes,
    /// bounding observed ones, ordering identical ones) agree with exhaustion.
    #[test]
    fn agrees_with_brute_force(history in small_history()) {
        proptest::prop_assert_eq!(check(&history).is_ok(), brute_force(&history), "{:?}", history);
    }
}

/// SplitMix64, so the generated histories are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history of `count` operations over three keys produced by a real register:
/// each operation takes effect at time `10 * i` and its interval straddles that
/// point by up to 40 time units each side (about eight operations overlap).
fn generated_history(count: u64, seed: u64) -> Vec<Operation> {
    let mut rng = Rng(seed);
    let mut registers: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    let mut history = Vec::new();
    for i in 0..count {
        let key = vec![b'a' + rng.below(3) as u8];
        let current = registers.entry(key.clone()).or_default();
        let value = format!("v{i}").into_bytes();
        let (call, outcome) = match rng.below(10) {
            0..=3 => (KvCall::Get, Outcome::Read(current.clone())),
            4..=6 => {
                *current = Some(value.clone());
                (KvCall::Put(value), Outcome::Ok)
            }
            7 => {
                *current = None;
                (KvCall::Delete, Outcome::Ok)
            }
            _ => {
                let expected = current.clone();
                *current = Some(value.clone());
                (
                    KvCall::Cas {
                        expected,
                        new: value,
                    },
                    Outcome::Ok,
                )
            }
        };
        // One write in twenty is reported unknown (it still took effect).
        let outcome = if outcome == Outcome::Ok && rng.below(20) == 0 {
            Outcome::Unknown
        } else {
            outcome
        };
        let at = 100 + 10 * i;
        history.push(Operation {
            client: rng.below(8),
            key,
            call,
            outcome,
            invoke: at - rng.below(40),
            complete: at + rng.below(40),
        });
    }
    history
}

#[test]
fn large_valid_histories_pass_within_a_step_budget() {
    // Goal: ~10k operations over three keys are accepted without blowing up.
    for seed in 0..3 {
        let history = generated_history(10_000, seed);
        assert_eq!(
            check_with_budget(&history, 2_000_000),
            Ok(()),
            "seed {seed}"
        );
    }
}

#[test]
fn a_single_corrupted_read_in_a_large_history_is_found() {
    let mut history = generated_history(10_000, 7);
    let position = history
        .iter()
        .rposition(|operation| operation.call == KvCall::Get)
        .unwrap();
    history[position].outcome = read(Some("never written"));
    match check_with_budget(&history, 2_000_000) {
        Err(CheckError::Violation(violation)) => {
            assert_eq!(violation.operations[0], position, "{violation}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
