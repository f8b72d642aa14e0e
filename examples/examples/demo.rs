//! A tour of `#[idempotent]` on the in-memory default store: duplicates, concurrent retries,
//! payload mismatches, failures that retry, and in-flight rejection.
//!
//! Run it with `cargo run -p idempotent-examples --example demo`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use idempotent_core::{Disposition, Error, idempotent, observe};
use serde::{Deserialize, Serialize};

/// Counts how often each body really ran, so the demo can show it.
static CHARGES_RUN: AtomicU32 = AtomicU32::new(0);
static WEBHOOKS_RUN: AtomicU32 = AtomicU32::new(0);
static EMAILS_ATTEMPTED: AtomicU32 = AtomicU32::new(0);
static EXPORTS_RUN: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
}

/// A payment: one charge per (order, action). `amount_cents` is not part of the key, so it is
/// fingerprinted: a retry that changes it is rejected instead of replaying the old receipt.
#[idempotent(key = "order_id, action", ttl = "24h")]
async fn charge(order_id: u64, action: &str, amount_cents: u64) -> Result<Receipt, Error> {
    let n = CHARGES_RUN.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(20)).await; // the payment provider's latency
    Ok(Receipt {
        charge_id: format!("ch_{order_id}_{n}"),
        amount_cents,
    })
}

/// A webhook delivered at least once: the event id is the key.
#[idempotent(key = "event_id", ttl = "72h", lease = "10s")]
async fn handle_webhook(event_id: &str) -> Result<u32, Error> {
    WEBHOOKS_RUN.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(200)
}

#[derive(Debug)]
enum EmailError {
    ProviderDown,
    Idempotency(Error),
}

impl std::fmt::Display for EmailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmailError::ProviderDown => f.write_str("email provider down"),
            EmailError::Idempotency(error) => write!(f, "{error}"),
        }
    }
}

impl From<Error> for EmailError {
    fn from(error: Error) -> Self {
        EmailError::Idempotency(error)
    }
}

/// Fails on its first attempt. Errors are not stored, so the retry runs the body again.
#[idempotent(key = "user_id")]
async fn send_welcome_email(user_id: u64) -> Result<(), EmailError> {
    if EMAILS_ATTEMPTED.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(EmailError::ProviderDown);
    }
    let _ = user_id;
    Ok(())
}

/// A slow job where a duplicate should be told to come back later rather than wait.
#[idempotent(key = "report_id", on_in_flight = "reject")]
async fn export_report(report_id: u64) -> Result<String, Error> {
    EXPORTS_RUN.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("report-{report_id}.csv"))
}

fn label(disposition: Option<Disposition>) -> &'static str {
    match disposition {
        Some(Disposition::Executed) => "ran",
        Some(Disposition::Replayed) => "replayed",
        None => "no call",
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("== 1. a payment retried by a client that timed out");
    for attempt in 1..=3 {
        let (receipt, how) = observe(charge(1001, "capture", 4_999)).await;
        println!("  attempt {attempt}: {:<8} {:?}", label(how), receipt?);
    }
    println!(
        "  the charge body ran {} time(s)",
        CHARGES_RUN.load(Ordering::SeqCst)
    );

    println!("\n== 2. the same retry with a different amount");
    match charge(1001, "capture", 1).await {
        Err(Error::PayloadMismatch { scope }) => {
            println!("  rejected: payload mismatch in `{scope}` (HTTP would answer 422)")
        }
        other => println!("  unexpected: {other:?}"),
    }

    println!("\n== 3. 100 concurrent deliveries of one webhook");
    let replayed = Arc::new(AtomicU32::new(0));
    let mut deliveries = Vec::new();
    for _ in 0..100 {
        let replayed = Arc::clone(&replayed);
        deliveries.push(tokio::spawn(async move {
            let (status, how) = observe(handle_webhook("evt_42")).await;
            if how == Some(Disposition::Replayed) {
                replayed.fetch_add(1, Ordering::SeqCst);
            }
            status
        }));
    }
    for delivery in deliveries {
        let status = delivery.await??;
        assert_eq!(status, 200);
    }
    println!(
        "  body ran {} time(s); {} deliveries waited for it and got its result",
        WEBHOOKS_RUN.load(Ordering::SeqCst),
        replayed.load(Ordering::SeqCst)
    );

    println!("\n== 4. a failure is not stored, so the retry runs");
    let first = send_welcome_email(7).await;
    match &first {
        Err(error) => println!("  first attempt:  failed: {error}"),
        Ok(()) => println!("  first attempt:  unexpected success"),
    }
    let (second, how) = observe(send_welcome_email(7)).await;
    println!("  second attempt: {:<8} {second:?}", label(how));
    let (third, how) = observe(send_welcome_email(7)).await;
    println!("  third attempt:  {:<8} {third:?}", label(how));

    println!("\n== 5. a duplicate of a slow job, rejected while the first runs");
    let first = tokio::spawn(export_report(9));
    tokio::time::sleep(Duration::from_millis(20)).await;
    match export_report(9).await {
        // `retry_after` is the time left on the first call's lease (30 s by default): the
        // longest a client might have to wait, not an estimate of the job's length.
        Err(Error::InFlight { retry_after }) => println!(
            "  duplicate rejected: in flight (HTTP would answer 409); the first call's lease \
             has {:.1}s left, so retry within that (its result replays as soon as it is \
             recorded), or wait with on_in_flight = \"wait\"",
            retry_after.as_secs_f64()
        ),
        other => println!("  unexpected: {other:?}"),
    }
    let file = first.await??;
    let (again, how) = observe(export_report(9)).await;
    println!(
        "  first call produced {file}; a later call {} {:?}",
        label(how),
        again?
    );
    println!(
        "  the export body ran {} time(s)",
        EXPORTS_RUN.load(Ordering::SeqCst)
    );

    println!("\n== next: the same on a store that outlives this process");
    for (example, what) in [
        ("sqlite", "a durable file on one node"),
        ("redis", "shared by every instance, fast"),
        ("postgres", "shared and durable"),
        ("transactional", "the result committed with your own writes"),
        ("tiered", "PostgreSQL decides, Redis serves replays"),
    ] {
        println!("  cargo run -p idempotent-examples --example {example:<13} # {what}");
    }
    Ok(())
}
