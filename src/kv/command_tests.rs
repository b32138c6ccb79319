use proptest::prelude::*;

use super::*;
use crate::wire::alloc_probe::{BYTES_PER_INPUT_BYTE_MAX, assert_bounded};

proptest! {
    #[test]
    fn command_round_trips(command in strategy::command()) {
        let bytes = command_to_vec(&command);
        prop_assert_eq!(decode_command(&bytes), Ok(command));
        // Every strict prefix is an error (truncation is detected).
        for cut in 0..bytes.len() {
            prop_assert!(decode_command(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn borrowed_decoding_agrees_with_owned_decoding(command in strategy::command()) {
        let bytes = command_to_vec(&command);
        let borrowed = match decode_command_ref(&bytes) {
            Ok(CommandRef::Put { session, key, value }) => Command::Put {
                session,
                key: key.to_vec(),
                value: value.to_vec(),
            },
            Ok(CommandRef::Delete { session, key }) => Command::Delete {
                session,
                key: key.to_vec(),
            },
            Ok(CommandRef::Owned(owned)) => owned,
            Err(error) => return Err(TestCaseError::fail(format!("{error}"))),
        };
        prop_assert_eq!(borrowed, command);
        for cut in 0..bytes.len() {
            prop_assert_eq!(
                decode_command_ref(&bytes[..cut]).is_err(),
                decode_command(&bytes[..cut]).is_err()
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        prop_assert!(decode_command_ref(&trailing).is_err());
    }

    /// Goal: the expiry ops (tags 11 to 14) round-trip, detect truncation, and have the
    /// length `encoded_len` says.
    /// Goal: stamped commands and the sessionless `DeleteExpired` round-trip, detect
    /// truncation, and have the length `encoded_len` says.
    #[test]
    fn timed_commands_round_trip(command in strategy::timed_command()) {
        let bytes = command_to_vec(&command);
        prop_assert_eq!(encoded_len(&command), bytes.len());
        prop_assert_eq!(decode_command(&bytes), Ok(command));
        for cut in 0..bytes.len() {
            prop_assert!(decode_command(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn expiry_ops_round_trip(session in strategy::session(), op in strategy::expiry_rmw()) {
        let command = Command::Rmw { session, op };
        let bytes = command_to_vec(&command);
        prop_assert_eq!(encoded_len(&command), bytes.len());
        prop_assert_eq!(decode_command(&bytes), Ok(command));
        for cut in 0..bytes.len() {
            prop_assert!(decode_command(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding(command in strategy::command()) {
        prop_assert_eq!(encoded_len(&command), command_to_vec(&command).len());
    }

    #[test]
    fn result_round_trips(result in strategy::result()) {
        let mut bytes = Vec::new();
        encode_result(&result, &mut bytes);
        prop_assert_eq!(decode_result(&bytes), Ok(result));
    }

    /// A valid version and type byte, a hostile list count (Txn compares, ops,
    /// results) or byte-string length, and a few bytes: refused or decoded within
    /// the allocation bound.
    #[test]
    fn hostile_counts_allocate_within_the_input(
        kind in 1u8..=12,
        prefix in proptest::collection::vec(any::<u8>(), 0..24),
        claimed in any::<u32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut bytes = vec![COMMAND_VERSION, kind];
        bytes.extend_from_slice(&prefix);
        put_u32(&mut bytes, claimed);
        bytes.extend_from_slice(&tail);
        let factor = BYTES_PER_INPUT_BYTE_MAX;
        assert_bounded(&bytes, factor, 0, |b| decode_command(b).is_ok());
        assert_bounded(&bytes, factor, 0, |b| decode_command_ref(b).is_ok());
        assert_bounded(&bytes, factor, 0, |b| decode_result(b).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        assert_bounded(&bytes, BYTES_PER_INPUT_BYTE_MAX, 0, |b| decode_command(b).is_ok());
        assert_bounded(&bytes, BYTES_PER_INPUT_BYTE_MAX, 0, |b| decode_result(b).is_ok());
        prop_assert_eq!(decode_command_ref(&bytes).is_ok(), decode_command(&bytes).is_ok());
        let _ = decode_result(&bytes);
        // With a valid version prefix the decoders reach deeper code paths.
        let mut versioned = vec![COMMAND_VERSION];
        versioned.extend_from_slice(&bytes);
        prop_assert_eq!(
            decode_command_ref(&versioned).is_ok(),
            decode_command(&versioned).is_ok()
        );
        let _ = decode_result(&versioned);
    }
}

#[test]
fn rejects_unknown_version_and_type() {
    assert!(decode_command(&[2, CMD_GET, 0, 0, 0, 0]).is_err());
    assert_eq!(decode_command(&[1, 99]), Err(DecodeError::UnknownType(99)));
    assert_eq!(decode_result(&[1, 99]), Err(DecodeError::UnknownType(99)));
    assert!(
        decode_command(&[1, CMD_REGISTER, 0]).is_err(),
        "trailing byte"
    );
}

#[test]
fn compare_ops_follow_their_documented_meaning() {
    type Case = (CompareOp, Option<&'static [u8]>, &'static [u8], bool);
    let cases: [Case; 12] = [
        (CompareOp::Eq, Some(b"a"), b"a", true),
        (CompareOp::Eq, None, b"a", false),
        (CompareOp::NotEq, None, b"a", true),
        (CompareOp::NotEq, Some(b"a"), b"a", false),
        (CompareOp::Exists, Some(b""), b"x", true),
        (CompareOp::Exists, None, b"", false),
        (CompareOp::Absent, None, b"", true),
        (CompareOp::Absent, Some(b""), b"", false),
        (CompareOp::Lt, Some(b"a"), b"b", true),
        (CompareOp::Lt, None, b"b", false),
        (CompareOp::Gt, Some(b"b"), b"a", true),
        (CompareOp::Gt, Some(b"a"), b"a", false),
    ];
    for (i, (op, current, operand, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            op.holds(current, operand),
            want,
            "#{i}: {op:?} {current:?} {operand:?}"
        );
    }
}
