//! Binary-safe values and range reads for raftkv-cli: `put KEY -` reads the value from
//! stdin (every byte, no trimming), `--hex` reads and writes values (and range keys) as
//! hexadecimal, `get --raw` writes the value's bytes unchanged with no newline, and
//! `range` prints `key` / `value` lines (etcd's `get --prefix` layout), keys only, or a
//! count.
//!
//! Invariant: without `--hex` or `--raw`, output is the bytes followed by a newline, as
//! `get` always printed; with `--raw` nothing is added or changed.

use std::io::{Read, Write};

use raftkv::client::{Client, Error};
use raftkv::kv::{RangeQuery, prefix_end};

/// How a value is written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The bytes and a newline.
    Line,
    /// The bytes unchanged (`--raw`).
    Raw,
    /// Lowercase hexadecimal and a newline (`--hex`).
    Hex,
}

impl Output {
    /// The output chosen by `--raw` / `--hex` (clap keeps them exclusive).
    pub fn of(raw: bool, hex: bool) -> Output {
        match (raw, hex) {
            (true, _) => Output::Raw,
            (_, true) => Output::Hex,
            _ => Output::Line,
        }
    }

    /// Writes `bytes` to stdout; returns the exit code ([`write_stdout`]).
    pub fn print(self, bytes: &[u8]) -> u8 {
        match self {
            Output::Raw => write_stdout(&[bytes]),
            Output::Line => write_stdout(&[bytes, b"\n"]),
            Output::Hex => write_stdout(&[hex_encode(bytes).as_bytes(), b"\n"]),
        }
    }
}

/// Writes `parts` to stdout and flushes it; returns the exit code: 0 when written, or
/// when stdout is a closed pipe (`| head` is not an error of the request); any other
/// failure (a full disk under `> file`) is reported on stderr and exits 5.
pub fn write_stdout(parts: &[&[u8]]) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let written = parts
        .iter()
        .try_for_each(|part| stdout.write_all(part))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("raftkv-cli: writing to stdout: {e}");
            super::EXIT_OTHER
        }
    }
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hexadecimal `text` (surrounding whitespace ignored).
///
/// # Errors
/// An odd length or a character that is not a hex digit.
pub fn hex_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = text.trim_ascii();
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex value has an odd length ({})", text.len()));
    }
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("{:?} is not a hex digit", c as char))
    };
    text.chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The value argument of `put`: `-` reads stdin to its end; `hex` decodes it.
///
/// # Errors
/// stdin cannot be read, or the hex does not decode.
pub fn read_value(arg: &str, hex: bool) -> Result<Vec<u8>, String> {
    let raw = if arg == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
        bytes
    } else {
        arg.as_bytes().to_vec()
    };
    if hex { hex_decode(&raw) } else { Ok(raw) }
}

/// What `range` was asked.
#[derive(Debug, Clone, Default)]
pub struct RangeArgs {
    /// START (inclusive) and END (exclusive; absent: to the last key).
    pub start: Option<String>,
    /// The end.
    pub end: Option<String>,
    /// The keys starting with this (instead of START END).
    pub prefix: Option<String>,
    /// At most this many keys (0: all).
    pub limit: u64,
    /// Keys only.
    pub keys_only: bool,
    /// Only the number of keys.
    pub count: bool,
    /// Read from whichever member answers.
    pub stale: bool,
    /// Keys and values in hexadecimal (START, END and PREFIX too).
    pub hex: bool,
}

/// Runs `range`; returns the exit code, or the error.
///
/// # Errors
/// A request failed (see [`Error`]); a malformed hex bound is `Error::Invalid`.
pub fn range(client: &mut Client, args: &RangeArgs) -> Result<u8, Error> {
    let bound = |text: &Option<String>| -> Result<Option<Vec<u8>>, Error> {
        text.as_ref()
            .map(|t| {
                if args.hex {
                    hex_decode(t.as_bytes()).map_err(Error::Invalid)
                } else {
                    Ok(t.as_bytes().to_vec())
                }
            })
            .transpose()
    };
    let mut query = match bound(&args.prefix)? {
        Some(prefix) => RangeQuery {
            end: prefix_end(&prefix),
            start: prefix,
            ..RangeQuery::default()
        },
        None => RangeQuery {
            start: bound(&args.start)?.unwrap_or_default(),
            end: bound(&args.end)?,
            ..RangeQuery::default()
        },
    };
    query.limit = args.limit;
    query.keys_only = args.keys_only;
    query.count_only = args.count;
    let result = client.range(&query, args.stale)?;
    let output = if args.hex { Output::Hex } else { Output::Line };
    if args.count {
        return Ok(Output::Line.print(result.count.to_string().as_bytes()));
    }
    for (key, value) in &result.entries {
        let mut code = output.print(key);
        if code == 0 && !args.keys_only {
            code = output.print(value);
        }
        if code != 0 {
            return Ok(code);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    //! Goal: hex round-trips every byte and refuses what is not hex.
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_bad_digits() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(hex_encode(&all).as_bytes()), Ok(all));
        assert_eq!(hex_decode(b" 00ff\n"), Ok(vec![0, 255]));
        assert!(hex_decode(b"abc").is_err());
        assert!(hex_decode(b"zz").is_err());
    }
}
