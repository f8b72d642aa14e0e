#![cfg(feature = "redis")]
//! `RedisStore` against a live server: the conformance suite, the persisted format, unreadable
//! records, round trips per call, and `#[idempotent]` under contention.
//!
//! Every test uses its own key prefix (`support::unique_name`) and deletes its keys when it
//! ends, so runs can repeat and overlap. The server comes from `IDEMPOTENT_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`); without it the tests print one line and skip, unless
//! `IDEMPOTENT_REQUIRE_SERVICES=1`. Raw commands (reading and writing records behind the
//! store's back) go on a connection of the test's own (`RawRedis`), never on the store's.
//!
//! The round-trip test reads the server-global `INFO commandstats`. Every other test in this
//! binary holds a shared lock that the round-trip test takes exclusively, so no test here runs
//! commands during its measurement; traffic from other processes is ruled out by retrying
//! until a measurement window sees nothing but the call under test.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use idempotent_core::key::{Fingerprint, IdempotencyKey};
use idempotent_core::store::{Claim, ClaimRequest, Lease, OwnerId};
use idempotent_core::testing::RawRecords;
use idempotent_core::{Call, CallOptions, Error, IdempotencyStore, RedisStore, idempotent};
use support::redis::{DeleteKeys, RawRecordFields, RawRedis, RawReply, connect_through_proxy};
use support::tcp_proxy::SilentProxy;
use support::{Guarded, acquire, assert_duplicates_run_once, request};
use tokio::sync::RwLock;
use tokio::time::Instant;

/// Shared by every test in this binary; taken exclusively by the round-trip test.
static QUIET: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

const LONG: Duration = Duration::from_secs(60);

/// A key prefix of the test's own.
fn prefix(tag: &str) -> String {
    support::unique_name(&format!("idem-test-{tag}"))
}

async fn connect(tag: &str) -> Option<RedisStore> {
    let url = support::redis_url();
    match RedisStore::builder()
        .key_prefix(prefix(tag))
        .connect(&url)
        .await
    {
        Ok(store) => Some(store),
        Err(error) => support::unavailable("Redis", &url, error),
    }
}

/// The store under test, holding the binary's shared lock and deleting its keys when the test
/// is done with it.
type Shared = Guarded<RedisStore>;

async fn shared(tag: &str) -> Option<Shared> {
    let quiet = QUIET.clone().read_owned().await;
    let store = connect(tag).await?;
    // Deleted before the lock is released (a tuple drops its fields in order).
    let keys = DeleteKeys(store.key_prefix().to_owned());
    Some(Guarded::new(store, (keys, quiet)))
}

/// [`shared`], and a connection of the test's own for raw commands.
async fn shared_with_raw(tag: &str) -> Option<(Shared, RawRedis)> {
    let shared = shared(tag).await?;
    Some((shared, RawRedis::connect().await?))
}

/// A store whose one connection goes through a proxy the test controls, a connection of the
/// test's own straight to the server, and the guard that deletes the store's keys. The caller
/// holds the binary's lock.
async fn proxied(tag: &str) -> Option<(RedisStore, SilentProxy, RawRedis, DeleteKeys)> {
    let prefix = prefix(tag);
    let keys = DeleteKeys(prefix.clone());
    let (store, proxy) = connect_through_proxy(RedisStore::builder().key_prefix(prefix)).await?;
    Some((store, proxy, RawRedis::connect().await?, keys))
}

/// A second store for a test that already holds the lock (taking it twice could deadlock
/// behind a waiting writer).
async fn shared_while_locked(tag: &str) -> Option<Shared> {
    let store = connect(tag).await?;
    let keys = DeleteKeys(store.key_prefix().to_owned());
    Some(Guarded::new(store, keys))
}

idempotent_core::store_conformance_tests!(redis, with_raw_records, async {
    let (shared, redis) = shared_with_raw("conformance").await?;
    let raw: Arc<dyn RawRecords> = Arc::new(RawRecordFields::new(shared.store().clone(), redis));
    Some((Arc::new(shared) as Arc<dyn IdempotencyStore>, raw))
});

