//! The request fingerprint: what a retry must send again for its key to replay.
//!
//! SHA-256 (under the fingerprint domain of [`crate::key`]) of the method, the path, the query
//! and the body bytes, each length-prefixed. Headers are not part of it: clients and proxies
//! change them between retries. A persisted format, like the scope.
//!
//! ```
//! use http::Method;
//! use idempotent_core::http::fingerprint::fingerprint;
//!
//! let first = fingerprint(&Method::POST, "/orders", None, br#"{"quantity":1}"#);
//! let retry = fingerprint(&Method::POST, "/orders", None, br#"{"quantity":1}"#);
//! let other = fingerprint(&Method::POST, "/orders", None, br#"{"quantity":2}"#);
//! assert_eq!(first, retry);
//! assert_ne!(first, other);
//! ```

use http::Method;

use crate::key::{Fingerprint, KeyPart, KeyWriter};

/// Bytes as one length-prefixed blob of the key encoding.
pub(super) struct Blob<'a>(pub(super) &'a [u8]);

impl KeyPart for Blob<'_> {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        out.write_bytes(self.0);
    }
}

/// The fingerprint of a request. `query` is `None` without a `?` in the URI, which differs
/// from an empty query (`/orders?`).
pub fn fingerprint(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Fingerprint {
    Fingerprint::builder()
        .field("method", method.as_str())
        .field("path", path)
        .field("query", &query)
        .field("body", &Blob(body))
        .finish()
}
