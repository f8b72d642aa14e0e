#![cfg(feature = "nats")]
//! The consumer through a NATS server restart mid-stream: the client reconnects, the
//! adapter pulls again, unacknowledged messages come back, and each order still takes effect
//! once.
//!
//! This binary stops the local `nats-server` (by its process id), which breaks every other
//! client of it, so it holds this one test only (cargo runs test binaries one at a time). A
//! guard starts the server again, as `.ci/run` does, even when the test fails. Only the local
//! server is touched.

use std::time::Duration;

use idempotent_core::consumer::nats::JetStream;
use support::brokers::nats::{self, DeleteStreams, RestartOnDrop};
use support::brokers::{Effects, eventually, orders, worker_settings};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_takes_effect_once_through_a_server_restart() {
    if !nats::is_local() {
        support::skip("the NATS restart test restarts only the local server");
        return;
    }
    let Some(client) = nats::connect().await else {
        return;
    };
    let Some(effects) = Effects::new("consumer_nats_restart").await else {
        return;
    };
    let stream = support::unique_name("idem_orders");
    let subject = format!("{stream}.orders");
    nats::create_stream(&client, &stream, vec![subject.clone()]).await;
    let _cleanup = DeleteStreams(vec![stream.clone()]);
    let orders = orders("restart", 600, 0.2);
    // Duplicates under new ids, keyed by the body: JetStream keeps them all.
    let mut seen = std::collections::HashSet::new();
    let kept = nats::publish(&client, &subject, &orders, |_, order| {
        Some(if seen.insert(order.id.clone()) {
            order.id.clone()
        } else {
            format!("{}-retry", order.id)
        })
    })
    .await;
    assert_eq!(kept, 720);
    drop(client);

    let broker = JetStream::builder(nats::url(), &stream, &subject)
        .prefetch(16)
        .ack_wait(Duration::from_secs(3))
        .reconnect_for(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let consumer = worker_settings("tests.nats.restart")
        .key_from_json_field("order_id")
        // Longer than the restart and the redelivery of what was in flight.
        .stop_when_idle(Duration::from_secs(10))
        .transactional(effects.store.clone(), broker, effects.handler())
        .unwrap();
    let running = tokio::spawn(tokio::time::timeout(LIMIT, consumer.run()));

    assert!(eventually(LIMIT, async || effects.rows().await >= 150).await);
    {
        let _restart = RestartOnDrop;
        assert!(
            tokio::task::spawn_blocking(nats::stop).await.unwrap(),
            "stop NATS"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            tokio::task::spawn_blocking(nats::start).await.unwrap(),
            "start NATS"
        );
    }
    let stats = running
        .await
        .unwrap()
        .expect("the worker did not finish in time")
        .expect("the worker survived the restart");
    effects.assert_exactly_once(&orders).await;
    assert!(stats.duplicates >= 120, "{stats:?}");
}