/// The record's fields, as `HGETALL` returns them.
async fn fields(redis: &RawRedis, record_key: &str) -> Vec<(String, Vec<u8>)> {
    let reply = redis.command(&[b"HGETALL", record_key.as_bytes()]).await;
    let RawReply::Array(items) = reply else {
        panic!("unexpected HGETALL reply {reply:?}");
    };
    let mut fields: Vec<(String, Vec<u8>)> = items
        .chunks(2)
        .map(|pair| match pair {
            [RawReply::Data(name), RawReply::Data(value)] => {
                (String::from_utf8_lossy(name).into_owned(), value.clone())
            }
            other => panic!("unexpected HGETALL pair {other:?}"),
        })
        .collect();
    fields.sort();
    fields
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    match fields.iter().find(|(n, _)| n == name) {
        Some((_, value)) => value,
        None => panic!("field {name} missing from {fields:?}"),
    }
}

fn number(fields: &[(String, Vec<u8>)], name: &str) -> u64 {
    let text = String::from_utf8_lossy(field(fields, name)).into_owned();
    match text.parse() {
        Ok(n) => n,
        Err(_) => panic!("field {name} is not a number: {text:?}"),
    }
}

fn names(fields: &[(String, Vec<u8>)]) -> Vec<&str> {
    fields.iter().map(|(name, _)| name.as_str()).collect()
}

async fn server_ms(redis: &RawRedis) -> u64 {
    let reply = redis.command(&[b"TIME"]).await;
    let RawReply::Array(parts) = &reply else {
        panic!("unexpected TIME reply {reply:?}");
    };
    let [RawReply::Data(secs), RawReply::Data(micros)] = &parts[..] else {
        panic!("unexpected TIME reply {reply:?}");
    };
    let parse = |bytes: &[u8]| -> u64 { String::from_utf8_lossy(bytes).parse().unwrap() };
    parse(secs) * 1000 + parse(micros) / 1000
}

async fn pttl(redis: &RawRedis, record_key: &str) -> i64 {
    match redis.command(&[b"PTTL", record_key.as_bytes()]).await {
        RawReply::Int(ms) => ms,
        other => panic!("unexpected PTTL reply {other:?}"),
    }
}

/// Key names are `{prefix}:{<hex sha256(len-prefixed scope || key)>}`: a persisted format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_key_format_is_pinned() {
    let _quiet = QUIET.clone().read_owned().await;
    let url = support::redis_url();
    let store = match RedisStore::connect(&url).await {
        Ok(store) => store,
        Err(error) => return support::unavailable("Redis", &url, error).unwrap_or(()),
    };
    assert_eq!(store.key_prefix(), "idem", "the default prefix");
    // Computed independently: sha256(be_u64(len) || scope || be_u64(len) || key).
    assert_eq!(
        store.record_key("scope", "key"),
        "idem:{b5a3bb5dda8aa6577d161934bb19196151a1f9e8912093525d02ae8455fed2f4}"
    );
    assert_eq!(
        store.record_key("payments.charge", "order-42"),
        "idem:{52deff6fac1b5316834c626066030c78e91a0e814ccb5935634eff83b9ebaab6}"
    );
    assert_ne!(store.record_key("a:b", "c"), store.record_key("a", "b:c"));
    assert_ne!(store.record_key("ab", "c"), store.record_key("a", "bc"));
}

/// Invalid prefixes are refused before connecting.
#[tokio::test]
async fn key_prefix_with_braces_is_rejected() {
    for prefix in ["", "a{b", "a}b"] {
        let result = RedisStore::builder()
            .key_prefix(prefix)
            .connect("redis://127.0.0.1:1/")
            .await;
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "prefix {prefix:?}: {result:?}"
        );
    }
}

