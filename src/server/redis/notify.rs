//! `notify-keyspace-events`: which key events become keyspace notifications, in
//! Redis's flag letters (`K` keyspace channel, `E` keyevent channel, `g` generic, `$`
//! string, `x` expired, `A` = `g$lshzxetd`, ...), parsed and printed as redis-server
//! does (`CONFIG GET` shows the canonical form: `A` for the whole class set).
//!
//! Invariant: parsing accepts exactly Redis's letters and never panics; a parsed value
//! prints back to a string that parses to the same flags.

use crate::replica::changes::Event;

const GENERIC: u16 = 1 << 0;
const STRING: u16 = 1 << 1;
const LIST: u16 = 1 << 2;
const SET: u16 = 1 << 3;
const HASH: u16 = 1 << 4;
const ZSET: u16 = 1 << 5;
const EXPIRED: u16 = 1 << 6;
const EVICTED: u16 = 1 << 7;
const STREAM: u16 = 1 << 8;
const MODULE: u16 = 1 << 9;
const NEW: u16 = 1 << 10;
const KEY_MISS: u16 = 1 << 11;
const KEYSPACE: u16 = 1 << 12;
const KEYEVENT: u16 = 1 << 13;
/// `A`: every class but key-miss and new-key, as Redis's `NOTIFY_ALL`.
const ALL: u16 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// The letters in Redis's printing order, each with its bit (`A` is handled apart).
const CLASSES: [(char, u16); 11] = [
    ('g', GENERIC),
    ('$', STRING),
    ('l', LIST),
    ('s', SET),
    ('h', HASH),
    ('z', ZSET),
    ('x', EXPIRED),
    ('e', EVICTED),
    ('t', STREAM),
    ('d', MODULE),
    ('n', NEW),
];

/// The node's `notify-keyspace-events` setting (empty: no notifications, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyFlags(u16);

impl NotifyFlags {
    /// Parses Redis's flag letters; `None` for any other character.
    pub fn parse(text: &[u8]) -> Option<NotifyFlags> {
        let mut bits = 0;
        for &byte in text {
            bits |= match byte {
                b'A' => ALL,
                b'm' => KEY_MISS,
                b'K' => KEYSPACE,
                b'E' => KEYEVENT,
                other => CLASSES.iter().find(|(c, _)| *c as u8 == other)?.1,
            };
        }
        Some(NotifyFlags(bits))
    }

    /// Which channels an event goes to: (`__keyspace@0__:<key>`, `__keyevent@0__:<event>`).
    pub fn channels_for(self, event: Event) -> (bool, bool) {
        let class = match event {
            Event::Expired => EXPIRED,
            event if event.is_string() => STRING,
            _ => GENERIC,
        };
        let on = self.0 & class != 0;
        (on && self.0 & KEYSPACE != 0, on && self.0 & KEYEVENT != 0)
    }

    /// Whether any event can be notified (a class and a channel kind are set).
    pub fn any(self) -> bool {
        self.0 & (KEYSPACE | KEYEVENT) != 0 && self.0 & (ALL | NEW | KEY_MISS) != 0
    }
}

impl std::fmt::Display for NotifyFlags {
    /// The canonical letters, as `CONFIG GET` shows them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        if self.0 & ALL == ALL {
            text.push('A');
            if self.0 & NEW != 0 {
                text.push('n');
            }
        } else {
            text.extend(
                CLASSES
                    .iter()
                    .filter(|(_, bit)| self.0 & bit != 0)
                    .map(|(c, _)| c),
            );
        }
        for (letter, bit) in [('K', KEYSPACE), ('E', KEYEVENT), ('m', KEY_MISS)] {
            if self.0 & bit != 0 {
                text.push(letter);
            }
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: flags parse and print as redis-server's `CONFIG SET` / `CONFIG GET`, and
    /// route events by class. Method: a table of inputs with the canonical text and the
    /// channels a `set` (string) and a `del` (generic) go to.
    #[test]
    fn flags_parse_print_and_route_as_redis() {
        let cases = [
            ("", Some(""), (false, false), (false, false)),
            ("KEA", Some("AKE"), (true, true), (true, true)),
            ("E$", Some("$E"), (false, true), (false, false)),
            ("gK", Some("gK"), (false, false), (true, false)),
            ("Kg$lshzxetd", Some("AK"), (true, false), (true, false)),
            ("Ex", Some("xE"), (false, false), (false, false)),
            ("KQ", None, (false, false), (false, false)),
        ];
        for (i, (input, want, set, del)) in cases.into_iter().enumerate() {
            let parsed = NotifyFlags::parse(input.as_bytes());
            assert_eq!(
                parsed.map(|f| f.to_string()).as_deref(),
                want,
                "#{i}: {input}"
            );
            let flags = parsed.unwrap_or_default();
            assert_eq!(flags.channels_for(Event::Set), set, "#{i}: set");
            assert_eq!(flags.channels_for(Event::Del), del, "#{i}: del");
            let reparsed = NotifyFlags::parse(flags.to_string().as_bytes());
            assert_eq!(reparsed, Some(flags), "#{i}: round trip");
        }
    }
}
