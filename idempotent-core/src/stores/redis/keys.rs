//! Key names: no caller input ever appears in a Redis key name (see the module docs).

use sha2::{Digest, Sha256};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `{prefix}:{<hex sha256 of the length-prefixed scope and key>}`: no caller input in the name,
/// and the digest is the cluster hash tag.
pub(crate) fn record_key(prefix: &str, scope: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hash_part(&mut hasher, scope.as_bytes());
    hash_part(&mut hasher, key.as_bytes());
    tagged_key(prefix, hasher)
}

/// Feeds `part` to `hasher` length-prefixed: its byte count as a big-endian `u64`, then its
/// bytes, so that no two sequences of parts feed the same bytes. Also used for the tiered
/// store's cache keys.
pub(crate) fn hash_part(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part);
}

/// `{prefix}:{<lowercase hex of the digest>}`: the digest inside braces is the Redis Cluster
/// hash tag. Also names the tiered store's cache entries.
pub(crate) fn tagged_key(prefix: &str, hasher: Sha256) -> String {
    let digest = hasher.finalize();
    let mut name = String::with_capacity(prefix.len() + 3 + 2 * digest.len());
    name.push_str(prefix);
    name.push_str(":{");
    for byte in digest {
        name.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        name.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    name.push('}');
    name
}

/// Escapes the characters Redis glob patterns treat specially.
pub(super) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_are_hashed_length_prefixed_and_tagged() {
        // Golden: sha256(be_u64(5) "scope" be_u64(3) "key"), computed independently (Python hashlib).
        assert_eq!(
            record_key("idem", "scope", "key"),
            "idem:{b5a3bb5dda8aa6577d161934bb19196151a1f9e8912093525d02ae8455fed2f4}"
        );
        assert_ne!(
            record_key("idem", "a:b", "c"),
            record_key("idem", "a", "b:c")
        );
    }

    #[test]
    fn glob_specials_are_escaped() {
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
