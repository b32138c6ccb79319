//! RespCodec: the RESP2/RESP3 wire format of Redis, the first layer of the Redis chain
//! (bytes <-> commands), followed by `server::redis` (commands <-> kv requests).
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or inline
//! commands (`PING\r\n`, words split on spaces) as typed into telnet. Replies are
//! [`RespValue`]s: simple strings, errors, integers, bulk strings and arrays (each with
//! a null form), and the RESP3 types whose RESP2 form differs: maps, sets and verbatim
//! strings. [`RespValue::encode_as`] writes a reply in the connection's [`Protocol`]
//! (chosen by `HELLO`): in RESP2 a map is a flat array of keys and values, a set an
//! array, a verbatim string a bulk string, and nulls are `$-1` / `*-1`; in RESP3 every
//! null is `_`.
//!
//! Invariant: decoding never panics and never holds more than `command_bytes_max` bytes
//! for one command: a bad type byte, a negative or oversized length, a bulk string over
//! the limit or a missing CRLF is a [`DecodeError`] (the caller replies an error and
//! closes); allocation grows only with bytes actually received.

use crate::wire::DecodeError;

/// The longest line (a length header or an inline command) accepted.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// The most elements of one command array (Redis uses the same bound).
const ARRAY_LEN_MAX: u64 = 1024 * 1024;

/// The reply protocol of a connection: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, what every client speaks first.
    #[default]
    Resp2,
    /// RESP3 (`HELLO 3`).
    Resp3,
}

impl Protocol {
    /// The version number `HELLO` and `CLIENT LIST` show.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+text` (must not contain CR or LF).
    Simple(String),
    /// `-text`, the text starting with an error code such as `ERR`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len bytes` or `$-1` for `None`.
    Bulk(Option<Vec<u8>>),
    /// `*count values` or `*-1` for `None`.
    Array(Option<Vec<RespValue>>),
    /// RESP3 `%count key value ...`; RESP2: a flat array.
    Map(Vec<(RespValue, RespValue)>),
    /// RESP3 `~count values`; RESP2: an array.
    Set(Vec<RespValue>),
    /// RESP3 `=len txt:text` (INFO, CLIENT LIST); RESP2: a bulk string.
    Verbatim(String),
    /// RESP3 `>count values`, an out-of-band push (pub/sub messages and subscription
    /// confirmations); RESP2: an array.
    Push(Vec<RespValue>),
    /// Several replies to one command, written one after the other (SUBSCRIBE of many
    /// channels confirms each one); empty: nothing is written.
    Replies(Vec<RespValue>),
}

impl RespValue {
    /// `+OK`.
    pub fn ok() -> RespValue {
        RespValue::Simple("OK".into())
    }

    /// An error reply; `text` starts with the code (`ERR ...`, `TRYAGAIN ...`).
    pub fn error(text: impl Into<String>) -> RespValue {
        RespValue::Error(text.into())
    }

    /// A bulk string of `text`.
    pub fn bulk(text: impl AsRef<[u8]>) -> RespValue {
        RespValue::Bulk(Some(text.as_ref().to_vec()))
    }

