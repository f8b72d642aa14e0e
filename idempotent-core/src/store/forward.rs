//! `IdempotencyStore` for references and smart pointers to a store, so `&S`, `Arc<S>` and
//! `Box<S>` (`Arc<dyn IdempotencyStore>` included) are stores wherever a store is expected.
//! One macro writes the three impls; `missing_trait_methods` makes a new trait method that is
//! not forwarded a compile error, rather than a silent fall back to its default.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::IdempotencyStore;
use super::request::{Claim, ClaimRequest, Lease};
use crate::error::Error;

macro_rules! forward_store {
    ($($pointer:ty),* $(,)?) => {$(
        #[deny(clippy::missing_trait_methods)]
        #[async_trait]
        impl<S: IdempotencyStore + ?Sized> IdempotencyStore for $pointer {
            async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
                (**self).claim(request).await
            }

            async fn complete(
                &self,
                lease: &Lease,
                payload: Bytes,
                ttl: Duration,
            ) -> Result<(), Error> {
                (**self).complete(lease, payload, ttl).await
            }

            async fn release(&self, lease: &Lease) -> Result<(), Error> {
                (**self).release(lease).await
            }

            async fn extend(&self, lease: &Lease, lease_for: Duration) -> Result<(), Error> {
                (**self).extend(lease, lease_for).await
            }

            fn release_in_background(&self, lease: Lease) {
                (**self).release_in_background(lease);
            }

            fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
                (**self).abandon_claim_in_background(request);
            }

            async fn purge_expired(&self) -> Result<u64, Error> {
                (**self).purge_expired().await
            }

            fn backend_name(&self) -> &'static str {
                (**self).backend_name()
            }

            async fn wait_for_change(&self, scope: &str, key: &str, max_wait: Duration) {
                (**self).wait_for_change(scope, key, max_wait).await;
            }
        }
    )*};
}

forward_store!(&S, Arc<S>, Box<S>);
