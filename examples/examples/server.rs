//! The orders service (`idempotent_examples::orders`): an axum API whose `POST /orders` is
//! safe to retry with an `Idempotency-Key` header.
//!
//! ```sh
//! cargo run -p idempotent-examples --example server -- --addr 127.0.0.1:3000 --store memory
//! ```
//!
//! `--store` takes `memory` (the default), `sqlite:PATH`, `redis://...` or `postgres://...`.
//! The README walks through a session with curl.

use std::net::SocketAddr;

use idempotent_examples::orders::{self, Orders};

struct Args {
    addr: SocketAddr,
    store: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        store: "memory".to_owned(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let addr = value()?;
                args.addr = addr
                    .parse()
                    .map_err(|error| format!("--addr {addr}: {error}"))?;
            }
            "--store" => args.store = value()?,
            "-h" | "--help" => {
                return Err(
                    "usage: server [--addr 127.0.0.1:3000] [--store memory|sqlite:PATH|redis://...|postgres://...]"
                        .to_owned(),
                );
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let store = orders::open_store(&args.store).await?;
    let app = orders::app(Orders::new(), store)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!(
        "orders service on http://{} (store: {})",
        listener.local_addr()?,
        args.store
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
