//! A cache entry (a persisted format, see the module docs): version, checksum, fingerprint,
//! epoch, payload.

use bytes::{BufMut, BytesMut};
use sha2::{Digest, Sha256};

use crate::key::Fingerprint;

const CACHE_FORMAT_V2: u8 = 0x02;
const CHECKSUM_LEN: usize = 16;
/// Version, checksum, fingerprint, epoch.
pub(super) const HEADER_LEN: usize = 1 + CHECKSUM_LEN + 32 + 8;

/// The value that stands in for an entry of a forgotten record (see the module docs): a
/// cache miss, never deleted as damage, and never overwritten by a back-fill.
pub(super) const FORGOTTEN: &[u8] = &[0x00];

/// The checksum of an entry: the first [`CHECKSUM_LEN`] bytes of SHA-256 over everything
/// after it.
fn checksum(checked: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(checked);
    let mut sum = [0u8; CHECKSUM_LEN];
    sum.copy_from_slice(&digest[..CHECKSUM_LEN]);
    sum
}

/// A cache entry: version, checksum, fingerprint, epoch, payload.
pub(super) fn encode_entry(fingerprint: Fingerprint, epoch: u64, payload: &[u8]) -> BytesMut {
    let mut value = BytesMut::with_capacity(HEADER_LEN + payload.len());
    value.put_u8(CACHE_FORMAT_V2);
    value.put_bytes(0, CHECKSUM_LEN);
    value.put_slice(fingerprint.as_bytes());
    value.put_u64(epoch);
    value.put_slice(payload);
    let sum = checksum(&value[1 + CHECKSUM_LEN..]);
    value[1..=CHECKSUM_LEN].copy_from_slice(&sum);
    value
}

/// `(fingerprint, epoch, payload)` of a cache entry, or `None` if it is not one: too short,
/// another format version, or a checksum that does not match.
pub(super) fn parse_entry(entry: &[u8]) -> Option<(Fingerprint, u64, &[u8])> {
    if entry.len() < HEADER_LEN || entry[0] != CACHE_FORMAT_V2 {
        return None;
    }
    let (stored_sum, checked) = entry[1..].split_at(CHECKSUM_LEN);
    if stored_sum != checksum(checked) {
        return None;
    }
    let fingerprint: [u8; 32] = checked[..32].try_into().ok()?;
    let epoch = u64::from_be_bytes(checked[32..40].try_into().ok()?);
    Some((
        Fingerprint::from_digest(fingerprint),
        epoch,
        &entry[HEADER_LEN..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fingerprint: [u8; 32], epoch: u64, payload: &[u8]) -> Vec<u8> {
        encode_entry(Fingerprint::from_digest(fingerprint), epoch, payload).to_vec()
    }

    #[test]
    fn cache_entries_parse_back() {
        let value = entry([7; 32], 9, b"payload");
        let (fingerprint, epoch, payload) = parse_entry(&value).unwrap_or_else(|| panic!("parses"));
        assert_eq!(fingerprint, Fingerprint::from_digest([7; 32]));
        assert_eq!(epoch, 9);
        assert_eq!(payload, b"payload");
        let empty = entry([0; 32], 1, b"");
        assert_eq!(
            parse_entry(&empty).map(|(_, _, payload)| payload),
            Some(&b""[..])
        );
    }

    #[test]
    fn cache_entry_layout_is_pinned() {
        // Golden: the checksum is sha256([7; 32] || be_u64(9) || "payload")[..16], computed
        // independently (Python hashlib).
        let mut expected = vec![0x02];
        expected.extend_from_slice(&[
            0x50, 0xd7, 0x63, 0x98, 0x97, 0x76, 0x75, 0xf8, 0x23, 0x46, 0xdb, 0x8b, 0x16, 0x96,
            0xb2, 0x9a,
        ]);
        expected.extend_from_slice(&[7u8; 32]);
        expected.extend_from_slice(&9u64.to_be_bytes());
        expected.extend_from_slice(b"payload");
        assert_eq!(entry([7; 32], 9, b"payload"), expected);
    }

    #[test]
    fn malformed_cache_entries_are_rejected() {
        assert!(parse_entry(b"").is_none());
        assert!(parse_entry(&[CACHE_FORMAT_V2; 10]).is_none());
        // One byte short of a header.
        let value = entry([7; 32], 9, b"");
        assert!(parse_entry(&value[..HEADER_LEN - 1]).is_none());
        // The earlier format: version 1, no checksum.
        let mut version_1 = vec![0x01];
        version_1.extend_from_slice(&[7u8; 32]);
        version_1.extend_from_slice(&9u64.to_be_bytes());
        version_1.extend_from_slice(&[0u8; 16]);
        version_1.extend_from_slice(b"payload");
        assert!(parse_entry(&version_1).is_none());
        // A good entry under another version byte.
        let mut other_version = entry([7; 32], 9, b"payload");
        other_version[0] = 0x03;
        assert!(parse_entry(&other_version).is_none());
    }

    #[test]
    fn cache_entries_with_a_bad_checksum_are_rejected() {
        let good = entry([7; 32], 9, b"payload");
        // Any one flipped bit after the version byte: in the checksum, the fingerprint, the
        // epoch or the payload.
        for index in 1..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = good.clone();
                damaged[index] ^= bit;
                assert!(
                    parse_entry(&damaged).is_none(),
                    "byte {index} bit {bit:#04x} flipped"
                );
            }
        }
        // A payload cut short or extended.
        assert!(parse_entry(&good[..good.len() - 1]).is_none());
        let mut longer = good.clone();
        longer.push(b'!');
        assert!(parse_entry(&longer).is_none());
    }
}