    /// Appends the RESP2 wire form to `out` (see [`RespValue::encode_as`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(Protocol::Resp2, out);
    }

    /// Appends the wire form in `protocol` to `out`. CR and LF inside simple strings and
    /// errors are replaced by spaces so a reply can never break the framing.
    pub fn encode_as(&self, protocol: Protocol, out: &mut Vec<u8>) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            RespValue::Bulk(None) | RespValue::Array(None) if resp3 => {
                out.extend_from_slice(b"_\r\n");
            }
            RespValue::Map(pairs) => {
                let (kind, count) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', 2 * pairs.len())
                };
                put_header(out, kind, count);
                for (key, value) in pairs {
                    key.encode_as(protocol, out);
                    value.encode_as(protocol, out);
                }
            }
            RespValue::Set(values) | RespValue::Push(values) => {
                let kind = match self {
                    RespValue::Set(_) if resp3 => b'~',
                    RespValue::Push(_) if resp3 => b'>',
                    _ => b'*',
                };
                put_header(out, kind, values.len());
                for value in values {
                    value.encode_as(protocol, out);
                }
            }
            RespValue::Replies(values) => {
                for value in values {
                    value.encode_as(protocol, out);
                }
            }
            RespValue::Verbatim(text) if resp3 => {
                put_header(out, b'=', text.len() + 4);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            RespValue::Verbatim(text) => {
                put_header(out, b'$', text.len());
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            RespValue::Simple(text) => put_line(out, b'+', text),
            RespValue::Error(text) => put_line(out, b'-', text),
            RespValue::Integer(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            RespValue::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            RespValue::Bulk(Some(bytes)) => {
                out.push(b'$');
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            RespValue::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            RespValue::Array(Some(values)) => {
                put_header(out, b'*', values.len());
                for value in values {
                    value.encode_as(protocol, out);
                }
            }
        }
    }
}

fn put_header(out: &mut Vec<u8>, kind: u8, count: usize) {
    out.push(kind);
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn put_line(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// A decoded command with the bytes it spanned, `None` when more bytes are needed.
pub type Decoded = Result<Option<(usize, Vec<Vec<u8>>)>, DecodeError>;

/// Cuts a byte stream into commands (lists of arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespCodec {
    /// The largest bulk string accepted.
    pub bulk_bytes_max: usize,
    /// The most bytes one command may span on the wire.
    pub command_bytes_max: usize,
}

impl RespCodec {
    /// A codec accepting commands of up to `command_bytes_max` bytes (bulk strings too).
    pub fn new(command_bytes_max: usize) -> RespCodec {
        RespCodec {
            bulk_bytes_max: command_bytes_max,
            command_bytes_max,
        }
    }

    /// Decodes the next command from `input`: `Ok(Some((consumed, args)))`, or
    /// `Ok(None)` when more bytes are needed. An empty `args` (`*0`, a blank inline
    /// line) is a command to skip.
    ///
    /// # Errors
    /// [`DecodeError`] for malformed or oversized input: reply an error and close.
    pub fn decode(&self, input: &[u8]) -> Decoded {
        let result = match input.first() {
            None => return Ok(None),
            Some(b'*') => self.decode_array(input),
            Some(_) => decode_inline(input),
        };
        match result {
            Ok(None) if input.len() > self.command_bytes_max => Err(DecodeError::TooLarge {
                len: input.len() as u64,
                max: self.command_bytes_max as u64,
            }),
            other => other,
        }
    }

    fn decode_array(&self, input: &[u8]) -> Decoded {
        let Some((count, mut at)) = read_length(input, 1)? else {
            return Ok(None);
        };
        if count <= 0 {
            return Ok(Some((at, Vec::new())));
        }
        let count = count as u64;
        if count > ARRAY_LEN_MAX {
            return Err(DecodeError::TooLarge {
                len: count,
                max: ARRAY_LEN_MAX,
            });
        }
        let mut args = Vec::new();
        for _ in 0..count {
            let Some(&kind) = input.get(at) else {
                return Ok(None);
            };
            if kind != b'$' {
                return Err(DecodeError::UnknownType(kind));
            }
            let Some((len, body_at)) = read_length(input, at + 1)? else {
                return Ok(None);
            };
            if len < 0 {
                return Err(DecodeError::Malformed("negative bulk string length"));
            }
            let len = len as u64;
            if len > self.bulk_bytes_max as u64 {
                return Err(DecodeError::TooLarge {
                    len,
                    max: self.bulk_bytes_max as u64,
                });
            }
            let end = body_at + len as usize;
            if end > self.command_bytes_max {
                return Err(DecodeError::TooLarge {
                    len: end as u64,
                    max: self.command_bytes_max as u64,
                });
            }
            if input.len() < end + 2 {
                return Ok(None);
            }
            if &input[end..end + 2] != b"\r\n" {
                return Err(DecodeError::Malformed("bulk string not followed by CRLF"));
            }
            args.push(input[body_at..end].to_vec());
            at = end + 2;
        }
        Ok(Some((at, args)))
    }
}

/// Reads `<digits>\r\n` starting at `from`; returns the number and the index after CRLF.
fn read_length(input: &[u8], from: usize) -> Result<Option<(i64, usize)>, DecodeError> {
    let rest = input.get(from..).unwrap_or(&[]);
    let Some(cr) = rest.iter().take(32).position(|&b| b == b'\r') else {
        if rest.len() >= 32 {
            return Err(DecodeError::Malformed("length line too long"));
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err(DecodeError::Malformed("length line not ended by CRLF"));
    }
    let text = std::str::from_utf8(&rest[..cr]).map_err(|_| DecodeError::Malformed("length"))?;
    let value: i64 = text
        .parse()
        .map_err(|_| DecodeError::Malformed("length is not a number"))?;
    Ok(Some((value, from + cr + 2)))
}

fn decode_inline(input: &[u8]) -> Decoded {
    let Some(newline) = input.iter().take(LINE_BYTES_MAX).position(|&b| b == b'\n') else {
        if input.len() >= LINE_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len: input.len() as u64,
                max: LINE_BYTES_MAX as u64,
            });
        }
        return Ok(None);
    };
    let line = &input[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|word| !word.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((newline + 1, args)))
}

