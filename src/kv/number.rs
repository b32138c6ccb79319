//! Numbers stored as strings, read and written the way Redis's INCR and INCRBYFLOAT do,
//! decided by integer arithmetic only so that every replica computes the same bytes.
//!
//! - integers: [`parse_integer`] accepts what Redis's `string2ll` accepts (an optional
//!   `-`, digits without a leading zero, within `i64`) and nothing else.
//! - floats: Redis adds two `long double`s and prints the sum with `%.17Lf`, trailing
//!   zeros removed. `long double` is 80 bits on x86, 64 on some ARM ABIs and 128 on
//!   others, so that is not one answer across machines. A [`Decimal`] keeps the same
//!   output form (at most 17 fractional digits, no trailing zeros, no exponent) but adds
//!   exactly: `10.5 + 0.1` is `10.6` and `5.0e3 + 200` is `5200`, on every replica.
//!   Its range is ±1.7e21; a value or sum beyond it is refused as an overflow.
//!
//! Invariant: `Decimal::parse(d.to_string())` is `d` for every `Decimal`.

use std::fmt;

/// Parses `bytes` as Redis's `string2ll` does: optional `-`, then `0` alone or digits
/// starting with 1-9, within `i64`. No `+`, no spaces, no leading zeros.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: i64 = text.parse().ok()?;
    (value.to_string() == text).then_some(value)
}

/// Fractional digits a [`Decimal`] keeps (those of `%.17Lf`).
const FRACTION_DIGITS: u32 = 17;
const UNIT: i128 = 10i128.pow(FRACTION_DIGITS);

/// What reading a float string found, when it is not a finite [`Decimal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatError {
    /// Not a float at all (or NaN): Redis's "value is not a valid float".
    Invalid,
    /// `inf` / `infinity`, either sign: a valid float whose sum cannot be finite.
    Infinite,
    /// A finite float beyond the range of a [`Decimal`].
    OutOfRange,
}

/// A decimal number with 17 fractional digits: `units` of 10^-17.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decimal {
    units: i128,
}

impl Decimal {
    /// Zero, the value of a missing key.
    pub const ZERO: Decimal = Decimal { units: 0 };

    /// Parses a float the way `strtold` reads one, as Redis's `string2ld` allows it:
    /// optional sign, digits with an optional `.` (at least one digit), an optional
    /// exponent `e[sign]digits`; or `inf` / `infinity` (any case). No spaces, no hex,
    /// no trailing bytes. Digits beyond the 17th fractional one are rounded half away
    /// from zero.
    ///
    /// # Errors
    /// [`FloatError`] for anything else (NaN is [`FloatError::Invalid`], as in Redis).
    pub fn parse(bytes: &[u8]) -> Result<Decimal, FloatError> {
        let (negative, body) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Err(FloatError::Infinite);
        }
        let (mantissa, exponent) = match body.iter().position(|&b| b == b'e' || b == b'E') {
            Some(at) => (&body[..at], parse_exponent(&body[at + 1..])?),
            None => (body, 0),
        };
        let (whole, fraction) = match mantissa.iter().position(|&b| b == b'.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, &[][..]),
        };
        let all_digits = |part: &[u8]| part.iter().all(u8::is_ascii_digit);
        if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
            return Err(FloatError::Invalid);
        }
        // value = digits * 10^(exponent - fraction length); units = value * 10^17.
        let digits: Vec<u8> = whole.iter().chain(fraction).map(|&b| b - b'0').collect();
        let shift = fraction.len() as i64 - exponent - i64::from(FRACTION_DIGITS);
        let units = scale(&digits, shift)?;
        Ok(Decimal {
            units: if negative { -units } else { units },
        })
    }

    /// The sum, or `None` beyond the range.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let units = self.units.checked_add(other.units)?;
        (units.unsigned_abs() < RANGE_UNITS_MAX).then_some(Decimal { units })
    }
}

/// Values are kept below 10^21 (in units, 10^38 < i128::MAX), so a sum never wraps.
const RANGE_UNITS_MAX: u128 = 10u128.pow(21 + FRACTION_DIGITS);

fn parse_exponent(bytes: &[u8]) -> Result<i64, FloatError> {
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FloatError::Invalid);
    }
    // Beyond ±100000 the value is 0 or out of range whatever the digits; clamping keeps
    // the arithmetic below in range.
    let mut value: i64 = 0;
    for &digit in digits {
        value = (value * 10 + i64::from(digit - b'0')).min(100_000);
    }
    Ok(if negative { -value } else { value })
}

