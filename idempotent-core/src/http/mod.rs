//! A tower layer for the `Idempotency-Key` header (in progress): the header parser, and the
//! scope, store key and fingerprint a request is recorded under.

pub mod fingerprint;
pub mod key_header;
pub mod scope;
pub mod stored;

use http::HeaderName;

pub use scope::{AuthorizationHeader, ExtractPrincipal, Principal};
pub use stored::{DEFAULT_REPLAYED_HEADERS, StoredFormatError, StoredResponse};

/// The `Idempotency-Key` request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotent-Replayed` response header, `true` on replayed responses.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
