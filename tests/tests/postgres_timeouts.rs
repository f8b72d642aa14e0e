//! `PostgresStore` operations are bounded in time: a server that stops answering (reached
//! through a proxy that goes silent), a row lock held by another transaction, and a call
//! cancelled while its claim waits on the server.
//!
//! Its own test binary: the silent proxy and the held locks disturb no other test's store.

#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idempotent_core::store::{Claim, OwnerId};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use idempotent_core::{
    Call, CallOptions, Disposition, Error, IdempotencyStore, OnInFlight, PostgresStore,
};
use support::postgres::{connect_through_proxy, connect_with};
use support::{acquire, request};

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
            let text = support::services::error_chain(error);
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
    let held = acquire(&store, &request("silent", "held", OwnerId::new())).await;
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

// ---------------------------------------------------------------------------------------------
// Row locks held by another transaction

/// A connection of its own with a transaction holding `FOR UPDATE` on the record's row.
async fn lock_row(store: &PostgresStore, scope: &str, key: &str) -> PgConnection {
    let mut locker = PgConnection::connect(&support::postgres_url())
        .await
        .expect("connect the locker");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    let locked = sqlx::query(AssertSqlSafe(format!(
        "SELECT 1 FROM {} WHERE scope = $1 AND key = $2 FOR UPDATE",
        store.table()
    )))
    .bind(scope.as_bytes())
    .bind(key.as_bytes())
    .fetch_all(&mut locker)
    .await
    .expect("lock the row");
    assert_eq!(locked.len(), 1, "the row to lock exists");
    locker
}

/// The store's connections (their `application_name` is the table name, see
/// `support::postgres::connect_with`) whose statement waits for a lock.
async fn waiting_on_locks(admin: &mut PgConnection, store: &PostgresStore) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
         AND application_name = $1 ORDER BY pid",
    )
    .bind(store.table())
    .fetch_all(admin)
    .await
    .expect("pg_stat_activity")
}

/// A record a claim would take over (released), so the claim must lock its row.
async fn released_row(store: &PostgresStore, scope: &str, key: &str) -> u64 {
    let lease = acquire(store, &request(scope, key, OwnerId::new())).await;
    store.release(&lease).await.unwrap();
    lease.epoch()
}

#[tokio::test]
async fn claim_on_a_row_locked_by_another_transaction_respects_the_wait_budget() {
    // One connection: if the claim kept it waiting on the server, nothing else could run.
    let builder = PostgresStore::builder().max_connections(1);
    let Some((store, _tables)) = connect_with("idem_locked", builder).await else {
        return;
    };
    let (scope, key) = ("locked", "k");
    released_row(&store, scope, key).await;
    let mut locker = lock_row(&store, scope, key).await;

    let budget = Duration::from_secs(1);
    let runs = AtomicUsize::new(0);
    let started = Instant::now();
    let call = tokio::time::timeout(
        Duration::from_secs(5),
        Call::new(&store, scope, key)
            .options(CallOptions::new().wait_timeout(budget))
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u8, Error>(1)
            }),
    )
    .await
    .unwrap_or_else(|_| panic!("the call was still waiting for the row lock after 5 s"));
    let elapsed = started.elapsed();
    assert!(
        matches!(call, Err(Error::InFlight { .. })),
        "a key whose row another transaction holds is in flight: {call:?}"
    );
    assert!(
        elapsed >= budget && elapsed < Duration::from_secs(3),
        "the call returned after {elapsed:?}, its wait budget is {budget:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // The pool's one connection is free again, and nothing of the store waits on the server.
    let other = tokio::time::timeout(
        Duration::from_secs(1),
        store.claim(&request(scope, "other", OwnerId::new())),
    )
    .await
    .expect("the pool's connection is free");
    assert!(matches!(other, Ok(Claim::Acquired(_))), "{other:?}");
    let mut admin = PgConnection::connect(&support::postgres_url())
        .await
        .unwrap();
    assert_eq!(
        waiting_on_locks(&mut admin, &store).await,
        Vec::<i32>::new()
    );

    // The lock gone, the key is claimed as usual.
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let outcome = Call::new(&store, scope, key)
        .run(async { Ok::<u8, Error>(2) })
        .await
        .unwrap();
    assert_eq!(outcome.disposition, Disposition::Executed);
}

