//! Replay: one execution per key and scope, the first result replayed to every duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use idempotent_core::{
    Disposition, Error, IdempotencyStore, KeyPart, KeyWriter, MemoryStore, idempotent, observe,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    order_id: u64,
    amount: u64,
    /// Which execution of the body produced this receipt (1 for the first).
    run: usize,
}

#[idempotent(key = "order_id", store = store, skip = "runs")]
async fn charge(
    store: &MemoryStore,
    runs: &AtomicUsize,
    order_id: u64,
    amount: u64,
) -> Result<Receipt, Error> {
    let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Receipt {
        order_id,
        amount,
        run,
    })
}

#[tokio::test]
async fn same_key_runs_body_once_and_every_duplicate_replays_an_equal_value() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (first, how) = observe(charge(&store, &runs, 42, 1_999)).await;
    let first = first.unwrap();
    assert_eq!(how, Some(Disposition::Executed));
    assert_eq!(first.run, 1);

    for _ in 0..5 {
        let (again, how) = observe(charge(&store, &runs, 42, 1_999)).await;
        assert_eq!(again.unwrap(), first);
        assert_eq!(how, Some(Disposition::Replayed));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn different_key_runs_the_body_again() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (a, how_a) = observe(charge(&store, &runs, 1, 100)).await;
    let (b, how_b) = observe(charge(&store, &runs, 2, 100)).await;

    assert_eq!(how_a, Some(Disposition::Executed));
    assert_eq!(how_b, Some(Disposition::Executed));
    assert_eq!(a.unwrap().run, 1);
    assert_eq!(b.unwrap().run, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(store.len(), 2);
}

#[idempotent(key = "id", store = store, skip = "runs", scope = "replay.scope_a")]
async fn in_scope_a(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[idempotent(key = "id", store = store, skip = "runs", scope = "replay.scope_b")]
async fn in_scope_b(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id)
}

#[tokio::test]
async fn same_key_in_a_different_scope_runs_the_body_again() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let (_, how_a) = observe(in_scope_a(&store, &runs, 7)).await;
    let (_, how_b) = observe(in_scope_b(&store, &runs, 7)).await;
    assert_eq!(how_a, Some(Disposition::Executed));
    assert_eq!(how_b, Some(Disposition::Executed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Each scope then replays its own record.
    let (_, how_a) = observe(in_scope_a(&store, &runs, 7)).await;
    let (_, how_b) = observe(in_scope_b(&store, &runs, 7)).await;
    assert_eq!(how_a, Some(Disposition::Replayed));
    assert_eq!(how_b, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn same_key_in_a_different_store_runs_the_body_again() {
    let store_a = MemoryStore::new();
    let store_b = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    charge(&store_a, &runs, 1, 100).await.unwrap();
    charge(&store_b, &runs, 1, 100).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!((store_a.len(), store_b.len()), (1, 1));
}

/// Generates one test per falsy value: the body runs once and the duplicate replays an equal
/// value (a falsy payload must not be mistaken for "no record").
macro_rules! falsy_result_replays {
    ($($test:ident: $ty:ty = $value:expr;)*) => {$(
        #[tokio::test]
        async fn $test() {
            // Nested in each test, so it names its scope; each test has its own store.
            #[idempotent(key = "id", store = store, skip = "runs", scope = "replay.falsy")]
            async fn falsy(store: &MemoryStore, runs: &AtomicUsize, id: u32) -> Result<$ty, Error> {
                let _ = id;
                runs.fetch_add(1, Ordering::SeqCst);
                Ok($value)
            }

            let store = MemoryStore::new();
            let runs = AtomicUsize::new(0);
            let (first, how_first) = observe(falsy(&store, &runs, 1)).await;
            let (second, how_second) = observe(falsy(&store, &runs, 1)).await;
            let expected: $ty = $value;
            assert_eq!(first.unwrap(), expected);
            assert_eq!(second.unwrap(), expected);
            assert_eq!(how_first, Some(Disposition::Executed));
            assert_eq!(how_second, Some(Disposition::Replayed));
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        }
    )*};
}

falsy_result_replays! {
    unit_result_replays_and_body_runs_once: () = ();
    none_result_replays_and_body_runs_once: Option<u64> = None;
    zero_result_replays_and_body_runs_once: u64 = 0;
    false_result_replays_and_body_runs_once: bool = false;
    empty_string_result_replays_and_body_runs_once: String = String::new();
    empty_vec_result_replays_and_body_runs_once: Vec<u32> = vec![];
    empty_map_result_replays_and_body_runs_once: BTreeMap<String, u32> = BTreeMap::new();
}

#[tokio::test]
async fn same_key_with_a_different_argument_is_payload_mismatch() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let first = charge(&store, &runs, 42, 1_999).await.unwrap();
    let mismatch = charge(&store, &runs, 42, 5).await;
    assert!(
        matches!(&mismatch, Err(Error::PayloadMismatch { scope }) if scope == "replay::charge"),
        "{mismatch:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The original request still replays.
    assert_eq!(charge(&store, &runs, 42, 1_999).await.unwrap(), first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[idempotent(key = "id", store = store, skip = "runs, trace_id")]
async fn with_skipped_argument(
    store: &MemoryStore,
    runs: &AtomicUsize,
    id: u64,
    amount: u64,
    trace_id: String,
) -> Result<u64, Error> {
    let _ = trace_id;
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(id + amount)
}

#[tokio::test]
async fn skipped_argument_difference_is_not_a_payload_mismatch() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let first = with_skipped_argument(&store, &runs, 1, 10, "trace-a".into()).await;
    let (second, how) = observe(with_skipped_argument(
        &store,
        &runs,
        1,
        10,
        "trace-b".into(),
    ))
    .await;
    assert_eq!(first.unwrap(), 11);
    assert_eq!(second.unwrap(), 11);
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A fingerprinted argument (not skipped) still counts.
    assert!(matches!(
        with_skipped_argument(&store, &runs, 1, 99, "trace-a".into()).await,
        Err(Error::PayloadMismatch { .. })
    ));
}

struct RefundRequest {
    order_id: u64,
    amount: u64,
}

impl KeyPart for RefundRequest {
    fn write_key_part(&self, out: &mut KeyWriter<'_>) {
        (self.order_id, self.amount).write_key_part(out);
    }
}

#[idempotent(key = "request.order_id", store = store, skip = "runs")]
async fn refund_request(
    store: &MemoryStore,
    runs: &AtomicUsize,
    request: &RefundRequest,
) -> Result<u64, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(request.amount)
}

#[tokio::test]
async fn field_path_key_with_a_different_other_field_is_a_payload_mismatch() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    let first = RefundRequest {
        order_id: 7,
        amount: 100,
    };
    let other_amount = RefundRequest {
        order_id: 7,
        amount: 5,
    };

    assert_eq!(refund_request(&store, &runs, &first).await.unwrap(), 100);
    let mismatch = refund_request(&store, &runs, &other_amount).await;
    assert!(
        matches!(&mismatch, Err(Error::PayloadMismatch { .. })),
        "the rest of `request` is fingerprinted: {mismatch:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The original request still replays.
    let (again, how) = observe(refund_request(&store, &runs, &first)).await;
    assert_eq!(again.unwrap(), 100);
    assert_eq!(how, Some(Disposition::Replayed));
}

static DEFAULT_STORE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "order_id, action", scope = "replay.default_store.charge")]
async fn charge_in_default_store(
    order_id: u64,
    action: &str,
    amount: u64,
) -> Result<String, Error> {
    DEFAULT_STORE_RUNS.fetch_add(1, Ordering::SeqCst);
    // `?` on the function's own error type works inside the body.
    let factor: u64 = "5".parse().map_err(|_| Error::LeaseLost)?;
    Ok(format!("{order_id}-{action}-{}", amount * factor))
}

#[tokio::test]
async fn function_without_store_option_replays_through_the_process_default_store() {
    let first = charge_in_default_store(1, "capture", 5).await.unwrap();
    let (second, how) = observe(charge_in_default_store(1, "capture", 5)).await;
    assert_eq!(first, "1-capture-25");
    assert_eq!(second.unwrap(), first);
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(DEFAULT_STORE_RUNS.load(Ordering::SeqCst), 1);
    assert!(matches!(
        charge_in_default_store(1, "capture", 6).await,
        Err(Error::PayloadMismatch { .. })
    ));
}

struct Service {
    store: Arc<dyn IdempotencyStore>,
    tenant: String,
    runs: AtomicUsize,
    count: u32,
}

impl Service {
    fn new(store: Arc<dyn IdempotencyStore>, tenant: &str) -> Self {
        Service {
            store,
            tenant: tenant.to_owned(),
            runs: AtomicUsize::new(0),
            count: 0,
        }
    }

    #[idempotent(scope = "replay.lookup", key = "id", store = self.store)]
    async fn lookup(&self, id: u32) -> Result<u32, Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(id * 10)
    }

    #[idempotent(scope = "replay.bump", key = "id", store = self.store)]
    async fn bump(&mut self, id: u32) -> Result<u32, Error> {
        self.count += 1;
        Ok(self.count + id)
    }

    #[idempotent(scope = "replay.per_tenant", key = "self.tenant, id", store = self.store)]
    async fn per_tenant(&self, id: u32) -> Result<String, Error> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{}-{id}", self.tenant))
    }
}