/// The hash fields of an in-progress, a completed and a released record, and their expiry:
/// a persisted format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_record_layout_is_pinned() {
    let Some((shared, redis)) = shared_with_raw("layout").await else {
        return;
    };
    let store = shared.store();
    let owner = OwnerId::new();
    let fingerprint = Fingerprint::of_bytes(b"request");
    let claim = ClaimRequest {
        fingerprint,
        lease: Duration::from_secs(10),
        ttl: Duration::from_secs(3600),
        ..request("layout", "k", owner)
    };
    let before = server_ms(&redis).await;
    let lease = acquire(store, &claim).await;
    let after = server_ms(&redis).await;
    let record_key = store.record_key("layout", "k");

    let progress = fields(&redis, &record_key).await;
    assert_eq!(
        names(&progress),
        [
            "epoch",
            "expires_at",
            "fingerprint",
            "lease_until",
            "owner",
            "state",
            "v"
        ]
    );
    assert_eq!(field(&progress, "v"), b"1");
    assert_eq!(field(&progress, "state"), b"in_progress");
    // A new record's epoch is the server clock in microseconds (`TIME`).
    let epoch = number(&progress, "epoch");
    assert_eq!(epoch, lease.epoch());
    assert!(
        (before * 1000..=after * 1000 + 1000).contains(&epoch),
        "epoch {epoch} must be the server clock in µs, between {before} and {after} ms"
    );
    assert_eq!(
        field(&progress, "owner"),
        format!("{:032x}", owner.as_u128()).as_bytes()
    );
    assert_eq!(
        field(&progress, "fingerprint"),
        fingerprint.to_hex().as_bytes()
    );
    let lease_until = number(&progress, "lease_until");
    let expires_at = number(&progress, "expires_at");
    assert!(
        (before + 10_000..=after + 10_000).contains(&lease_until),
        "lease_until {lease_until} must be the server's now + 10 s ({before}..{after})"
    );
    assert!((before + 3_600_000..=after + 3_600_000).contains(&expires_at));
    // Redis deletes the record itself once the ttl and the 60 s retention have passed.
    let ttl_left = pttl(&redis, &record_key).await;
    assert!(
        (3_600_000..=3_660_000).contains(&ttl_left),
        "PTTL {ttl_left} must be the ttl plus the retention"
    );

    store
        .complete(&lease, Bytes::from_static(b"\x00result\xff"), LONG)
        .await
        .unwrap();
    let completed = fields(&redis, &record_key).await;
    assert_eq!(
        names(&completed),
        [
            "epoch",
            "expires_at",
            "fingerprint",
            "lease_until",
            "owner",
            "payload",
            "state",
            "v"
        ]
    );
    // The last claim's owner and lease stay as they were.
    assert_eq!(field(&completed, "owner"), field(&progress, "owner"));
    assert_eq!(number(&completed, "lease_until"), lease_until);
    assert_eq!(field(&completed, "state"), b"completed");
    assert_eq!(number(&completed, "epoch"), epoch);
    assert_eq!(field(&completed, "payload"), b"\x00result\xff");
    let ttl_left = pttl(&redis, &record_key).await;
    assert!((60_000..=120_000).contains(&ttl_left), "PTTL {ttl_left}");

    let lease = acquire(store, &request("layout", "released", OwnerId::new())).await;
    store.release(&lease).await.unwrap();
    let released = fields(&redis, &store.record_key("layout", "released")).await;
    assert_eq!(
        names(&released),
        [
            "epoch",
            "expires_at",
            "fingerprint",
            "lease_until",
            "owner",
            "state",
            "v"
        ]
    );
    assert_eq!(field(&released, "state"), b"released");
    assert_eq!(number(&released, "epoch"), lease.epoch());
    let again = acquire(store, &request("layout", "released", OwnerId::new())).await;
    assert!(
        again.epoch() > lease.epoch(),
        "a tombstone keeps the epoch counting"
    );
}

/// Whatever the scope and key hold, the key names under the prefix are the fixed hashed form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_names_never_contain_caller_input() {
    let Some((shared, redis)) = shared_with_raw("names").await else {
        return;
    };
    let store = shared.store();
    let cases = [
        ("scope:{tag}", "{tag}"),
        ("ünïcødé 中文", "ключ 🔑"),
        ("nul", "a\0b"),
        (" spaces ", " a key "),
        ("*?[glob]\\", "*"),
    ];
    for (scope, key) in cases {
        acquire(store, &request(scope, key, OwnerId::new())).await;
    }
    let pattern = format!("{}:*", store.key_prefix());
    let reply = redis
        .command(&[
            b"SCAN",
            b"0",
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            b"10000",
        ])
        .await;
    let RawReply::Array(parts) = reply else {
        panic!("unexpected SCAN reply {reply:?}");
    };
    let [RawReply::Data(_), RawReply::Array(keys)] = &parts[..] else {
        panic!("unexpected SCAN reply {parts:?}");
    };
    let mut found: Vec<String> = keys
        .iter()
        .map(|key| match key {
            RawReply::Data(key) => String::from_utf8(key.clone()).unwrap(),
            other => panic!("unexpected key {other:?}"),
        })
        .collect();
    found.sort();
    let mut expected: Vec<String> = cases
        .iter()
        .map(|(scope, key)| store.record_key(scope, key))
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    for name in &found {
        let digest = name
            .strip_prefix(&format!("{}:{{", store.key_prefix()))
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("key {name:?} is not prefix:{{digest}}"));
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name:?}"
        );
    }
}

