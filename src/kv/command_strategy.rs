use proptest::prelude::*;

use super::*;

/// Short byte strings, so that collisions between keys happen.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0u8..4, 0..4)
}

pub(crate) fn session() -> impl Strategy<Value = Session> {
    (any::<u64>(), any::<u64>()).prop_map(|(client_id, seq)| Session { client_id, seq })
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (bytes(), bytes()).prop_map(|(key, value)| Op::Put { key, value }),
        bytes().prop_map(|key| Op::Delete { key }),
        bytes().prop_map(|key| Op::Get { key }),
        rmw().prop_map(Op::Rmw),
    ]
}

/// Values that are integers and floats often, so applying them mostly succeeds.
fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (-3i64..3).prop_map(|n| n.to_string().into_bytes()),
        Just(b"1.5".to_vec()),
        bytes(),
    ]
}

pub(crate) fn rmw() -> impl Strategy<Value = RmwOp> {
    let condition = (1u8..=3).prop_map(|b| SetCondition::from_u8(b).expect("valid byte"));
    let pairs = proptest::collection::vec((bytes(), number()), 0..3);
    prop_oneof![
        (bytes(), prop_oneof![Just(i64::MAX), -2i64..2])
            .prop_map(|(key, delta)| RmwOp::IncrBy { key, delta }),
        (bytes(), number()).prop_map(|(key, increment)| RmwOp::IncrByFloat { key, increment }),
        (bytes(), number()).prop_map(|(key, value)| RmwOp::Append { key, value }),
        (bytes(), number(), condition, any::<bool>(), set_expiry()).prop_map(
            |(key, value, condition, get, expiry)| RmwOp::Set {
                key,
                value,
                condition,
                get,
                expiry,
            }
        ),
        bytes().prop_map(|key| RmwOp::GetDel { key }),
        pairs.prop_map(|pairs| RmwOp::SetIfAllAbsent { pairs }),
        proptest::collection::vec(bytes(), 0..3).prop_map(|keys| RmwOp::DeleteMany { keys }),
        (bytes(), bytes(), any::<bool>()).prop_map(|(from, to, only_if_absent)| RmwOp::Rename {
            from,
            to,
            only_if_absent
        }),
        (bytes(), bytes(), any::<bool>()).prop_map(|(from, to, replace)| RmwOp::Copy {
            from,
            to,
            replace
        }),
        Just(RmwOp::FlushAll),
    ]
}

fn deadline() -> impl Strategy<Value = Deadline> {
    prop_oneof![
        any::<u64>().prop_map(Deadline::At),
        any::<u64>().prop_map(Deadline::After),
    ]
}

fn set_expiry() -> impl Strategy<Value = SetExpiry> {
    prop_oneof![
        Just(SetExpiry::Clear),
        Just(SetExpiry::Keep),
        deadline().prop_map(SetExpiry::At),
    ]
}

/// The ops on expiry times (their effect on values depends on times a value-only model
/// does not hold, so they are tested by encoding here and by `kv::expiry` tests).
pub(crate) fn expiry_rmw() -> impl Strategy<Value = RmwOp> {
    let condition = (1u8..=6).prop_map(|b| ExpireCondition::from_u8(b).expect("valid byte"));
    prop_oneof![
        (bytes(), deadline(), condition).prop_map(|(key, at, condition)| RmwOp::Expire {
            key,
            at,
            condition
        }),
        bytes().prop_map(|key| RmwOp::Persist { key }),
        (bytes(), set_expiry()).prop_map(|(key, expiry)| RmwOp::GetEx { key, expiry }),
    ]
}

fn value_error() -> impl Strategy<Value = ValueError> {
    (1u8..=5).prop_map(|b| ValueError::from_u8(b).expect("valid byte"))
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    (1u8..=6).prop_map(|byte| CompareOp::from_u8(byte).expect("valid op byte"))
}

pub(crate) fn command() -> impl Strategy<Value = Command> {
    let compare =
        (bytes(), compare_op(), bytes()).prop_map(|(key, op, value)| Compare { key, op, value });
    let ops = || proptest::collection::vec(op(), 0..4);
    prop_oneof![
        bytes().prop_map(|key| Command::Get { key }),
        (session(), bytes(), bytes()).prop_map(|(session, key, value)| Command::Put {
            session,
            key,
            value
        }),
        (session(), bytes()).prop_map(|(session, key)| Command::Delete { session, key }),
        (session(), bytes(), proptest::option::of(bytes()), bytes()).prop_map(
            |(session, key, expected, new)| Command::Cas {
                session,
                key,
                expected,
                new
            }
        ),
        (
            session(),
            proptest::collection::vec(compare, 0..3),
            ops(),
            ops()
        )
            .prop_map(|(session, compare, success, failure)| Command::Txn {
                session,
                compare,
                success,
                failure
            }),
        Just(Command::RegisterSession),
        (session(), rmw()).prop_map(|(session, op)| Command::Rmw { session, op }),
        (session(), bytes(), bytes()).prop_map(|(session, channel, message)| {
            Command::Publish {
                session,
                channel,
                message,
            }
        }),
    ]
}

/// A command with a time: a stamped one (`At`) or the leader's `DeleteExpired`.
pub(crate) fn timed_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (any::<u64>(), command(), session(), expiry_rmw()).prop_map(
            |(now_ms, command, session, op)| {
                let command = if now_ms % 2 == 0 {
                    command
                } else {
                    Command::Rmw { session, op }
                };
                command.stamped(now_ms)
            }
        ),
        (any::<u64>(), proptest::collection::vec(bytes(), 0..3))
            .prop_map(|(now_ms, keys)| Command::DeleteExpired { now_ms, keys }),
    ]
}

pub(crate) fn result() -> impl Strategy<Value = CommandResult> {
    let op_result = prop_oneof![
        Just(OpResult::Done),
        proptest::option::of(bytes()).prop_map(OpResult::Value),
        any::<i64>().prop_map(OpResult::Integer),
        Just(OpResult::Unchanged),
        value_error().prop_map(OpResult::Rejected),
    ];
    prop_oneof![
        Just(CommandResult::Ok),
        proptest::option::of(bytes()).prop_map(CommandResult::Value),
        Just(CommandResult::NotFound),
        proptest::option::of(bytes()).prop_map(|current| CommandResult::CasFailed { current }),
        (any::<bool>(), proptest::collection::vec(op_result, 0..4))
            .prop_map(|(succeeded, results)| CommandResult::Txn { succeeded, results }),
        any::<u64>().prop_map(|client_id| CommandResult::Registered { client_id }),
        Just(CommandResult::SessionExpired),
        Just(CommandResult::StaleSequence),
        ".{0,8}".prop_map(CommandResult::Error),
        any::<i64>().prop_map(CommandResult::Integer),
        Just(CommandResult::Unchanged),
        value_error().prop_map(CommandResult::Rejected),
    ]
}
