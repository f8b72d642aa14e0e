//! `IdempotencyStore` for references and smart pointers to a store, so `&S`, `Arc<S>` and
//! `Box<S>` (`Arc<dyn IdempotencyStore>` included) are stores wherever a store is expected.
//! One macro writes the three impls; `missing_trait_methods` makes a new trait method that is
//! not forwarded a compile error, rather than a silent fall back to its default.
//!
//! The async methods are written in the form `#[async_trait]` gives them (a boxed future), and
//! return the inner store's future as it is: forwarding costs no second allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::IdempotencyStore;
use super::records::{Forget, RecordState};
use super::request::{Claim, ClaimRequest, Lease};
use crate::error::Error;

/// The future an `#[async_trait]` method returns.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

macro_rules! forward_store {
    ($($pointer:ty),* $(,)?) => {$(
        #[deny(clippy::missing_trait_methods)]
        impl<S: IdempotencyStore + ?Sized> IdempotencyStore for $pointer {
            fn claim<'life0, 'life1, 'life2, 'async_trait>(
                &'life0 self,
                request: &'life1 ClaimRequest<'life2>,
            ) -> Boxed<'async_trait, Result<Claim, Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                Self: 'async_trait,
            {
                (**self).claim(request)
            }

            fn complete<'life0, 'life1, 'async_trait>(
                &'life0 self,
                lease: &'life1 Lease,
                payload: Bytes,
                ttl: Duration,
            ) -> Boxed<'async_trait, Result<(), Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                (**self).complete(lease, payload, ttl)
            }

            fn release<'life0, 'life1, 'async_trait>(
                &'life0 self,
                lease: &'life1 Lease,
            ) -> Boxed<'async_trait, Result<(), Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                (**self).release(lease)
            }

            fn extend<'life0, 'life1, 'async_trait>(
                &'life0 self,
                lease: &'life1 Lease,
                lease_for: Duration,
            ) -> Boxed<'async_trait, Result<(), Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                (**self).extend(lease, lease_for)
            }

            fn release_in_background(&self, lease: Lease) {
                (**self).release_in_background(lease);
            }

            fn abandon_claim_in_background(&self, request: &ClaimRequest<'_>) {
                (**self).abandon_claim_in_background(request);
            }

            fn purge_expired<'life0, 'async_trait>(
                &'life0 self,
            ) -> Boxed<'async_trait, Result<u64, Error>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                (**self).purge_expired()
            }

            fn inspect<'life0, 'life1, 'life2, 'async_trait>(
                &'life0 self,
                scope: &'life1 str,
                key: &'life2 str,
            ) -> Boxed<'async_trait, Result<RecordState, Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                Self: 'async_trait,
            {
                (**self).inspect(scope, key)
            }

            fn forget<'life0, 'life1, 'life2, 'async_trait>(
                &'life0 self,
                scope: &'life1 str,
                key: &'life2 str,
                mode: Forget,
            ) -> Boxed<'async_trait, Result<RecordState, Error>>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                Self: 'async_trait,
            {
                (**self).forget(scope, key, mode)
            }

            fn backend_name(&self) -> &'static str {
                (**self).backend_name()
            }

            fn wait_for_change<'life0, 'life1, 'life2, 'async_trait>(
                &'life0 self,
                scope: &'life1 str,
                key: &'life2 str,
                max_wait: Duration,
            ) -> Boxed<'async_trait, ()>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                'life2: 'async_trait,
                Self: 'async_trait,
            {
                (**self).wait_for_change(scope, key, max_wait)
            }
        }
    )*};
}

forward_store!(&S, Arc<S>, Box<S>);
