//! Keys compatible with a common Python idempotency-key function.
//!
//! Python services often derive idempotency keys from a SHA-256 digest of
//! `entity_id:action[:json.dumps(params, sort_keys=True)]`. This module
//! reproduces that computation byte for byte, including Python's JSON
//! encoder output (separators, key order, `ensure_ascii` escaping and float
//! `repr`), so keys produced by Rust and Python services agree.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Generates the idempotency key the Python function below produces for the same inputs.
///
/// This is a byte-for-byte port of:
///
/// ```python
/// def generate_idempotency_key(*, entity_id: str, action: str, params: dict | None = None) -> str:
///     content = f"{entity_id}:{action}"
///     if params:
///         content += f":{json.dumps(params, sort_keys=True)}"
///     return hashlib.sha256(content.encode()).hexdigest()[:32]
/// ```
///
/// The result is the first 32 lowercase hex characters (128 bits) of the
/// SHA-256 digest of the UTF-8 encoded content string.
///
/// `params` is serialised exactly as Python's
/// `json.dumps(params, sort_keys=True)` would: `", "` and `": "` separators,
/// object keys sorted by code point at every level, every character outside
/// printable ASCII (including DEL, `U+007F`) escaped as lowercase `\uXXXX`
/// (UTF-16 surrogate pairs above `U+FFFF`), the short escapes `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f`, integers in plain decimal and floats in
/// Python's `repr` form (`100.0`, `1e-05`, `1e+16`, `-0.0`, ...).
///
/// # Truthiness
///
/// The `:params` suffix is appended only when `params` is truthy in the
/// Python sense, mirroring `if params:`. `None` and the JSON values `null`,
/// `false`, `0`, `0.0`, `""`, `[]` and `{}` add no suffix, so they all give
/// the same key as calling without params.
///
/// # Example
///
/// ```
/// use idempotent_core::key::generate_idempotency_key;
/// use serde_json::json;
///
/// let params = json!({"currency": "USD", "amount": 100});
/// let key = generate_idempotency_key("order-123", "create", Some(&params));
/// assert_eq!(key, "0681b5ad331e2ebe28b4f1ab218048a4");
///
/// // Falsy params are ignored, as in Python.
/// assert_eq!(
///     generate_idempotency_key("order-123", "create", Some(&json!({}))),
///     generate_idempotency_key("order-123", "create", None),
/// );
/// ```
pub fn generate_idempotency_key(entity_id: &str, action: &str, params: Option<&Value>) -> String {
    let mut content = String::with_capacity(entity_id.len() + action.len() + 1);
    content.push_str(entity_id);
    content.push(':');
    content.push_str(action);
    if let Some(params) = params.filter(|p| python_truthy(p)) {
        content.push(':');
        python_json_dumps_sorted(params, &mut content);
    }
    let digest = Sha256::digest(content.as_bytes());
    let mut key = String::with_capacity(32);
    for byte in digest.iter().take(16) {
        key.push(hex_digit(byte >> 4));
        key.push(hex_digit(byte & 0x0f));
    }
    key
}

/// Lowercase hex digit for a nibble (`0..=15`).
fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

/// Python's `bool(value)` for the value `json.loads` would produce.
fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i != 0
            } else if let Some(u) = n.as_u64() {
                u != 0
            } else {
                // `-0.0` compares equal to `0.0`, and is falsy in Python too.
                n.as_f64().is_none_or(|f| f != 0.0)
            }
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Appends `json.dumps(value, sort_keys=True)` (Python defaults otherwise).
fn python_json_dumps_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_dumps_sorted(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// Appends an object with keys sorted by code point.
///
/// `serde_json::Map` is already sorted unless the `preserve_order` feature
/// is enabled somewhere in the dependency graph, so sort explicitly. Rust's
/// `str` ordering compares UTF-8 bytes, which is the same as comparing code
/// points, i.e. what Python's `sorted()` does for `str` keys.
fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_string(key, out);
        out.push_str(": ");
        python_json_dumps_sorted(value, out);
    }
    out.push('}');
}

/// Appends a string literal the way Python's `ensure_ascii` encoder does:
/// only printable ASCII (`' '..='~'`) is kept verbatim.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a `String` cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Appends a number: integers in decimal, floats in Python `repr` form.
fn write_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        write_python_float_repr(f, out);
    } else {
        // Unreachable without `arbitrary_precision`; keep the literal.
        let _ = write!(out, "{n}");
    }
}

