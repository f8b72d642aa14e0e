//! Who sent a request, and the scope its key lives in.
//!
//! A client's key is only unique for that client, so the layer stores it under a scope made of
//! the [`Principal`] that sent it, the method and the path (and the layer's own scope name): the
//! same key from two tenants, or on two routes, names two records, and one tenant can never
//! receive another tenant's response. The principal comes from an [`ExtractPrincipal`]; the
//! default, [`AuthorizationHeader`], hashes the `Authorization` header.
//!
//! Principals are SHA-256 digests, so credentials are never stored in clear, and the scope is
//! itself a digest of the length-prefixed encoding of its parts (the key encoding of
//! [`crate::key`]), so two different requests never share one. Both are persisted formats:
//! records are found again after an upgrade only while they stay the same.
//!
//! ```
//! use http::Method;
//! use idempotent_core::http::{Principal, scope};
//!
//! let alice = Principal::from_identity("tenant-alice");
//! let bob = Principal::from_identity("tenant-bob");
//! let a = scope::scope("", &alice, &Method::POST, "/orders");
//! let b = scope::scope("", &bob, &Method::POST, "/orders");
//! assert_ne!(a, b);
//! assert!(a.starts_with("http:") && a.len() == 69);
//! ```

use std::fmt;

use http::request::Parts;
use http::{Method, header};
use sha2::{Digest, Sha256};

use super::fingerprint::Blob;
use crate::key::IdempotencyKey;

const PRINCIPAL_DOMAIN: &[u8] = b"idempotent-http-principal/v1\0";
const SCOPE_DOMAIN: &str = "idempotent-http-scope/v1";
const KEY_DOMAIN: &str = "idempotent-http-key/v1";

/// Who sent a request, as a SHA-256 digest of whatever identifies them.
///
/// Its `Debug` output shows nothing of the digest, so a principal logged by mistake does not
/// let anyone correlate requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal([u8; 32]);

impl Principal {
    /// The principal of requests that carry no identity. All zeros, which no digest is.
    pub const ANONYMOUS: Principal = Principal([0; 32]);

    /// The principal named by `identity` (a tenant id, a user id, a credential), hashed.
    pub fn from_identity(identity: impl AsRef<[u8]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(PRINCIPAL_DOMAIN);
        hasher.update(identity.as_ref());
        Principal(hasher.finalize().into())
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Principal::ANONYMOUS {
            f.write_str("Principal(anonymous)")
        } else {
            f.write_str("Principal(..)")
        }
    }
}

/// Finds the principal of a request, from its method, URI, headers and extensions.
///
/// Implemented for closures, so a layer can read a tenant header or an extension set by an
/// authentication layer in front of it:
///
/// ```
/// use http::request::Parts;
/// use idempotent_core::http::{ExtractPrincipal, Principal};
///
/// fn by_tenant(parts: &Parts) -> Principal {
///     match parts.headers.get("x-tenant-id") {
///         Some(tenant) => Principal::from_identity(tenant.as_bytes()),
///         None => Principal::ANONYMOUS,
///     }
/// }
/// let extractor: &dyn ExtractPrincipal = &by_tenant;
/// # let _ = extractor;
/// ```
///
/// Return a principal that is the same on every retry: a session id that rotates would make a
/// retry a new request.
pub trait ExtractPrincipal: Send + Sync + 'static {
    /// The principal that sent `request`.
    fn principal(&self, request: &Parts) -> Principal;
}

impl<F> ExtractPrincipal for F
where
    F: Fn(&Parts) -> Principal + Send + Sync + 'static,
{
    fn principal(&self, request: &Parts) -> Principal {
        self(request)
    }
}

/// The default extractor: the `Authorization` header, hashed ([`Principal::ANONYMOUS`]
/// without one). Two requests with the same credentials are the same principal.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthorizationHeader;

impl ExtractPrincipal for AuthorizationHeader {
    fn principal(&self, request: &Parts) -> Principal {
        let mut values = request.headers.get_all(header::AUTHORIZATION).iter();
        let Some(first) = values.next() else {
            return Principal::ANONYMOUS;
        };
        let mut hasher = Sha256::new();
        hasher.update(PRINCIPAL_DOMAIN);
        hasher.update(first.as_bytes());
        for more in values {
            // Repeated headers are unusual; each one changes the principal.
            hasher.update(b"\n");
            hasher.update(more.as_bytes());
        }
        Principal(hasher.finalize().into())
    }
}

/// The scope a request's key is stored under: `http:` and 64 hex characters, the key
/// encoding's SHA-256 of the layer's scope name, the principal, the method and the path, in
/// that order.
pub fn scope(layer_scope: &str, principal: &Principal, method: &Method, path: &str) -> String {
    let digest = IdempotencyKey::builder(SCOPE_DOMAIN)
        .part(layer_scope)
        .part(&Blob(principal.as_bytes()))
        .part(method.as_str())
        .part(path)
        .finish();
    let mut scope = String::with_capacity(69);
    scope.push_str("http:");
    scope.push_str(digest.as_str());
    scope
}

/// The key a client's `Idempotency-Key` is stored as: its digest, so that neither the store
/// nor the engine's logs ever hold the client's value.
pub fn store_key(client_key: &str) -> IdempotencyKey {
    IdempotencyKey::builder(KEY_DOMAIN)
        .part(client_key)
        .finish()
}
