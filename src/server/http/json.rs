//! The JSON bodies of the HTTP API: values in and out, transactions in, results, the
//! cluster status and errors out (docs/HTTP.md shows each).
//!
//! Invariant: keys and values are bytes. A UTF-8 one is a JSON string under its plain
//! name (`key`, `value`); any other is standard base64 under the same name with
//! `_base64` appended (`key_base64`, `value_base64`), so no byte is ever lost or
//! replaced. Input accepts both forms, exactly one per field.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::codec::client::Status;
use crate::kv::{Compare, CompareOp, Op, OpResult};
use crate::raft::message::NO_NODE;

/// `{"error": message}`.
pub fn error_body(message: &str) -> Vec<u8> {
    json!({ "error": message }).to_string().into_bytes()
}

/// Sets `name` (or `name_base64` when `bytes` are not UTF-8) in `object`.
pub fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_string(), Value::from(text)),
        Err(_) => object.insert(format!("{name}_base64"), STANDARD.encode(bytes).into()),
    };
}

/// The bytes of field `name` of `object` (its string or its `_base64` form); `Ok(None)`
/// when neither is present.
///
/// # Errors
/// Both forms, a non-string or bad base64: the message for a 400.
fn take_bytes(object: &Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, String> {
    let plain = object.get(name);
    let encoded = object.get(&format!("{name}_base64"));
    match (plain, encoded) {
        (Some(_), Some(_)) => Err(format!("give either `{name}` or `{name}_base64`, not both")),
        (Some(Value::String(text)), None) => Ok(Some(text.clone().into_bytes())),
        (None, Some(Value::String(text))) => STANDARD
            .decode(text)
            .map(Some)
            .map_err(|e| format!("`{name}_base64` is not base64: {e}")),
        (None, None) => Ok(None),
        _ => Err(format!("`{name}` must be a string")),
    }
}

fn object_of(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// The value of a PUT body `{"value": ...}` or `{"value_base64": ...}`.
///
/// # Errors
/// The message for a 400.
pub fn put_value(body: &[u8]) -> Result<Vec<u8>, String> {
    let object = object_of(body)?;
    if let Some(extra) = object
        .keys()
        .find(|k| *k != "value" && *k != "value_base64")
    {
        return Err(format!("unknown field `{extra}`"));
    }
    take_bytes(&object, "value")?.ok_or_else(|| "missing `value`".into())
}

/// `{"key": ..., "value": ...}` of a GET.
pub fn key_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut object = Map::new();
    put_bytes(&mut object, "key", key);
    put_bytes(&mut object, "value", value);
    Value::Object(object).to_string().into_bytes()
}

/// `{"key": ..., name: flag}` answering a write.
pub fn key_flag(key: &[u8], name: &str, flag: bool) -> Vec<u8> {
    let mut object = Map::new();
    put_bytes(&mut object, "key", key);
    object.insert(name.to_string(), flag.into());
    Value::Object(object).to_string().into_bytes()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    #[serde(default)]
    compare: Vec<Map<String, Value>>,
    #[serde(default)]
    success: Vec<Map<String, Value>>,
    #[serde(default)]
    failure: Vec<Map<String, Value>>,
}

/// A transaction body: conditions and the two branches, as kv's `Txn` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnSpec {
    /// Every condition must hold for `success` to run.
    pub compare: Vec<Compare>,
    /// Ops when every condition holds.
    pub success: Vec<Op>,
    /// Ops otherwise.
    pub failure: Vec<Op>,
}

fn string_field<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match object.get(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("missing `{name}`")),
    }
}

fn check_fields(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(format!("unknown field `{extra}`")),
        None => Ok(()),
    }
}

fn required_key(object: &Map<String, Value>) -> Result<Vec<u8>, String> {
    take_bytes(object, "key")?.ok_or_else(|| "missing `key`".into())
}

fn compare_of(object: &Map<String, Value>) -> Result<Compare, String> {
    check_fields(
        object,
        &["key", "key_base64", "op", "value", "value_base64"],
    )?;
    let op = match string_field(object, "op")? {
        "eq" => CompareOp::Eq,
        "ne" => CompareOp::NotEq,
        "exists" => CompareOp::Exists,
        "absent" => CompareOp::Absent,
        "lt" => CompareOp::Lt,
        "gt" => CompareOp::Gt,
        other => {
            return Err(format!(
                "unknown compare op `{other}` (eq, ne, exists, absent, lt, gt)"
            ));
        }
    };
    let value = take_bytes(object, "value")?;
    let value = match op {
        CompareOp::Exists | CompareOp::Absent => value.unwrap_or_default(),
        _ => value.ok_or("missing `value`")?,
    };
    Ok(Compare {
        key: required_key(object)?,
        op,
        value,
    })
}