#[tokio::test]
async fn method_taking_ref_self_with_store_field_replays() {
    let service = Service::new(Arc::new(MemoryStore::new()), "acme");

    assert_eq!(service.lookup(3).await.unwrap(), 30);
    let (again, how) = observe(service.lookup(3)).await;
    assert_eq!(again.unwrap(), 30);
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(service.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn method_taking_mut_self_with_store_field_replays() {
    let mut service = Service::new(Arc::new(MemoryStore::new()), "acme");

    assert_eq!(service.bump(1).await.unwrap(), 2);
    assert_eq!(service.bump(1).await.unwrap(), 2);
    assert_eq!(service.count, 1, "the body ran once");
    assert_eq!(service.bump(5).await.unwrap(), 7);
    assert_eq!(service.count, 2);
}

#[tokio::test]
async fn self_field_in_key_scopes_records_per_tenant() {
    let store: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
    let acme = Service::new(store.clone(), "acme");
    let globex = Service::new(store, "globex");

    assert_eq!(acme.per_tenant(1).await.unwrap(), "acme-1");
    assert_eq!(globex.per_tenant(1).await.unwrap(), "globex-1");
    assert_eq!(acme.per_tenant(1).await.unwrap(), "acme-1");
    assert_eq!(acme.runs.load(Ordering::SeqCst), 1);
    assert_eq!(globex.runs.load(Ordering::SeqCst), 1);
}

#[idempotent(key = "id", store = store, skip = "runs")]
async fn echo<T>(store: &MemoryStore, runs: &AtomicUsize, id: u32, value: T) -> Result<T, Error>
where
    T: KeyPart + Serialize + DeserializeOwned,
{
    let _ = id;
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(value)
}

#[tokio::test]
async fn generic_function_replays_for_each_instantiation() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let first = echo(&store, &runs, 1, String::from("hello")).await.unwrap();
    let (second, how) = observe(echo(&store, &runs, 1, String::from("hello"))).await;
    assert_eq!(first, "hello");
    assert_eq!(second.unwrap(), "hello");
    assert_eq!(how, Some(Disposition::Replayed));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let number = echo(&store, &runs, 2, vec![1u64, 2, 3]).await.unwrap();
    let number_again = echo(&store, &runs, 2, vec![1u64, 2, 3]).await.unwrap();
    assert_eq!(number, vec![1, 2, 3]);
    assert_eq!(number_again, number);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[idempotent(key = "id", store = store)]
async fn make<T>(store: &MemoryStore, id: u64) -> Result<T, Error>
where
    T: Default + Serialize + DeserializeOwned,
{
    let _ = id;
    Ok(T::default())
}

#[tokio::test]
async fn generic_instantiations_do_not_replay_each_others_results() {
    let store = MemoryStore::new();
    assert_eq!(make::<u64>(&store, 3).await.unwrap(), 0);
    // `0` read back as an `Option<u64>` would be `Some(0)`, a value this body never returns.
    let other = make::<Option<u64>>(&store, 3).await;
    assert!(
        matches!(&other, Err(Error::PayloadMismatch { .. })),
        "another instantiation with the same key must not replay: {other:?}"
    );
    // Each instantiation still replays its own record.
    let (again, how) = observe(make::<u64>(&store, 3)).await;
    assert_eq!(again.unwrap(), 0);
    assert_eq!(how, Some(Disposition::Replayed));
}

#[idempotent(key = "id", store = store)]
async fn scaled<const FACTOR: u64>(store: &MemoryStore, id: u64) -> Result<u64, Error> {
    Ok(id * FACTOR)
}

#[idempotent(key = "id", store = store)]
async fn labelled(
    store: &MemoryStore,
    id: u64,
    label: impl KeyPart + ToString,
) -> Result<String, Error> {
    Ok(format!("{id}-{}", label.to_string()))
}

#[tokio::test]
async fn const_and_impl_trait_instantiations_do_not_replay_each_others_results() {
    let store = MemoryStore::new();
    assert_eq!(scaled::<2>(&store, 3).await.unwrap(), 6);
    assert!(matches!(
        scaled::<3>(&store, 3).await,
        Err(Error::PayloadMismatch { .. })
    ));

    // `7u8` and `7u64` encode the same as key parts; the argument's type tells them apart.
    assert_eq!(labelled(&store, 1, 7_u8).await.unwrap(), "1-7");
    assert!(matches!(
        labelled(&store, 1, 7_u64).await,
        Err(Error::PayloadMismatch { .. })
    ));
    assert_eq!(labelled(&store, 1, 7_u8).await.unwrap(), "1-7");
}

#[tokio::test]
async fn record_lands_in_the_store_passed_as_argument() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    assert!(store.is_empty());
    charge(&store, &runs, 3, 1).await.unwrap();
    assert_eq!(store.len(), 1);
}

struct Orders;
struct Refunds;

impl Orders {
    #[idempotent(scope = "orders.get", key = "id", store = store)]
    async fn get(&self, store: &MemoryStore, id: u64) -> Result<String, Error> {
        Ok(format!("order-{id}"))
    }
}

impl Refunds {
    #[idempotent(scope = "refunds.get", key = "id", store = store)]
    async fn get(&self, store: &MemoryStore, id: u64) -> Result<String, Error> {
        Ok(format!("refund-{id}"))
    }
}

#[tokio::test]
// Methods must name their scope (a compile error otherwise, see
// ui/fail/method_without_scope.rs), so same-named methods never share records.
async fn same_named_methods_of_different_types_do_not_share_records() {
    let store = MemoryStore::new();
    assert_eq!(Orders.get(&store, 1).await.unwrap(), "order-1");
    assert_eq!(Refunds.get(&store, 1).await.unwrap(), "refund-1");
}

async fn ship_flow(store: &MemoryStore, id: u64) -> Result<String, Error> {
    #[idempotent(key = "id", store = store, scope = "replay.ship_flow.step")]
    async fn step(store: &MemoryStore, id: u64) -> Result<String, Error> {
        Ok(format!("shipped-{id}"))
    }
    step(store, id).await
}

async fn refund_flow(store: &MemoryStore, id: u64) -> Result<String, Error> {
    #[idempotent(key = "id", store = store, scope = "replay.refund_flow.step")]
    async fn step(store: &MemoryStore, id: u64) -> Result<String, Error> {
        Ok(format!("refunded-{id}"))
    }
    step(store, id).await
}

#[tokio::test]
// Without `scope`, both `step`s would default to `replay::step`; that is a compile error
// (ui/fail/nested_fn_without_scope.rs, ui/fail/nested_fn_shadowing_module_fn.rs), so nested
// functions with the same name never share records.
async fn nested_functions_with_the_same_name_and_their_own_scopes_do_not_share_records() {
    let store = MemoryStore::new();
    assert_eq!(ship_flow(&store, 1).await.unwrap(), "shipped-1");
    assert_eq!(refund_flow(&store, 1).await.unwrap(), "refunded-1");
    assert_eq!(store.len(), 2);
    assert_eq!(ship_flow(&store, 1).await.unwrap(), "shipped-1");
}
