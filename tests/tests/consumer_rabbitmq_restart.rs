#![cfg(feature = "rabbitmq")]
//! The consumer through a RabbitMQ restart mid-stream: the adapter reconnects, the messages in
//! flight come back, and each order still takes effect once.
//!
//! This binary stops the local broker (`rabbitmqctl stop_app`), which breaks every other
//! client of it, so it holds this one test only (cargo runs test binaries one at a time). A
//! guard starts the broker again even when the test fails. Only the local broker is touched.

use std::time::Duration;

use idempotent_core::consumer::rabbitmq::RabbitMq;
use support::brokers::rabbit::{self, DeleteQueues, RestartOnDrop};
use support::brokers::{Effects, eventually, orders, worker_settings};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_takes_effect_once_through_a_broker_restart() {
    if !rabbit::is_local() {
        support::skip("the RabbitMQ restart test restarts only the local broker");
        return;
    }
    let Some(connection) = rabbit::connect().await else {
        return;
    };
    if !support::brokers::run_quietly("rabbitmqctl", &["status"]) {
        return support::unavailable("rabbitmqctl", &rabbit::url(), "cannot control the broker")
            .unwrap_or(());
    }
    let Some(effects) = Effects::new("consumer_amqp_restart").await else {
        return;
    };
    let queue = support::unique_name("idem-orders");
    let _cleanup = DeleteQueues(vec![queue.clone()]);
    let orders = orders("restart", 600, 0.2);
    rabbit::publish(&connection, &queue, &orders, true).await;
    drop(connection);

    let broker = RabbitMq::builder(rabbit::url(), &queue)
        .prefetch(16)
        .reconnect_for(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let consumer = worker_settings("tests.rabbitmq.restart")
        // Longer than the restart: the queue is quiet while the broker is down.
        .stop_when_idle(Duration::from_secs(10))
        .transactional(effects.store.clone(), broker, effects.handler())
        .unwrap();
    let running = tokio::spawn(tokio::time::timeout(LIMIT, consumer.run()));

    assert!(eventually(LIMIT, async || effects.rows().await >= 150).await);
    {
        let _restart = RestartOnDrop;
        assert!(
            tokio::task::spawn_blocking(rabbit::stop).await.unwrap(),
            "stop RabbitMQ"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            tokio::task::spawn_blocking(rabbit::start).await.unwrap(),
            "start RabbitMQ"
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