fn op_of(object: &Map<String, Value>) -> Result<Op, String> {
    check_fields(
        object,
        &["key", "key_base64", "op", "value", "value_base64"],
    )?;
    let key = required_key(object)?;
    let value = take_bytes(object, "value")?;
    match (string_field(object, "op")?, value) {
        ("put", Some(value)) => Ok(Op::Put { key, value }),
        ("put", None) => Err("a put needs `value`".into()),
        ("delete", None) => Ok(Op::Delete { key }),
        ("get", None) => Ok(Op::Get { key }),
        ("delete" | "get", Some(_)) => Err("only a put takes `value`".into()),
        (other, _) => Err(format!("unknown op `{other}` (put, delete, get)")),
    }
}

/// The transaction of a `POST /txn` body.
///
/// # Errors
/// The message for a 400.
pub fn txn(body: &[u8]) -> Result<TxnSpec, String> {
    let parsed: TxnBody =
        serde_json::from_slice(body).map_err(|e| format!("bad transaction: {e}"))?;
    let ops = |list: &[Map<String, Value>], what: &str| -> Result<Vec<Op>, String> {
        list.iter()
            .enumerate()
            .map(|(i, o)| op_of(o).map_err(|e| format!("{what}[{i}]: {e}")))
            .collect()
    };
    Ok(TxnSpec {
        compare: parsed
            .compare
            .iter()
            .enumerate()
            .map(|(i, c)| compare_of(c).map_err(|e| format!("compare[{i}]: {e}")))
            .collect::<Result<_, _>>()?,
        success: ops(&parsed.success, "success")?,
        failure: ops(&parsed.failure, "failure")?,
    })
}

/// `{"succeeded": ..., "results": [...]}` of a transaction that ran.
pub fn txn_result(succeeded: bool, results: &[OpResult]) -> Vec<u8> {
    let results: Vec<Value> = results
        .iter()
        .map(|result| {
            let mut object = Map::new();
            match result {
                OpResult::Done => {
                    object.insert("done".into(), true.into());
                }
                OpResult::Value(Some(value)) => put_bytes(&mut object, "value", value),
                OpResult::Value(None) => {
                    object.insert("value".into(), Value::Null);
                }
                other => {
                    object.insert("result".into(), format!("{other:?}").into());
                }
            }
            Value::Object(object)
        })
        .collect();
    json!({ "succeeded": succeeded, "results": results })
        .to_string()
        .into_bytes()
}

/// The cluster as `local` (this node) and, when it is not the leader, `leader` (the
/// leader's own status) see it; each member with what is known of it, `null` where
/// neither node knows.
pub fn cluster_status(local: &Status, leader: Option<&Status>, http_addr: Option<&str>) -> Value {
    let leader_view = leader.or((local.leader_id == local.node_id).then_some(local));
    let members: Vec<Value> = local
        .members
        .iter()
        .map(|member| {
            let own = [Some(local), leader_view]
                .into_iter()
                .flatten()
                .find(|s| s.node_id == member.id);
            let tracked = leader_view.and_then(|l| l.members.iter().find(|m| m.id == member.id));
            let match_index = tracked.map(|m| {
                if Some(member.id) == leader_view.map(|l| l.node_id) {
                    leader_view.map_or(m.match_index, |l| l.last_index)
                } else {
                    m.match_index
                }
            });
            let lag = match (leader_view, match_index) {
                (Some(l), Some(m)) => Some(l.last_index.saturating_sub(m)),
                _ => None,
            };
            let role = match own {
                Some(status) => status.role.name(),
                None if member.id == local.leader_id => "leader",
                None if member.voter => "follower",
                None => "learner",
            };
            json!({
                "id": member.id,
                "voter": member.voter,
                "peer_addr": member.peer_addr,
                "client_addr": member.client_addr,
                "http_addr": if member.id == local.node_id { http_addr } else { None },
                "role": role,
                "term": own.map(|s| s.term),
                "commit_index": own.map(|s| s.commit_index),
                "applied_index": own.map(|s| s.applied_index),
                "match_index": match_index,
                "lag": lag,
            })
        })
        .collect();
    json!({
        "node_id": local.node_id,
        "leader_id": if local.leader_id == NO_NODE { None } else { Some(local.leader_id) },
        "term": local.term,
        "role": local.role.name(),
        "commit_index": local.commit_index,
        "applied_index": local.applied_index,
        "last_index": local.last_index,
        "members": members,
    })
}