/// A timed-out claim retried by the same owner gets the same epoch and a renewed lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_owner_retry_renews_the_lease_with_the_same_epoch() {
    let Some(shared) = shared("retry").await else {
        return;
    };
    let store = shared.store();
    let owner = OwnerId::new();
    let short = ClaimRequest {
        lease: Duration::from_millis(1500),
        ..request("retry", "k", owner)
    };
    let first = acquire(store, &short).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again = acquire(store, &short).await;
    assert_eq!(first, again);
    // The renewed lease runs from the retry, so it is still live after the first would have
    // ended.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    match store.claim(&request("retry", "k", OwnerId::new())).await {
        Ok(Claim::InFlight { retry_after }) => assert!(retry_after <= Duration::from_millis(1500)),
        other => panic!("expected the renewed claim in flight, got {other:?}"),
    }
}

/// A call dropped while its claim is on the wire, after which Redis applies that claim, must
/// not leave the key claimed for a whole lease: the engine gives the claim up in the
/// background, and a duplicate acquires the key at once instead of waiting 30 s.
///
/// How the test makes sure the claim left the store, and was applied only after the drop: the
/// store's one (multiplexed) connection goes through a proxy, which the test makes hold back
/// everything the store sends. The call is polled until the proxy holds its claim script,
/// then dropped, and the record is checked to be still absent (on a connection of the test's
/// own, straight to the server). The proxy then delivers what it held, in order, as a healed
/// network would: the dropped call's claim (which acquires the key, for nobody), followed by
/// whatever the store sent to give it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_cancelled_during_its_claim_does_not_leave_the_key_claimed_for_a_lease() {
    let _quiet = QUIET.clone().read_owned().await;
    let Some((store, proxy, redis, _keys)) = proxied("cancelled-claim").await else {
        return;
    };
    let record_key = store.record_key("cancelled", "k");
    let options = CallOptions::new().lease(Duration::from_secs(30)).ttl(LONG);
    let runs = AtomicUsize::new(0);

    // Hold back whatever the store sends from now on.
    proxy.go_silent();

    // Poll the call until the proxy holds its claim, then drop it.
    {
        let call = Call::new(&store, "cancelled", "k")
            .options(options)
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<u32, Error>(1)
            });
        let mut call = std::pin::pin!(call);
        let mut sent = false;
        for _ in 0..500 {
            tokio::select! {
                biased;
                outcome = &mut call => panic!("the call finished while its claim was held back: {outcome:?}"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            if proxy.held_from_clients() > 0 {
                sent = true;
                break;
            }
        }
        assert!(sent, "the call's claim never left the store");
    }
    assert_eq!(
        redis.command(&[b"EXISTS", record_key.as_bytes()]).await,
        RawReply::Int(0),
        "the claim must not have been applied before the call was dropped"
    );

    // Deliver what was held: Redis now applies the dropped call's claim, then what gives it up.
    proxy.resume();

    // A duplicate with the same 30 s lease gets the key within seconds.
    let duplicate = Call::new(&store, "cancelled", "k")
        .options(options)
        .run(async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, Error>(2)
        });
    let outcome = tokio::time::timeout(Duration::from_secs(5), duplicate)
        .await
        .expect("the duplicate waited for the dropped call's lease")
        .expect("duplicate call");
    assert!(!outcome.is_replayed());
    assert_eq!(outcome.value, 2);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "only the duplicate's body ran"
    );
}

