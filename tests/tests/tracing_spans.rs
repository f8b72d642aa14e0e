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
