//! Redis's glob patterns (`KEYS`, `SCAN MATCH`, `CONFIG GET`): `*` any run of bytes, `?`
//! one byte, `[abc]`, `[^a]`, `[a-z]` a class, `\x` the byte `x`; byte-wise, as
//! redis-server's `stringmatchlen` (case-sensitive).
//!
//! Invariant: matching is iterative and backtracks only to the last `*` seen, so it
//! takes O(pattern × text) steps at worst whatever the input (no recursion, no
//! exponential case), and never panics.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern position after it, text position).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(&first) => {
                let (matched, width) = one(&pattern[p..], first, text[t]);
                if matched {
                    p += width;
                    t += 1;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((after, from)) => {
                p = after;
                t = from + 1;
                star = Some((after, from + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// The literal bytes every match starts with: the pattern up to its first `*`, `?`,
/// `[` or `\` (a scan need only visit the keys with this prefix).
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// Matches the pattern element at the start of `pattern` (not `*`) against `byte`:
/// (matched, the element's width in the pattern).
fn one(pattern: &[u8], first: u8, byte: u8) -> (bool, usize) {
    match first {
        b'?' => (true, 1),
        b'\\' if pattern.len() > 1 => (pattern[1] == byte, 2),
        b'[' => class(pattern, byte),
        literal => (literal == byte, 1),
    }
}

/// A `[...]` class at the start of `pattern`: (matched, its width). An unclosed class
/// runs to the end of the pattern, as in redis-server.
fn class(pattern: &[u8], byte: u8) -> (bool, usize) {
    let mut i = 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == byte;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (low, high) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (low..=high).contains(&byte);
            i += 3;
        } else {
            matched |= pattern[i] == byte;
            i += 1;
        }
    }
    let width = (i + 1).min(pattern.len());
    (matched != negate, width)
}

#[cfg(test)]
mod tests {
    //! Goal: the cases of redis-server's `stringmatchlen` that clients rely on, and a
    //! pathological pattern that takes no exponential time (it would not finish).
    use super::{literal_prefix, matches};

    #[test]
    fn globs_match_as_redis_does() {
        let cases: [(&str, &str, bool); 18] = [
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "use", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*a*b*", "xxaxxbxx", true),
            ("max*", "maxmemory", true),
            ("*memory*", "maxmemory-policy", true),
        ];
        for (i, (pattern, text, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                matches(pattern.as_bytes(), text.as_bytes()),
                want,
                "#{i}: {pattern} ~ {text}"
            );
        }
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a?b"), b"a");
        assert_eq!(literal_prefix(b"exact"), b"exact");
        assert_eq!(literal_prefix(b"\\*x"), b"");
        let pattern = "*a".repeat(30) + "b";
        assert!(!matches(pattern.as_bytes(), "a".repeat(200).as_bytes()));
    }
}