/// `purge_expired` counts only records it deleted, of its own prefix, and leaves live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_expired_records_of_its_prefix() {
    let Some(shared) = shared("purge").await else {
        return;
    };
    let store = shared.store();
    let Some(other) = shared_while_locked("purge-other").await else {
        return;
    };
    for key in ["expired-1", "expired-2"] {
        let lease = acquire(store, &request("purge", key, OwnerId::new())).await;
        store
            .complete(&lease, Bytes::from_static(b"x"), Duration::from_millis(50))
            .await
            .unwrap();
    }
    let live = acquire(store, &request("purge", "live", OwnerId::new())).await;
    store
        .complete(&live, Bytes::from_static(b"x"), LONG)
        .await
        .unwrap();
    let lease = acquire(other.store(), &request("purge", "expired", OwnerId::new())).await;
    other
        .store()
        .complete(&lease, Bytes::from_static(b"x"), Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(store.purge_expired().await.unwrap(), 2);
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "nothing left to purge"
    );
    assert!(matches!(
        store.claim(&request("purge", "live", OwnerId::new())).await,
        Ok(Claim::Completed(_))
    ));
    // The other prefix's record is still there, expired: its next claim continues its epoch.
    let again = acquire(other.store(), &request("purge", "expired", OwnerId::new())).await;
    assert!(again.epoch() > lease.epoch());
    // The purged ones are claimed afresh, with epochs still above every earlier one.
    let fresh = acquire(store, &request("purge", "expired-1", OwnerId::new())).await;
    assert!(fresh.epoch() > lease.epoch());
}

const CORRUPT_NAMESPACE: &str = "redis.corrupt";

#[idempotent(key = "order_id", store = store, skip = "runs", scope = "redis.corrupt")]
async fn corrupt_target(
    store: &RedisStore,
    runs: &AtomicUsize,
    order_id: u64,
) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(order_id)
}

/// Writes one unreadable record (a hash with garbage or missing fields, or a key of another
/// type) straight into Redis where `corrupt_target(order_id)` looks, then checks that the
/// call fails with `Error::Decode` without running the body, twice, and that the record is
/// left as it was.
async fn assert_corrupt_record_is_an_error(
    store: &RedisStore,
    redis: &RawRedis,
    order_id: u64,
    write: &[&[u8]],
    what: &str,
) {
    let key = IdempotencyKey::builder(CORRUPT_NAMESPACE)
        .part(&order_id)
        .finish();
    let record_key = store.record_key(CORRUPT_NAMESPACE, key.as_str());
    let mut command: Vec<&[u8]> = write.to_vec();
    command.insert(1, record_key.as_bytes());
    redis.command(&command).await;

    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        let result = corrupt_target(store, &runs, order_id).await;
        assert!(
            matches!(result, Err(Error::Decode { ref scope, .. }) if scope == CORRUPT_NAMESPACE),
            "{what}: expected Error::Decode, got {result:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "{what}: the body ran");
    let claim = store
        .claim(&request(CORRUPT_NAMESPACE, key.as_str(), OwnerId::new()))
        .await;
    assert!(
        matches!(claim, Err(Error::Decode { .. })),
        "{what}: claim {claim:?}"
    );
    let still_there = redis.command(&[b"EXISTS", record_key.as_bytes()]).await;
    assert_eq!(
        still_there,
        RawReply::Int(1),
        "{what}: the record was removed"
    );
}

/// An unreadable stored record is `Error::Decode`, never "absent": the body does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_records_are_decode_errors_and_the_body_does_not_run() {
    let Some((shared, redis)) = shared_with_raw("corrupt").await else {
        return;
    };
    let store = shared.store();
    let fp = Fingerprint::NONE.to_hex();
    let fp = fp.as_bytes();
    let owner = b"0123456789abcdef0123456789abcdef";
    let far = b"4102444800000"; // 2100-01-01 in Unix ms
    // A readable completed record, and one change each (`None` removes the field).
    let completed: [(&[u8], &[u8]); 6] = [
        (b"v", b"1"),
        (b"state", b"completed"),
        (b"epoch", b"1"),
        (b"fingerprint", fp),
        (b"expires_at", far),
        (b"payload", b"\x011"),
    ];
    let hset = |changes: &[(&'static [u8], Option<&'static [u8]>)]| -> Vec<&[u8]> {
        let mut fields = completed.to_vec();
        for &(name, value) in changes {
            match (fields.iter().position(|(field, _)| *field == name), value) {
                (Some(at), Some(value)) => fields[at].1 = value,
                (Some(at), None) => {
                    fields.remove(at);
                }
                (None, Some(value)) => fields.push((name, value)),
                (None, None) => {}
            }
        }
        let mut command: Vec<&[u8]> = vec![b"HSET"];
        command.extend(fields.into_iter().flat_map(|(name, value)| [name, value]));
        command
    };
    let in_progress: [(&[u8], Option<&[u8]>); 2] =
        [(b"state", Some(b"in_progress")), (b"payload", None)];
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("a string key", vec![b"SET", b"garbage"]),
        ("a list key", vec![b"RPUSH", b"x"]),
        (
            "a hash without record fields",
            vec![b"HSET", b"foo", b"bar"],
        ),
        ("an unknown format version", hset(&[(b"v", Some(b"2"))])),
        ("a missing version", hset(&[(b"v", None)])),
        ("a garbage epoch", hset(&[(b"epoch", Some(b"one"))])),
        ("a garbage expiry", hset(&[(b"expires_at", Some(b"soon"))])),
        (
            "a garbage fingerprint",
            hset(&[(b"fingerprint", Some(b"xyz"))]),
        ),
        (
            "an unknown state",
            hset(&[(b"state", Some(b"zombie")), (b"payload", None)]),
        ),
        (
            "a completed record without payload",
            hset(&[(b"payload", None)]),
        ),
        (
            "an in-progress record with a garbage owner",
            hset(&[
                in_progress[0],
                in_progress[1],
                (b"owner", Some(b"me")),
                (b"lease_until", Some(far)),
            ]),
        ),
        (
            "an in-progress record without a lease",
            hset(&[in_progress[0], in_progress[1], (b"owner", Some(owner))]),
        ),
    ];
    for (order_id, (what, write)) in (1u64..).zip(&cases) {
        assert_corrupt_record_is_an_error(store, &redis, order_id, write, what).await;
    }

    // Writing over a key of another type is refused as unreadable too, not overwritten.
    let key_name = store.record_key("corrupt-cas", "k");
    redis
        .command(&[b"SET", key_name.as_bytes(), b"garbage"])
        .await;
    let lease = Lease::new("corrupt-cas", "k", OwnerId::new(), 1);
    let complete = store.complete(&lease, Bytes::from_static(b"x"), LONG).await;
    assert!(
        matches!(complete, Err(Error::Decode { .. })),
        "{complete:?}"
    );
    let release = store.release(&lease).await;
    assert!(matches!(release, Err(Error::Decode { .. })), "{release:?}");
    let extend = store.extend(&lease, LONG).await;
    assert!(matches!(extend, Err(Error::Decode { .. })), "{extend:?}");
    assert_eq!(
        redis.command(&[b"GET", key_name.as_bytes()]).await,
        RawReply::Data(b"garbage".to_vec())
    );
}

