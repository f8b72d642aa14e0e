//! `PostgresStore` when the server drops its connections mid-run (`pg_terminate_backend`):
//! calls fail closed with `Error::Store` while the connections are broken, no body runs twice,
//! and the same store works again afterwards (the pool reconnects).
//!
//! Its own test binary, so that killing this store's connections disturbs no other test.

#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idempotent_core::stores::postgres::sqlx::{self, Connection, PgConnection};
use idempotent_core::{Call, CallOptions, Error, OnInFlight, PostgresStore};
use support::postgres::connect_with;

const WORKERS: u64 = 4;
/// Each worker's calls are bounded in count and in time.
const CALLS_PER_WORKER: u64 = 400;
const RUN_FOR: Duration = Duration::from_secs(3);
const KILLS: usize = 3;

/// How often each key's body ran.
type Executions = Arc<Mutex<HashMap<u64, usize>>>;

async fn call(store: &PostgresStore, executions: &Executions, id: u64) -> Result<bool, Error> {
    let key = id.to_string();
    // Reject rather than wait: a key whose completion was lost stays claimed for the lease
    // (30 s), and the test must not wait that out.
    let options = CallOptions::new()
        .lease(Duration::from_secs(30))
        .on_in_flight(OnInFlight::Reject);
    let outcome = Call::new(store, "faults", &key)
        .options(options)
        .run(async {
            *executions.lock().unwrap().entry(id).or_default() += 1;
            Ok::<String, Error>(format!("value-{id}"))
        })
        .await?;
    assert_eq!(
        outcome.value,
        format!("value-{id}"),
        "a replay returns the first result"
    );
    Ok(outcome.is_replayed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_fail_closed_and_the_same_store_recovers() {
    // The store's connections carry its table's name as their application name, so the test
    // can kill exactly them.
    let builder = PostgresStore::builder().max_connections(4);
    let Some((store, _tables)) = connect_with("idem_fault", builder).await else {
        return;
    };
    let application = store.table().to_owned();
    let mut admin = PgConnection::connect(&support::postgres_url())
        .await
        .unwrap();
    let executions: Executions = Arc::default();

    // Healthy: a few fresh calls, then their replays.
    for id in 0..10 {
        assert!(!call(&store, &executions, id).await.unwrap());
        assert!(call(&store, &executions, id).await.unwrap());
    }

    // Workers call continuously (fresh keys, and replays of the first ten) while the server
    // kills the store's connections a few times.
    let running = Arc::new(AtomicBool::new(true));
    let store_errors = Arc::new(AtomicUsize::new(0));
    let failed_keys = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (store, executions, running) = (store.clone(), executions.clone(), running.clone());
            let (store_errors, failed_keys) = (store_errors.clone(), failed_keys.clone());
            tokio::spawn(async move {
                for i in 0..CALLS_PER_WORKER {
                    if !running.load(Ordering::SeqCst) || started.elapsed() > RUN_FOR {
                        break;
                    }
                    let id = if i % 5 == 4 {
                        i % 10
                    } else {
                        1_000 + worker * CALLS_PER_WORKER + i
                    };
                    match call(&store, &executions, id).await {
                        Ok(_) => {}
                        Err(Error::Store { backend, .. }) => {
                            assert_eq!(backend, "postgres");
                            store_errors.fetch_add(1, Ordering::SeqCst);
                            failed_keys.lock().unwrap().push(id);
                        }
                        Err(other) => panic!("while connections drop, calls fail closed with Error::Store; got {other:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    let mut killed = 0i64;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(400)).await;
        killed += sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) \
             FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    }
    running.store(false, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(killed > 0, "no connection of the store was killed");
    let store_errors = store_errors.load(Ordering::SeqCst);
    assert!(
        store_errors > 0,
        "{killed} killed connections must fail some calls"
    );

    // The same store recovers: 20 consecutive fresh calls succeed (bounded attempts).
    let mut consecutive = 0;
    let mut next_id = 100_000;
    let deadline = Instant::now() + Duration::from_secs(20);
    while consecutive < 20 {
        assert!(
            Instant::now() < deadline && next_id < 100_200,
            "the store did not recover"
        );
        match call(&store, &executions, next_id).await {
            Ok(false) => consecutive += 1,
            Ok(true) => panic!("a fresh key cannot replay"),
            Err(Error::Store { .. }) => consecutive = 0,
            Err(other) => panic!("unexpected error while recovering: {other:?}"),
        }
        next_id += 1;
    }

    // Retrying every key that failed never runs a body a second time: the claim had failed
    // (it runs now, for the first time), or the completion had failed (the key is still
    // claimed: in flight), or the completion had landed (replay).
    let failed_keys = failed_keys.lock().unwrap().clone();
    for &id in &failed_keys {
        match call(&store, &executions, id).await {
            Ok(_) | Err(Error::InFlight { .. }) => {}
            Err(other) => panic!("retrying key {id} after recovery: {other:?}"),
        }
    }
    let executions = executions.lock().unwrap();
    let twice: Vec<_> = executions.iter().filter(|&(_, &runs)| runs > 1).collect();
    assert!(twice.is_empty(), "bodies ran more than once: {twice:?}");
    eprintln!(
        "faults: {killed} connections killed, {store_errors} calls failed closed, {} keys ran",
        executions.len()
    );
}
