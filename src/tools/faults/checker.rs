//! The verdict on a recorded history: linearizability per key through
//! [`crate::check::check_with_budget`], with keys whose search ran out of steps reported
//! apart (no verdict is not a pass).
//!
//! Each key is checked on its own (a key-value map is linearizable iff each key is), so
//! one key over budget does not hide a violation on another. A violation's description
//! numbers operations by their position among that key's operations; its `operations`
//! field is mapped back to positions in the whole history.

use std::collections::BTreeMap;

use crate::check::{CheckError, Operation, Violation, check_with_budget};

/// Default search budget per key.
pub const STEPS_MAX_DEFAULT: u64 = 50_000_000;

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Keys checked.
    pub keys: usize,
    /// Keys with no linearization.
    pub violations: Vec<Violation>,
    /// Keys whose search took more than the budget: unknown.
    pub budget_exceeded: Vec<Vec<u8>>,
}

impl CheckSummary {
    /// Linearizable, every key decided.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.budget_exceeded.is_empty()
    }

    /// One line: `linearizable (5 keys)`, or what failed.
    pub fn describe(&self) -> String {
        if self.passed() {
            return format!("linearizable ({} keys)", self.keys);
        }
        let mut parts = Vec::new();
        for violation in &self.violations {
            parts.push(format!("VIOLATION: {violation}"));
        }
        for key in &self.budget_exceeded {
            parts.push(format!(
                "BUDGET EXCEEDED on key {:?} (no verdict)",
                String::from_utf8_lossy(key)
            ));
        }
        parts.join("\n")
    }
}

/// Checks every key of `history`, giving each key's search at most `steps_max` steps.
pub fn check_history(history: &[Operation], steps_max: u64) -> CheckSummary {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, operation) in history.iter().enumerate() {
        by_key.entry(&operation.key).or_default().push(i);
    }
    let mut summary = CheckSummary {
        keys: by_key.len(),
        ..CheckSummary::default()
    };
    for (key, indexes) in by_key {
        let part: Vec<Operation> = indexes.iter().map(|&i| history[i].clone()).collect();
        match check_with_budget(&part, steps_max) {
            Ok(()) => {}
            Err(CheckError::Violation(mut violation)) => {
                for operation in &mut violation.operations {
                    *operation = indexes[*operation];
                }
                summary.violations.push(violation);
            }
            Err(CheckError::BudgetExceeded { .. }) => summary.budget_exceeded.push(key.to_vec()),
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{KvCall, Outcome};

    fn op(key: &str, call: KvCall, outcome: Outcome, invoke: u64, complete: u64) -> Operation {
        Operation {
            client: 1,
            key: key.as_bytes().to_vec(),
            call,
            outcome,
            invoke,
            complete,
        }
    }

    /// Goal: every key gets its own verdict, and indexes point into the whole history.
    /// Method: key "a" is fine, key "b" reads a value never written.
    #[test]
    fn violations_are_per_key_with_history_indexes() {
        let history = vec![
            op("a", KvCall::Put(b"1".to_vec()), Outcome::Ok, 0, 1),
            op("b", KvCall::Put(b"1".to_vec()), Outcome::Ok, 0, 1),
            op("a", KvCall::Get, Outcome::Read(Some(b"1".to_vec())), 2, 3),
            op("b", KvCall::Get, Outcome::Read(Some(b"9".to_vec())), 2, 3),
        ];
        let summary = check_history(&history, STEPS_MAX_DEFAULT);
        assert_eq!(summary.keys, 2);
        assert_eq!(summary.violations.len(), 1, "{}", summary.describe());
        assert_eq!(summary.violations[0].key, b"b".to_vec());
        assert!(summary.violations[0].operations.contains(&3));
        assert!(!summary.passed());
    }

    /// Goal: running out of budget is "no verdict", never a pass.
    #[test]
    fn budget_exceeded_is_not_a_pass() {
        let history = vec![
            op("a", KvCall::Put(b"1".to_vec()), Outcome::Ok, 0, 10),
            op("a", KvCall::Put(b"2".to_vec()), Outcome::Ok, 0, 10),
            op("a", KvCall::Get, Outcome::Read(Some(b"2".to_vec())), 0, 10),
        ];
        let summary = check_history(&history, 1);
        assert_eq!(summary.budget_exceeded, vec![b"a".to_vec()]);
        assert!(summary.violations.is_empty());
        assert!(!summary.passed());
        assert!(summary.describe().contains("BUDGET EXCEEDED"));
        assert!(check_history(&history, STEPS_MAX_DEFAULT).passed());
    }
}
