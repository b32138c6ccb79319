//! The recorded history of a round: one [`crate::check::Operation`] per client request,
//! written as JSON lines so a kept history can be checked again
//! (`raftkv-faults --check FILE`).
//!
//! One line per operation:
//! `{"client":1,"key":"k2","call":"cas","expected":"c1-4","value":"c1-9","outcome":"ok",
//! "invoke":1200,"complete":3400}`. `call` is `put`, `get`, `delete` or `cas`; `value` is
//! the value written (put, cas) or read (get with outcome `read`, `null` = absent); a
//! cas without `expected` requires the key to be absent;
//! `outcome` is `ok`, `read`, `cas-failed`, `failed` or `unknown`; times are microseconds
//! on the round's clock. Keys and values are UTF-8 (the workload only writes such).
//!
//! Invariant: `parse(&render(h)) == h` for every history of UTF-8 keys and values.

use serde::{Deserialize, Serialize};

use crate::check::{KvCall, Operation, Outcome};

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    client: u64,
    key: String,
    call: String,
    /// A cas's expected value; absent or `null` = the key must be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<String>,
    #[serde(default)]
    value: Option<String>,
    outcome: String,
    invoke: u64,
    complete: u64,
}

/// Why a history file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not valid JSON of the expected shape.
    #[error("history line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn to_line(operation: &Operation) -> Line {
    let (call, expected, written) = match &operation.call {
        KvCall::Put(value) => ("put", None, Some(text(value))),
        KvCall::Get => ("get", None, None),
        KvCall::Delete => ("delete", None, None),
        KvCall::Cas { expected, new } => ("cas", expected.as_deref().map(text), Some(text(new))),
    };
    let (outcome, value) = match &operation.outcome {
        Outcome::Ok => ("ok", written),
        Outcome::Read(read) => ("read", read.as_deref().map(text)),
        Outcome::CasFailed => ("cas-failed", written),
        Outcome::Failed => ("failed", written),
        Outcome::Unknown => ("unknown", written),
    };
    Line {
        client: operation.client,
        key: text(&operation.key),
        call: call.to_string(),
        expected,
        value,
        outcome: outcome.to_string(),
        invoke: operation.invoke,
        complete: operation.complete,
    }
}

fn from_line(line: Line) -> Result<Operation, String> {
    let bytes = |value: &Option<String>| value.as_ref().map(|v| v.clone().into_bytes());
    let written = || bytes(&line.value).ok_or("a put or cas needs a `value`".to_string());
    let call = match line.call.as_str() {
        "put" => KvCall::Put(written()?),
        "get" => KvCall::Get,
        "delete" => KvCall::Delete,
        "cas" => KvCall::Cas {
            expected: bytes(&line.expected),
            new: written()?,
        },
        other => return Err(format!("unknown call `{other}`")),
    };
    let outcome = match line.outcome.as_str() {
        "ok" => Outcome::Ok,
        "read" => Outcome::Read(bytes(&line.value)),
        "cas-failed" => Outcome::CasFailed,
        "failed" => Outcome::Failed,
        "unknown" => Outcome::Unknown,
        other => return Err(format!("unknown outcome `{other}`")),
    };
    Ok(Operation {
        client: line.client,
        key: line.key.into_bytes(),
        call,
        outcome,
        invoke: line.invoke,
        complete: line.complete,
    })
}

/// The history as JSON lines, one operation per line.
pub fn render(history: &[Operation]) -> String {
    let mut out = String::new();
    for operation in history {
        // Serializing a struct of strings and integers cannot fail.
        if let Ok(json) = serde_json::to_string(&to_line(operation)) {
            out.push_str(&json);
            out.push('\n');
        }
    }
    out
}

/// Reads a history written by [`render`]; blank lines are skipped.
///
/// # Errors
/// [`HistoryError::Line`] naming the first bad line.
pub fn parse(text: &str) -> Result<Vec<Operation>, HistoryError> {
    let mut history = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |message: String| HistoryError::Line {
            line: i + 1,
            message,
        };
        let line: Line = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        history.push(from_line(line).map_err(bad)?);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: KvCall, outcome: Outcome) -> Operation {
        Operation {
            client: 3,
            key: b"k1".to_vec(),
            call,
            outcome,
            invoke: 10,
            complete: 20,
        }
    }

    /// Goal: every call and outcome survives a render/parse round trip.
    #[test]
    fn round_trip_of_every_call_and_outcome() {
        let history = vec![
            op(KvCall::Put(b"a".to_vec()), Outcome::Ok),
            op(KvCall::Put(b"b".to_vec()), Outcome::Unknown),
            op(KvCall::Get, Outcome::Read(Some(b"a".to_vec()))),
            op(KvCall::Get, Outcome::Read(None)),
            op(KvCall::Delete, Outcome::Failed),
            op(
                KvCall::Cas {
                    expected: None,
                    new: b"c".to_vec(),
                },
                Outcome::CasFailed,
            ),
            op(
                KvCall::Cas {
                    expected: Some(b"a".to_vec()),
                    new: b"d".to_vec(),
                },
                Outcome::Ok,
            ),
        ];
        assert_eq!(parse(&render(&history)).expect("parses"), history);
    }

    #[test]
    fn bad_lines_are_named() {
        let cases = [
            ("{", 1),
            (
                "\n{\"client\":1,\"key\":\"k\",\"call\":\"put\",\"outcome\":\"ok\",\"invoke\":1,\"complete\":2}",
                2,
            ),
            (
                "{\"client\":1,\"key\":\"k\",\"call\":\"jump\",\"outcome\":\"ok\",\"invoke\":1,\"complete\":2}",
                1,
            ),
        ];
        for (i, (text, line)) in cases.iter().enumerate() {
            match parse(text) {
                Err(HistoryError::Line { line: got, .. }) => assert_eq!(got, *line, "#{i}"),
                Ok(history) => panic!("#{i}: parsed {history:?}"),
            }
        }
    }
}
