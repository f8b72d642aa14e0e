//! Publishes orders for the `worker` example, a share of them twice, as a publisher that
//! retries after a lost confirmation does.
//!
//! ```sh
//! cargo run -p idempotent-examples --example publisher -- --broker amqp://guest:guest@127.0.0.1:5672/%2f --queue orders --count 1000 --duplicates 0.2
//! cargo run -p idempotent-examples --example publisher -- --broker nats://127.0.0.1:4222 --subject orders --count 1000 --duplicates 0.2
//! ```
//!
//! Each order is JSON `{"order_id": "...", "amount_cents": ...}` with a message id. On RabbitMQ
//! a duplicate carries the same `message_id` as the first copy, so the worker's default key
//! recognises it. JetStream would drop a publish that repeats a `Nats-Msg-Id` within its
//! duplicate window, so on NATS a duplicate carries a new id, as from a publisher that
//! stamps each attempt: run the worker with `--key order_id` to recognise it by its body.
//! Order ids include a run id (`--run-id`, default the current time), so runs do not collide.

use std::error::Error as StdError;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

type Failure = Box<dyn StdError + Send + Sync>;

const USAGE: &str = "usage: publisher --broker (amqp://...|nats://...) (--queue NAME | --subject NAME) \
--count N --duplicates SHARE [--run-id ID]";

struct Args {
    broker: String,
    queue: Option<String>,
    subject: Option<String>,
    count: usize,
    duplicates: f64,
    run_id: String,
}

fn parse_args() -> Result<Args, Failure> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut args = Args {
        broker: String::new(),
        queue: None,
        subject: None,
        count: 1000,
        duplicates: 0.0,
        run_id: now.to_string(),
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
            "--count" => args.count = value()?.parse()?,
            "--duplicates" => args.duplicates = value()?.parse()?,
            "--run-id" => args.run_id = value()?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}").into()),
        }
    }
    if args.broker.is_empty() || !(0.0..=1.0).contains(&args.duplicates) {
        return Err(USAGE.into());
    }
    Ok(args)
}

/// One publish: the order, its body, and whether it is the second copy.
struct Publish {
    order_id: String,
    body: Vec<u8>,
    retry: bool,
}

/// Every order once, and `duplicates` of them again a few messages later.
fn plan(args: &Args) -> Vec<Publish> {
    let twice = (args.count as f64 * args.duplicates).round() as usize;
    let every = args.count.checked_div(twice).unwrap_or(usize::MAX);
    let mut plan = Vec::with_capacity(args.count + twice);
    let mut later: Vec<(usize, Publish)> = Vec::new();
    for i in 0..args.count {
        let order_id = format!("order-{}-{i}", args.run_id);
        let body = format!(
            r#"{{"order_id": "{order_id}", "amount_cents": {}}}"#,
            100 + i % 900
        )
        .into_bytes();
        if i % every == 0 && i / every < twice {
            later.push((
                i + 3,
                Publish {
                    order_id: order_id.clone(),
                    body: body.clone(),
                    retry: true,
                },
            ));
        }
        plan.push(Publish {
            order_id,
            body,
            retry: false,
        });
        while let Some(due) = later.iter().position(|(at, _)| *at <= i) {
            plan.push(later.remove(due).1);
        }
    }
    plan.extend(later.into_iter().map(|(_, publish)| publish));
    plan
}

async fn publish_amqp(url: &str, queue: &str, plan: &[Publish]) -> Result<(), Failure> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await?;
    let mut confirms = Vec::with_capacity(plan.len());
    for publish in plan {
        let properties = BasicProperties::default()
            .with_message_id(format!("msg-{}", publish.order_id).into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &publish.body,
                    properties,
                )
                .await?,
        );
    }
    for confirm in confirms {
        if confirm.await?.is_nack() {
            return Err("the broker refused a message".into());
        }
    }
    connection.close(200, "published".into()).await?;
    Ok(())
}

async fn publish_nats(url: &str, subject: &str, plan: &[Publish]) -> Result<(), Failure> {
    let client = async_nats::connect(url).await?;
    let context = jetstream::new(client);
    context
        .get_or_create_stream(stream::Config {
            name: stream_name(subject),
            subjects: vec![subject.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let mut acks = Vec::with_capacity(plan.len());
    for publish in plan {
        let mut headers = async_nats::HeaderMap::new();
        let id = match publish.retry {
            false => format!("msg-{}", publish.order_id),
            true => format!("msg-{}-retry", publish.order_id),
        };
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push(
            context
                .publish_with_headers(subject.to_owned(), headers, publish.body.clone().into())
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// The stream that keeps `subject`, named as the worker example names it.
fn stream_name(subject: &str) -> String {
    subject.replace(['.', '*', '>'], "_").to_uppercase()
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = parse_args()?;
    let plan = plan(&args);
    if args.broker.starts_with("amqp://") || args.broker.starts_with("amqps://") {
        let queue = args
            .queue
            .as_deref()
            .ok_or("--queue is required with an AMQP broker")?;
        publish_amqp(&args.broker, queue, &plan).await?;
        println!("duplicates carry the first copy's message_id");
    } else if args.broker.starts_with("nats://") {
        let subject = args
            .subject
            .as_deref()
            .ok_or("--subject is required with a NATS broker")?;
        publish_nats(&args.broker, subject, &plan).await?;
        println!(
            "duplicates carry new Nats-Msg-Ids: run the worker with --key order_id to recognise them"
        );
    } else {
        return Err(format!("unknown broker {:?}\n{USAGE}", args.broker).into());
    }
    let twice = plan.iter().filter(|publish| publish.retry).count();
    println!(
        "sent {} messages: {} distinct orders, {twice} of them twice (run id {})",
        plan.len(),
        args.count,
        args.run_id
    );
    Ok(())
}