#[cfg(test)]
mod tests {
    //! Goal: bytes survive the JSON forms both ways, bad bodies are refused with a
    //! message, and the status merges the leader's view into the local one.
    use super::*;
    use crate::codec::client::{Member, Role};

    #[test]
    fn values_round_trip_as_text_or_base64() {
        let cases: [&[u8]; 3] = [b"RaftKV", b"", b"\xff\x00\xfe"];
        for (i, value) in cases.iter().enumerate() {
            let body = key_value(b"k", value);
            let parsed: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(parsed["key"], "k", "#{i}");
            let field = if std::str::from_utf8(value).is_ok() {
                "value"
            } else {
                "value_base64"
            };
            let mut object = Map::new();
            object.insert(field.into(), parsed[field].clone());
            let back = put_value(Value::Object(object).to_string().as_bytes());
            assert_eq!(back.as_deref(), Ok(*value), "#{i}");
        }
    }

    #[test]
    fn bad_bodies_are_refused() {
        let cases: [&[u8]; 6] = [
            b"not json",
            b"[1]",
            b"{}",
            b"{\"value\": 1}",
            b"{\"value\": \"a\", \"value_base64\": \"YQ==\"}",
            b"{\"value_base64\": \"!!\"}",
        ];
        for (i, body) in cases.iter().enumerate() {
            assert!(put_value(body).is_err(), "#{i}");
        }
        let txns: [&[u8]; 5] = [
            b"{\"compare\": [{\"key\": \"a\", \"op\": \"eq\"}]}",
            b"{\"compare\": [{\"key\": \"a\", \"op\": \"like\", \"value\": \"x\"}]}",
            b"{\"success\": [{\"op\": \"put\", \"key\": \"a\"}]}",
            b"{\"success\": [{\"op\": \"get\", \"key\": \"a\", \"value\": \"x\"}]}",
            b"{\"then\": []}",
        ];
        for (i, body) in txns.iter().enumerate() {
            assert!(txn(body).is_err(), "txn #{i}");
        }
    }

    #[test]
    fn a_txn_maps_onto_kv_ops() {
        let body = br#"{"compare": [{"key": "a", "op": "eq", "value": "1"},
                                   {"key_base64": "/w==", "op": "absent"}],
                        "success": [{"op": "put", "key": "a", "value": "2"}],
                        "failure": [{"op": "get", "key": "a"}, {"op": "delete", "key": "b"}]}"#;
        let spec = txn(body).expect("valid");
        assert_eq!(spec.compare.len(), 2);
        assert_eq!(spec.compare[0].op, CompareOp::Eq);
        assert_eq!(spec.compare[1].key, vec![0xff]);
        assert_eq!(
            spec.success,
            vec![Op::Put {
                key: b"a".to_vec(),
                value: b"2".to_vec()
            }]
        );
        assert_eq!(spec.failure[1], Op::Delete { key: b"b".to_vec() });
    }

    fn status(node_id: u64, role: Role, leader_id: u64, matches: [u64; 3]) -> Status {
        Status {
            node_id,
            role,
            term: 4,
            leader_id,
            commit_index: 10,
            applied_index: 9,
            last_index: 12,
            config_index: 0,
            promote_distance_max: 0,
            members: (1..=3)
                .map(|id| Member {
                    id,
                    voter: true,
                    peer_addr: format!("127.0.0.1:{id}"),
                    client_addr: String::new(),
                    match_index: matches[id as usize - 1],
                })
                .collect(),
        }
    }

    #[test]
    fn status_merges_the_leader_view() {
        let local = status(1, Role::Follower, 2, [0, 0, 0]);
        let leader = status(2, Role::Leader, 2, [12, 0, 7]);
        let view = cluster_status(&local, Some(&leader), Some("127.0.0.1:9"));
        let members = view["members"].as_array().expect("members");
        assert_eq!(view["leader_id"], 2);
        assert_eq!(members[0]["role"], "follower");
        assert_eq!(members[0]["http_addr"], "127.0.0.1:9");
        assert_eq!(members[1]["role"], "leader");
        assert_eq!(members[1]["lag"], 0);
        assert_eq!(members[2]["role"], "follower");
        assert_eq!(members[2]["lag"], 5);
        assert_eq!(members[2]["commit_index"], Value::Null);
        let alone = cluster_status(&status(1, Role::Candidate, 0, [0; 3]), None, None);
        assert_eq!(alone["leader_id"], Value::Null);
        assert_eq!(alone["members"][2]["lag"], Value::Null);
    }
}
