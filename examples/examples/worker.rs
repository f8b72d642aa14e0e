//! A queue worker that processes each order once, however often the broker delivers it.
//!
//! ```sh
//! cargo run -p idempotent-examples --example worker -- --broker amqp://guest:guest@127.0.0.1:5672/%2f --queue orders --store postgres://postgres@127.0.0.1:5432/test
//! cargo run -p idempotent-examples --example worker -- --broker nats://127.0.0.1:4222 --subject orders --key order_id --store memory
//! ```
//!
//! Messages are JSON `{"order_id": "...", ...}`. The idempotency key is the broker's message
//! id (AMQP `message_id`, NATS `Nats-Msg-Id`), or the body's `order_id` with `--key order_id`.
//!
//! With a PostgreSQL store, each processed order is one row in `processed_orders` (created if
//! missing), written in the same transaction as the record that marks the message processed:
//! a crash anywhere never leaves a row without its record or a record without its row, so
//! the table ends with exactly one row per order. The table has no unique constraint on
//! purpose: a duplicate effect would show as a second row. With another store (`memory`,
//! `sqlite:PATH`, `redis://...`) the effect is a line on stdout.
//!
//! Options: `--store` (default `memory`), `--concurrency N` (default 32), `--exit-when-idle
//! 5s` (stop after a quiet period; otherwise Ctrl-C stops it gracefully). At the end it prints
//! how many messages it processed and how many duplicates it dropped.

use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use idempotent_core::consumer::nats::JetStream;
use idempotent_core::consumer::rabbitmq::RabbitMq;
use idempotent_core::consumer::{
    Broker, Consumer, ConsumerBuilder, Message, StatsSnapshot, TransactionalHandler,
};
use idempotent_core::stores::postgres::sqlx::{self, PgConnection};
use idempotent_core::{BoxError, MemoryStore, PostgresStore, RedisStore, SqliteStore};

type Failure = Box<dyn StdError + Send + Sync>;

#[derive(Debug)]
struct Args {
    broker: String,
    queue: Option<String>,
    subject: Option<String>,
    store: String,
    key: Option<String>,
    concurrency: usize,
    idle: Option<Duration>,
}

const USAGE: &str = "usage: worker --broker (amqp://...|nats://...) (--queue NAME | --subject NAME) \
[--store memory|sqlite:PATH|redis://...|postgres://...] [--key order_id] [--concurrency N] \
[--exit-when-idle 5s]";

fn parse_args() -> Result<Args, Failure> {
    let mut args = Args {
        broker: String::new(),
        queue: None,
        subject: None,
        store: "memory".to_owned(),
        key: None,
        concurrency: 32,
        idle: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || {
            given
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--broker" => args.broker = value()?,
            "--queue" => args.queue = Some(value()?),
            "--subject" => args.subject = Some(value()?),
            "--store" => args.store = value()?,
            "--key" => args.key = Some(value()?),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--exit-when-idle" => args.idle = Some(parse_duration(&value()?)?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}").into()),
        }
    }
    if args.broker.is_empty() {
        return Err(USAGE.into());
    }
    Ok(args)
}

/// `500ms`, `5s`, `2m`.
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(number),
        "s" | "" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        _ => return Err(format!("bad duration {text:?}: use ms, s or m").into()),
    })
}

/// Records each order in `processed_orders`, in the inbox's transaction.
struct RecordOrder;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS processed_orders (\
    message_id text NOT NULL, order_id text NOT NULL, processed_at timestamptz NOT NULL DEFAULT now())";

fn order_id(message: &Message) -> Result<String, BoxError> {
    let body: serde_json::Value = serde_json::from_slice(&message.body)?;
    match body.get("order_id") {
        Some(serde_json::Value::String(id)) => Ok(id.clone()),
        _ => Err("the message has no string order_id".into()),
    }
}

#[async_trait]
impl TransactionalHandler for RecordOrder {
    async fn handle(&self, message: &Message, tx: &mut PgConnection) -> Result<(), BoxError> {
        let order_id = order_id(message)?;
        sqlx::query("INSERT INTO processed_orders (message_id, order_id) VALUES ($1, $2)")
            .bind(message.id.clone().unwrap_or_default())
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn print_order(message: Message) -> Result<(), BoxError> {
    let order_id = order_id(&message)?;
    println!("processed order {order_id}");
    Ok(())
}

async fn consume<B: Broker>(args: &Args, broker: B) -> Result<StatsSnapshot, Failure> {
    let mut builder: ConsumerBuilder =
        Consumer::builder("examples.worker.orders").concurrency(args.concurrency);
    if let Some(field) = &args.key {
        builder = builder.key_from_json_field(field);
    }
    if let Some(idle) = args.idle {
        builder = builder.stop_when_idle(idle);
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down: finishing the messages in flight");
    };
    let store = args.store.as_str();
    let consumer = if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let store = PostgresStore::connect(store).await?;
        store.migrate().await?;
        sqlx::query(CREATE_TABLE).execute(store.pool()).await?;
        builder.transactional(store, broker, RecordOrder)?
    } else if store.starts_with("redis://") {
        builder.build(RedisStore::connect(store).await?, broker, print_order)?
    } else if let Some(path) = store.strip_prefix("sqlite:") {
        builder.build(SqliteStore::open(path).await?, broker, print_order)?
    } else if store == "memory" {
        builder.build(MemoryStore::new(), broker, print_order)?
    } else {
        return Err(format!("unknown store {store:?}\n{USAGE}").into());
    };
    Ok(consumer.run_until(shutdown).await?)
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = parse_args()?;
    let stats = if args.broker.starts_with("amqp://") || args.broker.starts_with("amqps://") {
        let queue = args
            .queue
            .clone()
            .ok_or("--queue is required with an AMQP broker")?;
        let broker = RabbitMq::builder(&args.broker, queue)
            .prefetch(u16::try_from(args.concurrency).unwrap_or(u16::MAX))
            .connect()
            .await?;
        consume(&args, broker).await?
    } else if args.broker.starts_with("nats://") {
        let subject = args
            .subject
            .clone()
            .ok_or("--subject is required with a NATS broker")?;
        let stream = stream_name(&subject);
        let broker = JetStream::builder(&args.broker, stream, &subject)
            .prefetch(u16::try_from(args.concurrency).unwrap_or(u16::MAX))
            .connect()
            .await?;
        consume(&args, broker).await?
    } else {
        return Err(format!("unknown broker {:?}\n{USAGE}", args.broker).into());
    };
    println!(
        "processed {} messages, dropped {} duplicates ({} received, {} requeued while in flight, {} failed, {} dead-lettered)",
        stats.processed,
        stats.duplicates,
        stats.received,
        stats.in_flight,
        stats.failed,
        stats.dead_lettered
    );
    Ok(())
}

/// The JetStream stream that keeps `subject`: its name in capitals, dots as underscores
/// (`orders` is kept in `ORDERS`). The publisher example uses the same.
fn stream_name(subject: &str) -> String {
    subject.replace(['.', '*', '>'], "_").to_uppercase()
}