/// Appends Python's `repr(f)` for a float.
///
/// Python uses the shortest digit string that round-trips (as does Rust's
/// `{:e}`), printed in scientific notation when the decimal exponent is
/// below -4 or at least 16 (`1e-05`, `1.5e+300`, with at least two exponent
/// digits), and otherwise in positional notation with at least one
/// fractional digit (`100.0`, `0.0001`).
fn write_python_float_repr(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    let sci = shortest_round_half_even(f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let (first, rest) = digits.split_at(digits.len().min(1));

    if !(-4..16).contains(&exp) {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        // 0 <= exp < 16, so this cannot truncate.
        let int_len = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            out.push_str(".0");
        } else {
            let (int_part, frac_part) = digits.split_at(int_len);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac_part);
        }
    } else {
        // -4 <= exp <= -1
        out.push_str("0.");
        let zeros = usize::try_from(-exp - 1).unwrap_or(0);
        out.extend(std::iter::repeat_n('0', zeros));
        out.push_str(&digits);
    }
}

/// The shortest round-tripping digits of a finite, non-negative `f` in
/// Rust's `{:e}` shape (e.g. `"1.2345678901234568e16"`, `"1e-5"`, `"0e0"`),
/// choosing like Python (David Gay's `dtoa` mode 0) between equally short
/// candidates.
///
/// Rust's `{:e}` already finds the shortest digit count, but when the exact
/// binary value lies exactly halfway between two shortest candidates it
/// rounds the last digit up, whereas Python picks the nearest candidate and
/// breaks ties to even: `72389254100960.625` is `72389254100960.62` in
/// Python, not `...60.63`. Rust's fixed-precision `{:.N$e}` rounds the exact
/// value correctly (half to even), so re-round to the same digit count and
/// keep that whenever it still round-trips.
fn shortest_round_half_even(f: f64) -> String {
    let shortest = format!("{f:e}");
    let digit_count = shortest
        .split_once('e')
        .map_or(shortest.as_str(), |(mantissa, _)| mantissa)
        .bytes()
        .filter(u8::is_ascii_digit)
        .count();
    let nearest = format!("{:.*e}", digit_count.saturating_sub(1), f);
    if nearest.parse::<f64>() == Ok(f) {
        nearest
    } else {
        shortest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(f: f64) -> String {
        let mut s = String::new();
        write_python_float_repr(f, &mut s);
        s
    }

    fn dumps(v: &Value) -> String {
        let mut s = String::new();
        python_json_dumps_sorted(v, &mut s);
        s
    }

    #[test]
    // The tie literals below are exact binary values; clippy's "shorter"
    // spelling would itself use the round-half-up tie this test guards against.
    #[allow(clippy::excessive_precision, clippy::inconsistent_digit_grouping)]
    fn float_repr_matches_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (2.5e-5, "2.5e-05"),
            (1e-7, "1e-07"),
            (5e-324, "5e-324"),
            (1e16, "1e+16"),
            (1e22, "1e+22"),
            (1.5e300, "1.5e+300"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            (123_456_789_012_345.6, "123456789012345.6"),
            (1_234_567_890_123_456.0, "1234567890123456.0"),
            (12_345_678_901_234_567.0, "1.2345678901234568e+16"),
            (999_999_999_999_999.9, "999999999999999.9"),
            (1e15, "1000000000000000.0"),
            (-1e100, "-1e+100"),
            // Exact ties between two shortest candidates: Python rounds half
            // to even where Rust's `{:e}` rounds up.
            (72_389_254_100_960.625, "72389254100960.62"),
            (9_088_455_535_215.0625, "9088455535215.062"),
            (1_486_462_385_923_773.25, "1486462385923773.2"),
        ];
        for &(f, expected) in cases {
            assert_eq!(repr(f), expected, "repr({f:?})");
        }
    }

    #[test]
    fn dumps_matches_python() {
        let v = serde_json::json!({
            "b": [1, 2.0, "x\u{7f}\u{1f600}é\"\\\n", null, true],
            "a": {"z": false, "B": -9_223_372_036_854_775_808_i64},
            "c": 18_446_744_073_709_551_615_u64,
        });
        assert_eq!(
            dumps(&v),
            r#"{"a": {"B": -9223372036854775808, "z": false}, "b": [1, 2.0, "x\u007f\ud83d\ude00\u00e9\"\\\n", null, true], "c": 18446744073709551615}"#
        );
    }

    #[test]
    fn truthiness() {
        use serde_json::json;
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(-0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!python_truthy(&v), "{v} should be falsy");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-1),
            json!(0.5),
            json!(" "),
            json!([0]),
            json!({"a": null}),
        ] {
            assert!(python_truthy(&v), "{v} should be truthy");
        }
    }
}
