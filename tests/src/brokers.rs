//! Live brokers for the consumer tests: RabbitMQ and NATS JetStream on this machine, an effect
//! table on PostgreSQL that shows every effect (no unique constraint: a duplicate effect is a
//! second row), and order streams with duplicates to publish.
//!
//! Tests read `IDEMPOTENT_AMQP_URL` and `IDEMPOTENT_NATS_URL` (defaults: the local servers)
//! and skip when a broker is unreachable, unless `IDEMPOTENT_REQUIRE_SERVICES=1`. Every test
//! uses queues, streams and tables of its own and deletes them when it ends.

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use idempotent_core::BoxError;
use idempotent_core::CallOptions;
use idempotent_core::PostgresStore;
use idempotent_core::consumer::{Consumer, ConsumerBuilder, Message, TransactionalHandler};
use idempotent_core::stores::postgres::sqlx::{self, AssertSqlSafe, PgConnection, PgPool};

use super::postgres::DropTables;

/// One order message: the id its publisher gives it and its JSON body.
#[derive(Debug, Clone)]
pub struct Order {
    /// The message id the publisher sets (AMQP `message_id`, NATS `Nats-Msg-Id`).
    pub id: String,
    /// The order the message is about: the body's `order_id`.
    pub order_id: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// `count` distinct orders, with a `duplicates` share of them published a second time a few
/// messages later, as a publisher's retry arrives. Deterministic.
pub fn orders(prefix: &str, count: usize, duplicates: f64) -> Vec<Order> {
    let distinct: Vec<Order> = (0..count)
        .map(|i| {
            let order_id = format!("{prefix}-o{i}");
            let body = format!(
                r#"{{"order_id": "{order_id}", "amount_cents": {}}}"#,
                100 + i
            );
            Order {
                id: format!("{prefix}-m{i}"),
                order_id,
                body: body.into_bytes(),
            }
        })
        .collect();
    let twice = (count as f64 * duplicates).round() as usize;
    let step = count.checked_div(twice).unwrap_or(usize::MAX);
    let mut published = Vec::with_capacity(count + twice);
    let mut pending: Vec<(usize, Order)> = Vec::new();
    for (i, order) in distinct.into_iter().enumerate() {
        if twice > 0 && i % step == 0 && i / step < twice {
            pending.push((i + 5, order.clone()));
        }
        published.push(order);
        while let Some(position) = pending.iter().position(|(at, _)| *at <= i) {
            published.push(pending.remove(position).1);
        }
    }
    published.extend(pending.into_iter().map(|(_, order)| order));
    published
}

/// The consumer settings of the broker tests: 16 in flight, a 2 s lease (a killed worker's
/// claims lapse quickly), short retry pauses, and a stop after 2 s without messages.
pub fn worker_settings(scope: &str) -> ConsumerBuilder {
    Consumer::builder(scope)
        .concurrency(16)
        .call_options(CallOptions::new().lease(Duration::from_secs(2)))
        .retry_delay(Duration::from_millis(20))
        .max_in_flight_delay(Duration::from_millis(200))
        .stop_when_idle(Duration::from_secs(2))
}

/// Polls `condition` every 50 ms for at most `limit`.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether something listens on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// A PostgreSQL store for the transactional inbox, and its `processed_orders` effect table,
/// both dropped when the test ends.
pub struct Effects {
    /// The store the inbox records in.
    pub store: PostgresStore,
    /// The effect table's name.
    pub table: String,
    /// A pool of its own, straight to the server, for counting rows even while the store's
    /// connections go through a silent proxy.
    pub direct: PgPool,
    _guard: DropTables,
}

impl Effects {
    /// A fresh store and effect table, or `None` (skip) without PostgreSQL.
    pub async fn new(prefix: &str) -> Option<Self> {
        let (store, guard) = super::postgres::connect(prefix, 8).await?;
        Self::with_store(store, guard).await
    }