/// The integer of the decimal `digits` divided by 10^`shift` (multiplied by 10^-`shift`
/// if negative), rounded half away from zero: the units of the parsed value.
fn scale(digits: &[u8], shift: i64) -> Result<i128, FloatError> {
    let too_large = FloatError::OutOfRange;
    // With `shift` > 0, the digits from `kept` on are below one unit.
    let kept = digits.len() as i64 - shift.max(0);
    let mut value: u128 = 0;
    for &digit in digits.iter().take(kept.max(0) as usize) {
        value = value
            .checked_mul(10)
            .map(|v| v + u128::from(digit))
            .filter(|&v| v < RANGE_UNITS_MAX)
            .ok_or(too_large)?;
    }
    if kept >= 0 && digits.get(kept as usize).is_some_and(|&digit| digit >= 5) {
        value += 1;
    }
    for _ in 0..(-shift).max(0) {
        if value == 0 {
            break;
        }
        value = value
            .checked_mul(10)
            .filter(|&v| v < RANGE_UNITS_MAX)
            .ok_or(too_large)?;
    }
    if value >= RANGE_UNITS_MAX {
        return Err(too_large);
    }
    Ok(value as i128)
}

impl fmt::Display for Decimal {
    /// `%.17Lf` with the trailing zeros (and a bare `.`) removed, and `0` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.units.unsigned_abs();
        let whole = magnitude / UNIT as u128;
        let fraction = magnitude % UNIT as u128;
        let sign = if self.units < 0 { "-" } else { "" };
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{fraction:017}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sum(a: &str, b: &str) -> String {
        let a = Decimal::parse(a.as_bytes()).expect("a parses");
        let b = Decimal::parse(b.as_bytes()).expect("b parses");
        a.checked_add(b).expect("in range").to_string()
    }

    /// Goal: INCRBYFLOAT's documented examples and Redis's output form.
    #[test]
    fn sums_print_as_redis_prints_them() {
        let cases = [
            ("10.5", "0.1", "10.6"),
            ("5.0e3", "200", "5200"),
            ("0.1", "0.2", "0.3"),
            ("3", "-3", "0"),
            ("-0", "0", "0"),
            ("1", "-1.5", "-0.5"),
            (".5", "5.", "5.5"),
            ("+1E2", "1e-2", "100.01"),
            ("0.000000000000000015", "0", "0.00000000000000002"),
            ("0.000000000000000001", "0", "0"),
            ("1e-100000000000", "1", "1"),
            ("123456789012.123456789", "0", "123456789012.123456789"),
        ];
        for (i, (a, b, want)) in cases.into_iter().enumerate() {
            assert_eq!(sum(a, b), want, "#{i}: {a} + {b}");
        }
    }

    #[test]
    fn non_floats_infinities_and_huge_values_are_told_apart() {
        let cases: [(&str, FloatError); 14] = [
            ("", FloatError::Invalid),
            (".", FloatError::Invalid),
            ("abc", FloatError::Invalid),
            (" 1", FloatError::Invalid),
            ("1 ", FloatError::Invalid),
            ("nan", FloatError::Invalid),
            ("1e", FloatError::Invalid),
            ("0x10", FloatError::Invalid),
            ("--1", FloatError::Invalid),
            ("inf", FloatError::Infinite),
            ("-Infinity", FloatError::Infinite),
            ("1e22", FloatError::OutOfRange),
            ("1e100000000000", FloatError::OutOfRange),
            ("9999999999999999999999", FloatError::OutOfRange),
        ];
        for (i, (text, want)) in cases.into_iter().enumerate() {
            assert_eq!(Decimal::parse(text.as_bytes()), Err(want), "#{i}: {text:?}");
        }
        let big = Decimal::parse(b"900000000000000000000").expect("in range");
        assert_eq!(big.checked_add(big), None, "a sum beyond the range");
    }

    #[test]
    fn integers_parse_as_string2ll_does() {
        let cases: [(&str, Option<i64>); 9] = [
            ("0", Some(0)),
            ("-12", Some(-12)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("+1", None),
            ("01", None),
            ("-0", None),
            (" 1", None),
        ];
        for (i, (text, want)) in cases.into_iter().enumerate() {
            assert_eq!(parse_integer(text.as_bytes()), want, "#{i}: {text:?}");
        }
    }

    proptest! {
        #[test]
        fn printed_decimals_parse_back(units in -(RANGE_UNITS_MAX as i128 - 1)..(RANGE_UNITS_MAX as i128)) {
            let decimal = Decimal { units };
            prop_assert_eq!(Decimal::parse(decimal.to_string().as_bytes()), Ok(decimal));
        }
    }
}
