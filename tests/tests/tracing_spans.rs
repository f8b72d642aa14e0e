//! Every call runs in an `idempotent.call` span that records its scope, epoch and disposition,
//! and nothing a call logs carries its key, a key part or a payload.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotent_core::key::IdempotencyKey;
use idempotent_core::{Call, CallOptions, Error, MemoryStore, OnInFlight, idempotent};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Every field value a span or event carried, by field name, in order.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn values(&self, name: &str) -> Vec<String> {
        let fields = self.0.lock().unwrap();
        fields
            .iter()
            .filter(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn contains_text(&self, text: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, value)| value.contains(text))
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .lock()
            .unwrap()
            .push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .lock()
            .unwrap()
            .push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Seen {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        self.0
            .lock()
            .unwrap()
            .push(("span".to_owned(), attrs.metadata().name().to_owned()));
        attrs.record(&mut self.clone());
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
        values.record(&mut self.clone());
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        event.record(&mut self.clone());
    }
}

const SECRET_ORDER: &str = "order-4242-secret";

#[idempotent(key = "order", store = store, scope = "tracing.charge")]
async fn charge(store: &MemoryStore, order: &str, amount: u64) -> Result<String, Error> {
    Ok(format!("receipt-payload-{amount}"))
}

#[tokio::test]
async fn every_call_has_a_span_with_its_scope_epoch_and_disposition_and_no_key() {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let store = MemoryStore::new();
    charge(&store, SECRET_ORDER, 5).await.unwrap();
    charge(&store, SECRET_ORDER, 5).await.unwrap();
    assert!(matches!(
        charge(&store, SECRET_ORDER, 6).await,
        Err(Error::PayloadMismatch { .. })
    ));

    // A duplicate rejected while the first call still runs.
    let key = IdempotencyKey::builder("tracing.slow")
        .part(SECRET_ORDER)
        .finish();
    let slow = Call::new(&store, "tracing.slow", key.as_str());
    let options = CallOptions::new().on_in_flight(OnInFlight::Reject);
    let (first, second) = tokio::join!(
        slow.run(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Error>(1u8)
        }),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            slow.options(options)
                .run(async { Ok::<_, Error>(2u8) })
                .await
        }
    );
    assert_eq!(first.unwrap().value, 1);
    assert!(matches!(second, Err(Error::InFlight { .. })));

    let spans = seen.values("span");
    assert_eq!(
        spans
            .iter()
            .filter(|name| *name == "idempotent.call")
            .count(),
        5,
        "one span per call: {spans:?}"
    );
    assert_eq!(
        seen.values("disposition")
            .iter()
            .filter(|value| !value.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|pair| pair[0].clone())
            .collect::<Vec<_>>(),
        ["executed", "replayed", "mismatch", "rejected", "executed"],
        "each call's disposition, on its span and its final event"
    );
    assert!(seen.values("scope").contains(&"tracing.charge".to_owned()));
    assert!(
        !seen.values("epoch").is_empty(),
        "the epoch of an executed call"
    );

    assert!(!seen.contains_text(SECRET_ORDER), "a key part was logged");
    assert!(!seen.contains_text(key.as_str()), "a key was logged");
    assert!(
        !seen.contains_text("receipt-payload"),
        "a payload was logged"
    );
}

/// The HTTP layer reports each claim, replay, conflict and mismatch as an event, and no event
/// or span carries the client's key, the `Authorization` header or the request body.
#[cfg(feature = "http")]
#[tokio::test]
async fn the_http_layer_reports_claims_replays_conflicts_and_mismatches_without_keys_principals_or_bodies()
 {
    use support::http::{App, client, read};

    const KEY: &str = "client-key-5c1e9b";
    const TOKEN: &str = "Bearer token-8f27d4";
    const ITEM: &str = "body-item-3a6f0e";

    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::Targets;

    // A current-thread runtime: the server's tasks run on this thread, under this subscriber,
    // which keeps what this library reports (not the HTTP client's and server's own events).
    let seen = Seen::default();
    let ours = Targets::new().with_target("idempotent_core", tracing::Level::TRACE);
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(seen.clone().with_filter(ours)),
    );
    let app = App::start(Arc::new(MemoryStore::new()), |layer| layer).await;
    let client = client();
    let post = |key: &str, quantity: u32, delay_ms: u64| {
        client
            .post(app.url("/orders"))
            .header("idempotency-key", key)
            .header("authorization", TOKEN)
            .json(&serde_json::json!({"item": ITEM, "quantity": quantity, "delay_ms": delay_ms}))
            .send()
    };

    let first = read(post(KEY, 1, 0).await.unwrap()).await;
    assert_eq!(first.0.as_u16(), 201);
    let replay = read(post(KEY, 1, 0).await.unwrap()).await;
    assert_eq!(replay.2, first.2);
    let mismatch = read(post(KEY, 2, 0).await.unwrap()).await;
    assert_eq!(mismatch.0.as_u16(), 422);
    let slow_key = format!("{KEY}-slow");
    let (slow, conflict) = tokio::join!(post(&slow_key, 1, 400), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        post(&slow_key, 1, 400).await
    });
    assert_eq!(slow.unwrap().status().as_u16(), 201);
    assert_eq!(conflict.unwrap().status().as_u16(), 409);

    let messages = seen.values("message");
    for expected in [
        "idempotency key claimed; running the request",
        "replayed a stored response",
        "mismatch: key reused with a different request",
        "conflict: a request with this key is in flight",
    ] {
        assert!(
            messages.iter().any(|message| message == expected),
            "no event {expected:?} among {messages:?}"
        );
    }
    for secret in [KEY, "token-8f27d4", ITEM] {
        assert!(
            !seen.contains_text(secret),
            "{secret:?} reached the logs: {:?}",
            seen.0.lock().unwrap()
        );
    }
}