#[cfg(test)]
mod tests {
    //! Goal: commands decode exactly, incrementally, and bad input is an error, never a
    //! panic or an allocation beyond the input (proptest over arbitrary bytes).
    use super::*;
    use crate::wire::alloc_probe::{BYTES_PER_INPUT_BYTE_MAX, assert_bounded};
    use proptest::prelude::*;

    /// The argument list's first growth reserves four entries, whatever the input.
    const SLACK: usize = 4 * std::mem::size_of::<Vec<u8>>() + 32;

    fn codec() -> RespCodec {
        RespCodec::new(1024)
    }

    fn encode_command(args: &[Vec<u8>]) -> Vec<u8> {
        let value = RespValue::Array(Some(
            args.iter()
                .map(|a| RespValue::Bulk(Some(a.clone())))
                .collect(),
        ));
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    #[test]
    fn decodes_arrays_and_inline_commands() {
        type Want<'a> = Option<(usize, Vec<&'a [u8]>)>;
        let cases: Vec<(&[u8], Want)> = vec![
            (b"*1\r\n$4\r\nPING\r\n", Some((14, vec![b"PING"]))),
            (
                b"*2\r\n$3\r\nGET\r\n$0\r\n\r\nrest",
                Some((19, vec![b"GET", b""])),
            ),
            (b"PING\r\n", Some((6, vec![b"PING"]))),
            (b"set  a b\n", Some((9, vec![b"set", b"a", b"b"]))),
            (b"*0\r\n", Some((4, vec![]))),
            (b"*2\r\n$3\r\nGET\r\n", None),
            (b"*2\r\n$3\r\nGE", None),
            (b"*1", None),
            (b"PIN", None),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            let got = codec().decode(input).unwrap();
            let want = want.map(|(n, args)| (n, args.into_iter().map(<[u8]>::to_vec).collect()));
            assert_eq!(got, want, "#{i}");
        }
    }

    #[test]
    fn malformed_and_oversized_input_is_an_error() {
        let cases: Vec<&[u8]> = vec![
            b"*1\r\n+PING\r\n",    // bad type byte inside an array
            b"*1\r\n$-1\r\n",      // negative bulk length
            b"*1\r\n$2000\r\n",    // bulk over the limit
            b"*99999999999\r\n",   // array count over the limit
            b"*x\r\n",             // not a number
            b"*1\r\n$1\r\nab\r\n", // bulk without its CRLF
            b"*1\r\n$9999999999999999999999999999999999999999", // length line too long
        ];
        for (i, input) in cases.into_iter().enumerate() {
            assert!(codec().decode(input).is_err(), "#{i}: {input:?}");
        }
        let partial = [b"*1\r\n$1000\r\n".as_slice(), &[b'a'; 1100]].concat();
        assert!(
            codec().decode(&partial).is_err(),
            "a command longer than the limit"
        );
    }

    #[test]
    fn replies_encode_as_resp2() {
        let mut out = Vec::new();
        RespValue::Array(Some(vec![
            RespValue::ok(),
            RespValue::error("ERR bad\r\nthing"),
            RespValue::Integer(-3),
            RespValue::Bulk(None),
            RespValue::Bulk(Some(b"hi".to_vec())),
            RespValue::Array(None),
        ]))
        .encode(&mut out);
        assert_eq!(
            out,
            b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$-1\r\n$2\r\nhi\r\n*-1\r\n".to_vec()
        );
    }