#[tokio::test]
async fn claim_on_a_locked_row_in_reject_mode_is_in_flight_at_once() {
    let lock_timeout = Duration::from_millis(250);
    let builder = PostgresStore::builder()
        .max_connections(2)
        .lock_timeout(lock_timeout);
    let Some((store, _tables)) = connect_with("idem_locked_reject", builder).await else {
        return;
    };
    assert!(format!("{store:?}").contains("lock_timeout: 250ms"));
    let (scope, key) = ("locked", "k");
    released_row(&store, scope, key).await;
    let _locker = lock_row(&store, scope, key).await;
    let started = Instant::now();
    let call = tokio::time::timeout(
        Duration::from_secs(5),
        Call::new(&store, scope, key)
            .options(CallOptions::new().on_in_flight(OnInFlight::Reject))
            .run(async { Ok::<u8, Error>(1) }),
    )
    .await
    .unwrap_or_else(|_| panic!("the call was still waiting for the row lock after 5 s"));
    let elapsed = started.elapsed();
    match call {
        Err(Error::InFlight { retry_after }) => assert_eq!(retry_after, lock_timeout),
        other => panic!("expected Error::InFlight, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(1),
        "rejected after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_that_meets_an_uncommitted_completion_waits_then_replays_it() {
    let Some((store, _tables)) = connect_with("idem_locked_tx", PostgresStore::builder()).await
    else {
        return;
    };
    let (scope, key) = ("locked", "tx");
    // The owner's lease has run out (it paused), so a duplicate would take the key over, but
    // the owner is committing its transactional completion right now: the row is locked.
    let lease = acquire(&store, &request(scope, key, OwnerId::new())).await;
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET lease_until = statement_timestamp() - interval '1 second'",
        store.table()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let mut owner = PgConnection::connect(&support::postgres_url())
        .await
        .unwrap();
    let mut tx = owner.begin().await.unwrap();
    store
        .complete_in(
            &mut tx,
            &lease,
            Bytes::from_static(b"\x01\"done\""),
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let rejected = tokio::time::timeout(
        Duration::from_secs(3),
        Call::new(&store, scope, key)
            .options(CallOptions::new().on_in_flight(OnInFlight::Reject))
            .run(async { Ok::<String, Error>(String::from("again")) }),
    )
    .await
    .unwrap_or_else(|_| panic!("the claim was still waiting for the row lock after 3 s"));
    assert!(
        matches!(rejected, Err(Error::InFlight { .. })),
        "{rejected:?}"
    );
    let waiting = {
        let (store, runs) = (store.clone(), runs.clone());
        tokio::spawn(async move {
            Call::new(&store, scope, key)
                .options(CallOptions::new().wait_timeout(Duration::from_secs(10)))
                .run(async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<String, Error>(String::from("again"))
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.commit().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting call returns once the completion commits")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.value, "done");
    assert_eq!(outcome.disposition, Disposition::Replayed);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// A call cancelled while its claim is on the wire

/// How the test makes sure the dropped claim was applied by the server after the caller
/// dropped it, rather than never sent or cancelled on the server:
/// - the record is released, so a claim takes it over and must lock its row, and another
///   transaction holds that row lock: the claim statement reaches the server and waits there
///   (the store's lock timeout is set far above the test's pauses);
/// - the call is dropped while `pg_stat_activity` shows that statement waiting on the lock,
///   and the same backend is still waiting after the drop;
/// - a trigger logs every change to the record, and the log is empty when the call is
///   dropped; once the lock is released it shows the dropped call's owner taking the record
///   over, then the background claim of that same owner renewing that lease (same epoch)
///   and releasing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_cancelled_during_its_claim_does_not_leave_the_key_claimed_for_a_lease() {
    let builder = PostgresStore::builder()
        .max_connections(4)
        .lock_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(30));
    let Some((store, mut tables)) = connect_with("idem_cancel_claim", builder).await else {
        return;
    };
    let (scope, key) = ("cancel", "k");
    let released_epoch = released_row(&store, scope, key).await;

    let log = format!("{}_log", store.table());
    for statement in [
        format!(
            "CREATE TABLE {log} (seq bigserial PRIMARY KEY, op text, state text, owner bytea, \
             epoch bigint)"
        ),
        format!(
            "CREATE FUNCTION {log}_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO {log} (op, state, owner, epoch) \
             VALUES (TG_OP, NEW.state, NEW.owner, NEW.epoch); RETURN NULL; END $$"
        ),
        format!(
            "CREATE TRIGGER log_changes AFTER INSERT OR UPDATE ON {} \
             FOR EACH ROW EXECUTE FUNCTION {log}_f()",
            store.table()
        ),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(store.pool())
            .await
            .unwrap();
    }
    tables.tables.push(log.clone());
    tables.functions.push(format!("{log}_f()"));
    let read_log = async |store: &PostgresStore| -> Vec<(String, String, Vec<u8>, i64)> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT op, state, owner, epoch FROM {log} ORDER BY seq"
        )))
        .fetch_all(store.pool())
        .await
        .unwrap()
    };

    let mut locker = lock_row(&store, scope, key).await;
    let mut admin = PgConnection::connect(&support::postgres_url())
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let call = {
        let (store, ran) = (store.clone(), ran.clone());
        tokio::spawn(async move {
            Call::new(&store, scope, key)
                .options(CallOptions::new().lease(Duration::from_secs(30)))
                .run(async {
                    ran.store(true, Ordering::SeqCst);
                    Ok::<u8, Error>(1)
                })
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped_claim = loop {
        if let [claim] = waiting_on_locks(&mut admin, &store).await[..] {
            break claim;
        }
        assert!(
            Instant::now() < deadline,
            "the call's claim never waited on the row lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert!(
        read_log(&store).await.is_empty(),
        "nothing was applied before the drop"
    );
    // Long enough for a cancellation to reach the server, were one sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_drop = waiting_on_locks(&mut admin, &store).await;
    assert!(
        after_drop.contains(&dropped_claim),
        "the dropped claim still waits on the server: {after_drop:?}, was {dropped_claim}"
    );

    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    // The claims that waited for the lock get the row first. The duplicate starts once they
    // have: a statement that arrives just as a row lock is released can overtake those that
    // waited for it, and would then find the record released rather than abandoned.
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_log(&store).await.is_empty()
        || !waiting_on_locks(&mut admin, &store).await.is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the waiting claims did not proceed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let duplicate = Call::new(&store, scope, key)
        .options(
            CallOptions::new()
                .lease(Duration::from_secs(30))
                .wait_timeout(Duration::from_secs(3)),
        )
        .run(async { Ok::<u8, Error>(2) })
        .await;
    let elapsed = started.elapsed();
    let duplicate = duplicate.unwrap_or_else(|error| {
        panic!("the duplicate must not wait out the cancelled call's lease: {error:?}")
    });
    assert_eq!(duplicate.disposition, Disposition::Executed);
    assert!(
        elapsed < Duration::from_secs(2),
        "acquired after {elapsed:?}"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "the cancelled call's body never ran"
    );

    let log = read_log(&store).await;
    assert_eq!(log.len(), 5, "{log:?}");
    let (taken, renewed, released, duplicate) = (&log[0], &log[1], &log[2], &log[3]);
    assert_ne!(
        taken.2, duplicate.2,
        "the first takeover is the dropped call's: {log:?}"
    );
    assert_eq!(
        (taken.0.as_str(), taken.1.as_str()),
        ("UPDATE", "in_progress"),
        "the dropped claim took the record over: {log:?}"
    );
    assert!(taken.3 > i64::try_from(released_epoch).unwrap(), "{log:?}");
    assert_eq!(
        (renewed.1.as_str(), &renewed.2, renewed.3),
        ("in_progress", &taken.2, taken.3),
        "the background claim renewed the same lease: {log:?}"
    );
    assert_eq!(
        (released.1.as_str(), &released.2, released.3),
        ("released", &taken.2, taken.3),
        "and released it: {log:?}"
    );
}
