//! `PostgresStore` operations are bounded in time: a server that stops answering (reached
//! through a proxy that goes silent) fails each operation within the store's timeout.
//!
//! Its own test binary: the silent proxy disturbs no other test's store.

#![cfg(feature = "postgres")]

mod support;

use support::postgres::connect_through_proxy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idempotent_core::key::Fingerprint;
use idempotent_core::store::{Claim, ClaimRequest, Lease, OwnerId};
use idempotent_core::{Call, CallOptions, Error, IdempotencyStore, PostgresStore};

fn request<'a>(scope: &'a str, key: &'a str, owner: OwnerId) -> ClaimRequest<'a> {
    ClaimRequest {
        scope,
        key,
        fingerprint: Fingerprint::NONE,
        owner,
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(60),
    }
}

async fn acquire(store: &PostgresStore, scope: &str, key: &str) -> Lease {
    match store.claim(&request(scope, key, OwnerId::new())).await {
        Ok(Claim::Acquired(lease)) => lease,
        other => panic!("expected to acquire {scope}/{key}, got {other:?}"),
    }
}

/// The error and its sources, as one line.
fn describe(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// A server that stops answering

const TIMEOUT: Duration = Duration::from_secs(1);
/// Room past the timeout for a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Runs `operation` and checks that it failed with a timed-out `Error::Store` within about
/// the store's timeout.
async fn times_out<T: std::fmt::Debug>(
    what: &str,
    operation: impl Future<Output = Result<T, Error>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(TIMEOUT * 10, operation)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {:?}", TIMEOUT * 10));
    let elapsed = started.elapsed();
    match outcome {
        Err(ref error @ Error::Store { backend, .. }) => {
            assert_eq!(backend, "postgres");
            let text = describe(error);
            assert!(text.contains("timed out"), "{what}: {text}");
        }
        other => panic!("{what}: expected a timed-out Error::Store, got {other:?}"),
    }
    assert!(
        elapsed < TIMEOUT + SLACK,
        "{what}: failed after {elapsed:?}, the timeout is {TIMEOUT:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_fails_every_operation_within_the_timeout_and_the_store_recovers() {
    let builder = PostgresStore::builder().timeout(TIMEOUT);
    let Some((store, proxy, _tables)) = connect_through_proxy("idem_silent", builder, 4).await
    else {
        return;
    };
    let debug = format!("{store:?}");
    assert!(debug.contains("timeout: 1s"), "{debug}");

    // Claimed while the server answers: a completion, a release and an extension to make.
    let held = acquire(&store, "silent", "held").await;
    let mut transaction = store.pool().begin().await.unwrap();

    proxy.go_silent();
    times_out(
        "a fresh claim",
        store.claim(&request("silent", "fresh", OwnerId::new())),
    )
    .await;
    times_out(
        "a completion",
        store.complete(&held, Bytes::from_static(b"\x011"), Duration::from_secs(60)),
    )
    .await;
    times_out(
        "complete_in",
        store.complete_in(
            &mut transaction,
            &held,
            Bytes::from_static(b"\x011"),
            Duration::from_secs(60),
        ),
    )
    .await;
    drop(transaction);
    times_out("an extension", store.extend(&held, Duration::from_secs(30))).await;
    times_out("a release", store.release(&held)).await;
    times_out("a purge", store.purge_expired()).await;
    times_out("a migration", store.migrate()).await;
    let runs = AtomicUsize::new(0);
    times_out(
        "a call with wait_timeout(1s)",
        Call::new(&store, "silent", "call")
            .options(CallOptions::new().wait_timeout(Duration::from_secs(1)))
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u8, Error>(1)
            }),
    )
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the call must fail closed");

    // Answering again: the same store works (bounded attempts while connections recover).
    proxy.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store
            .claim(&request("silent", "after", OwnerId::new()))
            .await
        {
            Ok(Claim::Acquired(_)) => break,
            Err(Error::Store { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the store must work again once the server answers: {other:?}"),
        }
    }
    // The held lease completes (a completion the server applied late is completed again
    // harmlessly), and the record replays.
    store
        .complete(&held, Bytes::from_static(b"\x011"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(
        store
            .claim(&request("silent", "held", OwnerId::new()))
            .await,
        Ok(Claim::Completed(_))
    ));
    let outcome = Call::new(&store, "silent", "call")
        .run(async { Ok::<u8, Error>(2) })
        .await
        .unwrap();
    assert_eq!(outcome.value, 2);
}