    /// Goal: the RESP3 types, and nulls, encode per protocol as redis-server writes
    /// them (RESP2: flat arrays and `$-1`; RESP3: `%`, `~`, `=` and `_`).
    #[test]
    fn replies_encode_per_protocol() {
        let value = RespValue::Array(Some(vec![
            RespValue::Map(vec![(RespValue::bulk("a"), RespValue::Integer(1))]),
            RespValue::Set(vec![RespValue::bulk("s")]),
            RespValue::Verbatim("x:1".into()),
            RespValue::Bulk(None),
            RespValue::Array(None),
        ]));
        let cases: [(Protocol, &[u8]); 2] = [
            (
                Protocol::Resp2,
                b"*5\r\n*2\r\n$1\r\na\r\n:1\r\n*1\r\n$1\r\ns\r\n$3\r\nx:1\r\n$-1\r\n*-1\r\n",
            ),
            (
                Protocol::Resp3,
                b"*5\r\n%1\r\n$1\r\na\r\n:1\r\n~1\r\n$1\r\ns\r\n=7\r\ntxt:x:1\r\n_\r\n_\r\n",
            ),
        ];
        for (i, (protocol, want)) in cases.into_iter().enumerate() {
            let mut out = Vec::new();
            value.encode_as(protocol, &mut out);
            assert_eq!(out, want.to_vec(), "#{i}: {protocol:?}");
        }
    }

    /// Goal: pushes are `>` in RESP3 and arrays in RESP2, and several replies are
    /// written back to back. Method: encode one of each in both protocols.
    #[test]
    fn pushes_and_reply_sequences_encode_per_protocol() {
        let push = |name: &str| RespValue::Push(vec![RespValue::bulk(name), RespValue::Integer(1)]);
        let value = RespValue::Replies(vec![push("a"), push("b")]);
        let cases: [(Protocol, &[u8]); 2] = [
            (
                Protocol::Resp2,
                b"*2\r\n$1\r\na\r\n:1\r\n*2\r\n$1\r\nb\r\n:1\r\n",
            ),
            (
                Protocol::Resp3,
                b">2\r\n$1\r\na\r\n:1\r\n>2\r\n$1\r\nb\r\n:1\r\n",
            ),
        ];
        for (i, (protocol, want)) in cases.into_iter().enumerate() {
            let mut out = Vec::new();
            value.encode_as(protocol, &mut out);
            assert_eq!(out, want.to_vec(), "#{i}: {protocol:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let decode = |b: &[u8]| codec().decode(b);
            let decoded = assert_bounded(&input, BYTES_PER_INPUT_BYTE_MAX, SLACK, decode);
            if let Ok(Some((consumed, args))) = decoded {
                prop_assert!(consumed <= input.len());
                prop_assert!(args.iter().map(Vec::len).sum::<usize>() <= input.len());
            }
        }

        /// Arrays whose announced element count and bulk lengths are hostile, and
        /// inline commands of many tiny words: decoded or refused within the bound.
        #[test]
        fn hostile_lengths_allocate_within_the_input(
            count in any::<i64>(),
            len in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            words in 0usize..400,
        ) {
            let mut input = format!("*{count}\r\n$0\r\n\r\n${len}\r\n").into_bytes();
            input.extend_from_slice(&body);
            let decode = |b: &[u8]| codec().decode(b).is_ok();
            assert_bounded(&input, BYTES_PER_INPUT_BYTE_MAX, SLACK, decode);
            let mut array = format!("*{words}\r\n").into_bytes();
            for _ in 0..words {
                array.extend_from_slice(b"$0\r\n\r\n");
            }
            let large = |b: &[u8]| RespCodec::new(1 << 20).decode(b).is_ok();
            assert_bounded(&array, BYTES_PER_INPUT_BYTE_MAX, SLACK, large);
            let inline = "a ".repeat(words).into_bytes();
            let mut line = inline;
            line.push(b'\n');
            assert_bounded(&line, BYTES_PER_INPUT_BYTE_MAX, SLACK, decode);
        }

        #[test]
        fn commands_round_trip_at_every_split(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
            cut in 0usize..200,
        ) {
            let wire = encode_command(&args);
            let cut = cut.min(wire.len() - 1);
            prop_assert_eq!(codec().decode(&wire[..cut]).unwrap(), None);
            prop_assert_eq!(codec().decode(&wire).unwrap(), Some((wire.len(), args)));
        }
    }
}