    /// The effect table next to `store`'s table.
    pub async fn with_store(store: PostgresStore, mut guard: DropTables) -> Option<Self> {
        let direct = PgPool::connect(&super::postgres_url())
            .await
            .expect("a direct PostgreSQL pool");
        let table = super::unique_name("processed_orders");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (message_id text NOT NULL, order_id text NOT NULL, \
             processed_at timestamptz NOT NULL DEFAULT now())"
        )))
        .execute(&direct)
        .await
        .expect("create the effect table");
        guard.tables.push(table.clone());
        Some(Effects {
            store,
            table,
            direct,
            _guard: guard,
        })
    }

    /// The handler that records each order in the effect table.
    pub fn handler(&self) -> RecordOrder {
        RecordOrder {
            table: self.table.clone(),
            fail_first: 0,
            poison: HashSet::new(),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Rows in the effect table.
    pub async fn rows(&self) -> i64 {
        self.scalar("count(*)").await
    }

    /// Distinct orders in the effect table.
    pub async fn distinct_orders(&self) -> i64 {
        self.scalar("count(DISTINCT order_id)").await
    }

    async fn scalar(&self, what: &str) -> i64 {
        let table = &self.table;
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT {what} FROM {table}")))
            .fetch_one(&self.direct)
            .await
            .expect("count the effect table")
    }

    /// Asserts the effect table holds each of `orders` exactly once.
    pub async fn assert_exactly_once(&self, orders: &[Order]) {
        let distinct: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
        let rows = self.rows().await;
        let recorded = self.distinct_orders().await;
        assert_eq!(
            (rows, recorded),
            (distinct.len() as i64, distinct.len() as i64),
            "rows and distinct orders in the effect table, expected one row per order"
        );
    }
}

/// Inserts one `processed_orders` row per message, through the inbox's transaction.
pub struct RecordOrder {
    table: String,
    /// Fail each order's first attempts, in this process.
    fail_first: u32,
    /// Orders that always fail.
    poison: HashSet<String>,
    attempts: Mutex<HashMap<String, u32>>,
}

impl RecordOrder {
    /// Fails the first `attempts` of every order, then succeeds.
    pub fn failing_first(mut self, attempts: u32) -> Self {
        self.fail_first = attempts;
        self
    }

    /// Always fails for these orders.
    pub fn poisoned(mut self, orders: impl IntoIterator<Item = String>) -> Self {
        self.poison.extend(orders);
        self
    }
}

/// The `order_id` of an order body.
pub fn order_id(message: &Message) -> Result<String, BoxError> {
    let body: serde_json::Value = serde_json::from_slice(&message.body)?;
    body.get("order_id")
        .and_then(|id| id.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "no order_id".into())
}

#[async_trait]
impl TransactionalHandler for RecordOrder {
    async fn handle(&self, message: &Message, tx: &mut PgConnection) -> Result<(), BoxError> {
        let order_id = order_id(message)?;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = attempts.entry(order_id.clone()).or_default();
            *attempt += 1;
            *attempt
        };
        if self.poison.contains(&order_id) {
            return Err(format!("order {order_id} cannot be processed").into());
        }
        if attempt <= self.fail_first {
            return Err(format!("attempt {attempt} of {order_id} fails").into());
        }
        let table = &self.table;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (message_id, order_id) VALUES ($1, $2)"
        )))
        .bind(message.id.clone().unwrap_or_default())
        .bind(&order_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Runs `command`; whether it succeeded.
pub fn run_quietly(command: &str, args: &[&str]) -> bool {
    Command::new(command)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Blocks on `future` on a runtime of its own, on another thread: for guards that clean up
/// when the test's runtime may already be gone.
pub fn on_own_runtime<F, T>(future: impl FnOnce() -> F + Send + 'static) -> Option<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        Some(runtime.block_on(future()))
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(feature = "rabbitmq")]
pub mod rabbit {
    //! RabbitMQ: publishing, inspecting and deleting queues, and restarting the local broker.

    use std::time::Duration;

    use futures_util::future::try_join_all;
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    use super::{Order, on_own_runtime, port_open, run_quietly};

    /// The local broker.
    pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// Its port.
    pub const PORT: u16 = 5672;

    /// `IDEMPOTENT_AMQP_URL`, or the local broker.
    pub fn url() -> String {
        crate::service_url("AMQP", DEFAULT_AMQP_URL)
    }

    /// A connection to the broker, or `None` (skip) when it is unreachable.
    pub async fn connect() -> Option<Connection> {
        let url = url();
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(connection) => Some(connection),
            Err(error) => crate::unavailable("RabbitMQ", &url, error),
        }
    }

    /// Declares `queue` (durable) and publishes `orders` persistently, with their ids as
    /// `message_id` (or none), waiting for the broker's confirms.
    pub async fn publish(connection: &Connection, queue: &str, orders: &[Order], with_ids: bool) {
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        declare(&channel, queue).await;
        let mut confirms = Vec::with_capacity(orders.len());
        for order in orders {
            let mut properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if with_ids {
                properties = properties.with_message_id(order.id.as_str().into());
            }
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &order.body,
                    properties,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        let confirmed = try_join_all(confirms).await.expect("confirms");
        assert!(
            confirmed.iter().all(|c| c.is_ack()),
            "the broker refused a message"
        );
        let _ = channel.close(200, "published".into()).await;
    }

    /// Declares `queue` (durable) and returns how many messages it holds.
    pub async fn declare(channel: &lapin::Channel, queue: &str) -> u32 {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("declare the queue")
            .message_count()
    }

    /// Takes every message waiting in `queue`: their bodies and headers.
    pub async fn drain(
        connection: &Connection,
        queue: &str,
    ) -> Vec<(Vec<u8>, Option<lapin::types::FieldTable>)> {
        let channel = connection.create_channel().await.expect("channel");
        declare(&channel, queue).await;
        let mut taken = Vec::new();
        for _ in 0..10_000 {
            let Some(message) = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get")
            else {
                break;
            };
            let delivery = message.delivery;
            taken.push((delivery.data, delivery.properties.headers().clone()));
        }
        taken
    }

    /// Deletes the named queues when the test ends, passed or failed.
    pub struct DeleteQueues(pub Vec<String>);

    impl Drop for DeleteQueues {
        fn drop(&mut self) {
            let queues = std::mem::take(&mut self.0);
            let _ = on_own_runtime(move || async move {
                let connection = Connection::connect(&url(), ConnectionProperties::default())
                    .await
                    .ok()?;
                let channel = connection.create_channel().await.ok()?;
                for queue in queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "cleaned up".into()).await;
                Some(())
            });
        }
    }

    /// Whether the local broker accepts AMQP connections.
    pub fn answers() -> bool {
        port_open(PORT)
    }

    /// Whether the fault tests may restart the broker: only the local one.
    pub fn is_local() -> bool {
        let url = url();
        url.contains("@127.0.0.1:") || url.contains("@localhost:")
    }

    /// Stops the RabbitMQ application (the node stays up), closing every connection.
    pub fn stop() -> bool {
        run_quietly("rabbitmqctl", &["stop_app"])
            && crate::redis_server::wait_until(Duration::from_secs(30), || !answers())
    }

    /// Starts it again (or the whole node, as `.ci/run` does), and waits until it answers.
    pub fn start() -> bool {
        if !run_quietly("rabbitmqctl", &["start_app"]) {
            let _ = run_quietly("rabbitmq-server", &["-detached"]);
        }
        crate::redis_server::wait_until(Duration::from_secs(60), answers)
    }

    /// Starts RabbitMQ if it is down when the test ends, passed or failed.
    pub struct RestartOnDrop;

    impl Drop for RestartOnDrop {
        fn drop(&mut self) {
            if !answers() && !start() {
                eprintln!(
                    "could not restart RabbitMQ; start it by hand (rabbitmq-server -detached)"
                );
            }
        }
    }
}

#[cfg(feature = "nats")]
pub mod nats {
    //! NATS JetStream: streams, publishing, and restarting the local server.

    use std::time::Duration;

    use async_nats::jetstream::{self, stream};
    use bytes::Bytes;

    use super::{Order, on_own_runtime, port_open, run_quietly};

    /// The local server.
    pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
    /// Its port.
    pub const PORT: u16 = 4222;

    /// `IDEMPOTENT_NATS_URL`, or the local server.
    pub fn url() -> String {
        crate::service_url("NATS", DEFAULT_NATS_URL)
    }

    /// A client, or `None` (skip) when the server is unreachable.
    pub async fn connect() -> Option<async_nats::Client> {
        let url = url();
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect();
        let connecting = tokio::time::timeout(Duration::from_secs(3), options.connect(&url));
        match connecting.await {
            Ok(Ok(client)) => Some(client),
            Ok(Err(error)) => crate::unavailable("NATS", &url, error),
            Err(_) => crate::unavailable("NATS", &url, "connection timed out"),
        }
    }

    /// Creates the stream `name` on `subject` (file storage, so it survives a restart).
    pub async fn create_stream(client: &async_nats::Client, name: &str, subjects: Vec<String>) {
        jetstream::new(client.clone())
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create the stream");
    }

    /// Publishes `orders` to `subject`, each with its id as `Nats-Msg-Id` (`ids(order)`, or
    /// none), waiting for the stream's acknowledgements. Returns how many the stream kept
    /// (its duplicate window drops a repeated `Nats-Msg-Id`).
    pub async fn publish(
        client: &async_nats::Client,
        subject: &str,
        orders: &[Order],
        mut ids: impl FnMut(usize, &Order) -> Option<String>,
    ) -> usize {
        let context = jetstream::new(client.clone());
        let mut acks = Vec::with_capacity(orders.len());
        for (i, order) in orders.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = ids(i, order) {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let ack = context
                .publish_with_headers(subject.to_owned(), headers, Bytes::from(order.body.clone()))
                .await
                .expect("publish");
            acks.push(ack);
        }
        let mut kept = 0;
        for ack in acks {
            if !ack.await.expect("the stream's acknowledgement").duplicate {
                kept += 1;
            }
        }
        kept
    }

    /// Messages in the stream `name`.
    pub async fn stream_messages(client: &async_nats::Client, name: &str) -> u64 {
        let mut stream = jetstream::new(client.clone())
            .get_stream(name)
            .await
            .expect("the stream");
        stream.info().await.expect("stream info").state.messages
    }

    /// Deletes the named streams when the test ends, passed or failed.
    pub struct DeleteStreams(pub Vec<String>);

    impl Drop for DeleteStreams {
        fn drop(&mut self) {
            let streams = std::mem::take(&mut self.0);
            let _ = on_own_runtime(move || async move {
                let client = async_nats::connect(url()).await.ok()?;
                let context = jetstream::new(client);
                for stream in streams {
                    let _ = context.delete_stream(&stream).await;
                }
                Some(())
            });
        }
    }

    /// Whether the server accepts connections.
    pub fn answers() -> bool {
        port_open(PORT)
    }

    /// Whether the URL names this machine's server (only that one may be restarted).
    pub fn is_local() -> bool {
        let url = url();
        url.contains("127.0.0.1:") || url.contains("localhost:")
    }

    /// The id of the local `nats-server` process listening on port 4222.
    fn server_pid() -> Option<u32> {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            let is_server = args.first().is_some_and(|cmd| cmd.ends_with("nats-server"));
            if is_server && args.windows(2).any(|w| w[0] == "-p" && w[1] == "4222") {
                return Some(pid);
            }
        }
        None
    }

    /// Stops the local server (by its process id), and waits until it is gone.
    pub fn stop() -> bool {
        let Some(pid) = server_pid() else {
            return false;
        };
        run_quietly("kill", &["-TERM", &pid.to_string()])
            && crate::redis_server::wait_until(Duration::from_secs(30), || {
                !answers() && server_pid().is_none()
            })
    }

    /// Starts it as `.ci/run` does, and waits until it answers.
    pub fn start() -> bool {
        let _ = run_quietly(
            "start-stop-daemon",
            &[
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/nats-server",
                "--",
                "-a",
                "127.0.0.1",
                "-p",
                "4222",
                "-js",
                "-sd",
                "/var/lib/nats-server",
                "-l",
                "/var/log/nats-server.log",
            ],
        );
        crate::redis_server::wait_until(Duration::from_secs(30), answers)
    }

    /// Starts NATS if it is down when the test ends, passed or failed.
    pub struct RestartOnDrop;

    impl Drop for RestartOnDrop {
        fn drop(&mut self) {
            if !answers() && !start() {
                eprintln!("could not restart NATS; start it by hand (see .ci/run)");
            }
        }
    }
}
