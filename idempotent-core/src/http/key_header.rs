//! The `Idempotency-Key` request header: parsing and validation.
//!
//! The header is a structured-field string (RFC 8941, `Idempotency-Key: "8e03978e"`), as
//! draft-ietf-httpapi-idempotency-key-header specifies, and most clients send it as a bare
//! value (`Idempotency-Key: 8e03978e`); both forms name the same key. A key is 1 to
//! [`MAX_KEY_LEN`] visible ASCII characters (`!` to `~`). Anything else, and a header sent more
//! than once, is a [`KeyHeaderError`], which the layer answers with 400.
//!
//! ```
//! use http::HeaderMap;
//! use idempotent_core::http::key_header::{self, KeyHeaderError};
//!
//! let mut headers = HeaderMap::new();
//! assert_eq!(key_header::from_headers(&headers), Ok(None));
//! headers.insert("idempotency-key", "\"order-42\"".parse().unwrap());
//! assert_eq!(key_header::from_headers(&headers), Ok(Some("order-42".to_owned())));
//! assert_eq!(key_header::parse(b"order-42"), Ok("order-42".to_owned()));
//! assert_eq!(key_header::parse(b""), Err(KeyHeaderError::Empty));
//! ```

use std::fmt;

use http::HeaderMap;

use super::IDEMPOTENCY_KEY;

/// The longest key accepted, in characters (which are ASCII, so also bytes).
pub const MAX_KEY_LEN: usize = 255;

/// Why an `Idempotency-Key` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyHeaderError {
    /// The key (or the quoted string) is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] characters.
    TooLong,
    /// The key holds a character that is not visible ASCII (a space, a control character,
    /// a byte above 0x7e), or a bare key holds a `"` or `,`.
    InvalidCharacter,
    /// A quoted key is not a well-formed structured-field string: no closing quote, a
    /// backslash before anything but `"` or `\`, or content after the closing quote.
    MalformedString,
    /// The header was sent more than once.
    Repeated,
}

impl fmt::Display for KeyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyHeaderError::Empty => "the Idempotency-Key header is empty",
            KeyHeaderError::TooLong => "the Idempotency-Key is longer than 255 characters",
            KeyHeaderError::InvalidCharacter => {
                "the Idempotency-Key may only hold visible ASCII characters (a bare key no `\"` or `,`)"
            }
            KeyHeaderError::MalformedString => {
                "the Idempotency-Key is not a well-formed structured-field string"
            }
            KeyHeaderError::Repeated => "the Idempotency-Key header was sent more than once",
        })
    }
}

impl std::error::Error for KeyHeaderError {}

/// The key in `headers`: `Ok(None)` when there is no `Idempotency-Key` header.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<String>, KeyHeaderError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyHeaderError::Repeated);
    }
    parse(value.as_bytes()).map(Some)
}

/// Parses one header value into the key it names.
///
/// Surrounding spaces and tabs are ignored. A value that starts with `"` is a
/// structured-field string: `\"` and `\\` are its only escapes, and nothing may follow the
/// closing quote (parameters are not accepted). Any other value is the key as it is, and may
/// not hold `"` or `,` (a `,` is what a proxy leaves when it joins two headers into one).
pub fn parse(value: &[u8]) -> Result<String, KeyHeaderError> {
    let value = trim(value);
    let key = match value.split_first() {
        None => return Err(KeyHeaderError::Empty),
        Some((b'"', quoted)) => unquote(quoted)?,
        Some(_) => {
            if value.iter().any(|&byte| byte == b'"' || byte == b',') {
                return Err(KeyHeaderError::InvalidCharacter);
            }
            value.to_vec()
        }
    };
    if key.is_empty() {
        return Err(KeyHeaderError::Empty);
    }
    if !key.iter().all(u8::is_ascii_graphic) {
        return Err(KeyHeaderError::InvalidCharacter);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyHeaderError::TooLong);
    }
    // Every byte is visible ASCII, so this is valid UTF-8.
    String::from_utf8(key).map_err(|_| KeyHeaderError::InvalidCharacter)
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The content of an RFC 8941 string whose opening quote is already consumed.
fn unquote(mut rest: &[u8]) -> Result<Vec<u8>, KeyHeaderError> {
    let mut key = Vec::with_capacity(rest.len());
    loop {
        match rest {
            [] => return Err(KeyHeaderError::MalformedString),
            [b'"', after @ ..] => {
                return if after.is_empty() {
                    Ok(key)
                } else {
                    Err(KeyHeaderError::MalformedString)
                };
            }
            [b'\\', escaped @ (b'"' | b'\\'), after @ ..] => {
                key.push(*escaped);
                rest = after;
            }
            [b'\\', ..] => return Err(KeyHeaderError::MalformedString),
            [byte, after @ ..] => {
                // RFC 8941 strings hold 0x20 to 0x7e; a space is caught with the other
                // invisible characters once the string is read.
                if !(0x20..=0x7e).contains(byte) {
                    return Err(KeyHeaderError::InvalidCharacter);
                }
                key.push(*byte);
                rest = after;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_keys_are_the_same_key() {
        assert_eq!(parse(b"abc"), Ok("abc".to_owned()));
        assert_eq!(parse(b"\"abc\""), Ok("abc".to_owned()));
        assert_eq!(parse(b" \t\"abc\" "), Ok("abc".to_owned()));
        assert_eq!(parse(br#""a\"b\\c""#), Ok(r#"a"b\c"#.to_owned()));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(parse(b"   "), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"\"\""), Err(KeyHeaderError::Empty));
        assert_eq!(parse(b"\"abc"), Err(KeyHeaderError::MalformedString));
        assert_eq!(parse(b"\"abc\";p=1"), Err(KeyHeaderError::MalformedString));
        assert_eq!(parse(br#""a\nb""#), Err(KeyHeaderError::MalformedString));
        assert_eq!(parse(b"a b"), Err(KeyHeaderError::InvalidCharacter));
        assert_eq!(parse(b"\"a b\""), Err(KeyHeaderError::InvalidCharacter));
        assert_eq!(parse(b"a,b"), Err(KeyHeaderError::InvalidCharacter));
        assert_eq!(parse("é".as_bytes()), Err(KeyHeaderError::InvalidCharacter));
        assert_eq!(parse(&[b'k'; 256]), Err(KeyHeaderError::TooLong));
        assert!(parse(&[b'k'; 255]).is_ok());
    }
}