const CALLS: usize = 1_000;

#[idempotent(key = "id", store = store, skip = "runs", lease = "30s", scope = "redis.collapse")]
async fn slow_once(store: RedisStore, runs: Arc<AtomicUsize>, id: u64) -> Result<String, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("result-{id}-run-{run}"))
}

/// 1,000 concurrent `#[idempotent]` calls with one key on `RedisStore`: one execution, and
/// every caller gets its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_idempotent_calls_run_once() {
    let Some(shared) = shared("collapse").await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    assert_duplicates_run_once(CALLS, &runs, "result-7-run-1".to_owned(), || {
        slow_once(shared.store().clone(), runs.clone(), 7)
    })
    .await;
}

/// A `MONITOR` connection: every command the server runs, one line each, tagged with the
/// client that sent it (`[db lua]` for commands run inside scripts).
struct Monitor {
    stream: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Opens a monitor on the server of `url` (`redis://host:port[/db]`; `None` for URLs with
    /// credentials or other schemes, which this small client does not speak).
    fn start(url: &str) -> Option<Monitor> {
        let address = url.strip_prefix("redis://")?.split('/').next()?;
        if address.contains('@') || address.is_empty() {
            return None;
        }
        let mut stream = TcpStream::connect(address).ok()?;
        stream.write_all(b"MONITOR\r\n").ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut ok = String::new();
        reader.read_line(&mut ok).ok()?;
        if ok.trim_end() != "+OK" {
            return None;
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            // Ends when the stream is shut down (EOF or error).
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().push(std::mem::take(&mut line));
            }
        });
        Some(Monitor {
            stream,
            lines,
            reader: Some(reader),
        })
    }

    /// Waits (bounded) until a line containing `marker` arrived.
    async fn wait_for(&self, marker: &str) {
        for _ in 0..500 {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(marker))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("MONITOR never showed {marker:?}");
    }

    /// The commands (lowercase names) `client` sent between the lines holding `from` and
    /// `to`, leaving out the measurement's own `ECHO` and `INFO`.
    fn sent_between(&self, client: &str, from: &str, to: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let tag = format!(" {client}] ");
        let start = lines.iter().position(|l| l.contains(from)).unwrap();
        let end = lines.iter().position(|l| l.contains(to)).unwrap();
        lines[start + 1..end]
            .iter()
            .filter_map(|line| {
                let (_, command) = line.split_once(&tag)?;
                let name = command.split('"').nth(1)?.to_ascii_lowercase();
                (name != "echo" && name != "info").then_some(name)
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The address the server sees the store's connection come from: the proxy's one connection
/// to the server, checked against the server's `CLIENT LIST`.
async fn store_client_address(redis: &RawRedis, proxy: &SilentProxy) -> String {
    let [address] = proxy.upstream_addresses()[..] else {
        panic!(
            "the store should have one connection, the proxy saw {:?}",
            proxy.upstream_addresses()
        );
    };
    let address = address.to_string();
    let list = redis.command(&[b"CLIENT", b"LIST"]).await.text();
    let field = format!("addr={address}");
    assert!(
        list.lines()
            .any(|line| line.split(' ').any(|entry| entry == field)),
        "the server lists no client at {address}: {list}"
    );
    address
}

/// A fresh call costs two round trips (the claim script, the complete script) and a replay
/// one (the claim script returns the payload), counted on the server.
///
/// Two counts: `MONITOR` lists the commands the store's own connection sent (top-level ones,
/// so these are the round trips, whatever else runs on the server; the store connects through
/// a proxy, whose connection to the server is how the test tells the store's connection from
/// the others, and the markers and counts go on a connection of the test's own);
/// `INFO commandstats` counts
/// `EVALSHA` calls and all commands, including those the scripts run inside Redis. The
/// commandstats are global to the server: the other tests of this binary are held off by the
/// lock, and commands from other processes can only add to the counts, so the test measures
/// until one window shows exactly the call's own script calls (bounded in attempts and time).
/// The lease is long, so no heartbeat (every lease/3) falls inside a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_call_is_two_round_trips_and_replay_is_one() {
    let _exclusive = QUIET.clone().write_owned().await;
    let Some((store, proxy, redis, _keys)) = proxied("round-trips").await else {
        return;
    };
    let monitor = Monitor::start(&support::redis_url());
    if monitor.is_none() {
        eprintln!("round trips: no MONITOR for this URL; counting with INFO commandstats only");
    }
    let client = store_client_address(&redis, &proxy).await;
    let echo = async |marker: &str| {
        redis.command(&[b"ECHO", marker.as_bytes()]).await;
    };
    let options = CallOptions::new().lease(LONG).ttl(LONG);
    let call = |key: String| {
        let store = store.clone();
        async move {
            Call::new(&store, "round-trips", &key)
                .options(options)
                .run(async { Ok::<u32, Error>(7) })
                .await
                .unwrap()
        }
    };
    // The scripts were loaded at connect; one call first anyway, so nothing is loaded inside
    // the measurement.
    call("warm-up".to_owned()).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut noisy = Vec::new();
    for attempt in 0..100 {
        let key = format!("k{attempt}");
        let markers = [
            format!("{}-start-{attempt}", store.key_prefix()),
            format!("{}-mid-{attempt}", store.key_prefix()),
            format!("{}-end-{attempt}", store.key_prefix()),
        ];
        let before = redis.commands().await;
        echo(&markers[0]).await;
        let fresh = call(key.clone()).await;
        echo(&markers[1]).await;
        let between = redis.commands().await;
        let replay = call(key).await;
        echo(&markers[2]).await;
        let after = redis.commands().await;
        assert!(!fresh.is_replayed() && replay.is_replayed());

        if let Some(monitor) = &monitor {
            monitor.wait_for(&markers[2]).await;
            let fresh_sent = monitor.sent_between(&client, &markers[0], &markers[1]);
            let replay_sent = monitor.sent_between(&client, &markers[1], &markers[2]);
            assert_eq!(
                fresh_sent,
                ["evalsha", "evalsha"],
                "a fresh call's round trips"
            );
            assert_eq!(replay_sent, ["evalsha"], "a replay's round trips");
        }

        let fresh_cost = between - before;
        let replay_cost = after - between;
        // Fewer script calls than expected cannot come from other traffic.
        assert!(
            fresh_cost.evalsha >= 2 && replay_cost.evalsha >= 1,
            "fewer script calls than a claim and a complete: {fresh_cost:?} / {replay_cost:?}"
        );
        if (
            fresh_cost.evalsha,
            fresh_cost.eval,
            replay_cost.evalsha,
            replay_cost.eval,
        ) == (2, 0, 1, 0)
        {
            println!(
                "round trips: fresh call {fresh_cost:?}, replay {replay_cost:?} (totals include \
                 the commands the scripts run inside Redis; attempt {attempt})"
            );
            return;
        }
        noisy.push((fresh_cost, replay_cost));
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no measurement showed exactly 2 script calls for a fresh call and 1 for a replay; \
         other traffic on the server? (fresh, replay) per attempt: {noisy:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Stores on the application's own client or connection manager

/// Runs one call on `store` twice; the second must be a replay of the first.
async fn runs_once_then_replays(store: &RedisStore, scope: &str) {
    let runs = AtomicUsize::new(0);
    for attempt in 0..2 {
        let outcome = Call::new(store, scope, "k")
            .run(async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(41 + 1)
            })
            .await
            .expect("call");
        assert_eq!(outcome.is_replayed(), attempt == 1, "attempt {attempt}");
        assert_eq!(outcome.into_value(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_connection_manager_shares_it() {
    let _quiet = QUIET.read().await;
    let Some(redis) = RawRedis::connect().await else {
        return;
    };
    let client =
        idempotent_core::stores::redis::redis::Client::open(support::redis_url()).expect("client");
    let mut manager = client
        .get_connection_manager()
        .await
        .expect("the application's manager");
    let prefix = prefix("app-manager");
    let _keys = DeleteKeys(prefix.clone());
    let store = RedisStore::builder()
        .key_prefix(&prefix)
        .connect_with_manager(manager.clone())
        .await
        .expect("build on the manager");
    runs_once_then_replays(&store, "app-manager").await;
    // The record is where the store's prefix says, and the application's manager still
    // works for its own commands.
    let record = store.record_key("app-manager", "k");
    assert_eq!(
        redis.command(&[b"EXISTS", record.as_bytes()]).await,
        RawReply::Int(1)
    );
    let pong: String = idempotent_core::stores::redis::redis::cmd("PING")
        .query_async(&mut manager)
        .await
        .expect("the application's own command");
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_the_applications_client_opens_its_own_connection() {
    let _quiet = QUIET.read().await;
    let Some(_redis) = RawRedis::connect().await else {
        return;
    };
    let client =
        idempotent_core::stores::redis::redis::Client::open(support::redis_url()).expect("client");
    let prefix = prefix("app-client");
    let _keys = DeleteKeys(prefix.clone());
    let store = RedisStore::builder()
        .key_prefix(&prefix)
        .connect_with_client(client)
        .await
        .expect("connect with the client");
    runs_once_then_replays(&store, "app-client").await;
}

#[tokio::test]
async fn a_prefix_with_braces_is_invalid_input_before_any_connection() {
    // The port is closed: a connection attempt would be a store error, not InvalidInput.
    for prefix in ["", "tenant{1}"] {
        match RedisStore::builder()
            .key_prefix(prefix)
            .connect("redis://127.0.0.1:1/")
            .await
        {
            Err(Error::InvalidInput { reason }) => {
                assert!(reason.contains("redis key prefix"), "{prefix:?}: {reason}")
            }
            Err(other) => panic!("{prefix:?}: expected Error::InvalidInput, got {other:?}"),
            Ok(_) => panic!("{prefix:?}: connected"),
        }
    }
}

#[tokio::test]
async fn a_malformed_url_is_invalid_input_before_any_connection() {
    for url in [
        "http://127.0.0.1:6379/",
        "redis://127.0.0.1:port/",
        "127.0.0.1:6379",
    ] {
        match RedisStore::builder().connect(url).await {
            Err(Error::InvalidInput { reason }) => {
                assert!(reason.contains("Redis URL"), "{url}: {reason}")
            }
            Err(other) => panic!("{url}: expected Error::InvalidInput, got {other} ({other:?})"),
            Ok(_) => panic!("{url}: connected"),
        }
    }
}
