//! Requests per second of the orders service (`idempotent_examples::orders`) on 127.0.0.1,
//! measured with `wrk`, side by side in one run:
//!
//! - `baseline`: the same routes without any idempotency layer (the key header is ignored);
//! - `layer unique`: the service as it ships (`IdempotencyLayer` on `POST /orders`, in-memory
//!   store), every request with a new key: claim, run, store;
//! - `layer replay`: the same service, every request with one key: replayed;
//! - `axum-idempotent unique` / `replay`: the same routes behind `axum-idempotent` 0.6 in its
//!   header mode (`use_idempotency_key_header`), which keeps responses in a ruts session
//!   (in-memory moka store; every request carries one session cookie).
//!
//! Every request is `POST /orders` with the same JSON body, so the handler parses it and creates
//! an order wherever it runs. The server runs on one tokio worker thread; `wrk` runs one thread
//! with 16 connections. Cases take turns for several rounds, each round measures the baseline
//! too, and each case's ratio is to the baseline of its own round; the table gives each case's
//! median round. Beside requests per second, the table gives the servers' CPU time per request
//! (this process's threads; wrk is another process), which other work on a shared machine
//! disturbs less than throughput. Nothing here asserts a time.
//!
//! Run with `cargo bench -p idempotent-tests --features http-bench --bench http_throughput`
//! (`wrk` must be on `PATH`; `apt-get install wrk`). `HTTP_BENCH_SECONDS` (default 5) and
//! `HTTP_BENCH_ROUNDS` (default 3) set the length; `HTTP_BENCH_ONLY=<case>` runs one case alone,
//! for a profiler.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use axum_idempotent::{IdempotentLayer, IdempotentOptions};
use idempotent_core::MemoryStore;
use idempotent_examples::orders::{self, Orders};
use ruts::store::moka::MokaStore;
use ruts::{CookieOptions, Session, SessionLayer};
use tower_cookies::CookieManagerLayer;

const BODY: &str = r#"{"item":"book","quantity":1}"#;

/// The wrk script: `POST /orders` with `BODY`, a key that is new on every request (`unique`)
/// or always the same, and the session cookie when there is one.
fn script(unique: bool, cookie: Option<&str>) -> String {
    let cookie = cookie.map_or(String::new(), |cookie| {
        format!("headers[\"Cookie\"] = \"{cookie}\"\n")
    });
    let key = if unique {
        "counter = counter + 1\n  headers[\"Idempotency-Key\"] = prefix .. counter\n"
    } else {
        "headers[\"Idempotency-Key\"] = \"bench-replayed-key\"\n"
    };
    format!(
        "counter = 0\n\
         prefix = \"bench-\" .. tostring(os.time()) .. \"-\" .. tostring(math.random(1, 1000000000)) .. \"-\"\n\
         headers = {{}}\n\
         headers[\"Content-Type\"] = \"application/json\"\n\
         {cookie}\
         body = '{BODY}'\n\
         request = function()\n  {key}  return wrk.format(\"POST\", \"/orders\", headers, body)\nend\n"
    )
}

struct Case {
    name: &'static str,
    addr: SocketAddr,
    unique: bool,
    cookie: Option<String>,
}

struct Measured {
    rps: f64,
    /// This process's CPU time (the servers; wrk is another process) per request.
    cpu_us: f64,
    latency: String,
    errors: String,
}

fn wrk(case: &Case, seconds: u64) -> Measured {
    let path = std::env::temp_dir().join(format!(
        "idempotent-http-bench-{}-{}.lua",
        std::process::id(),
        case.name.replace(' ', "-")
    ));
    std::fs::write(&path, script(case.unique, case.cookie.as_deref())).expect("write script");
    let cpu_before = process_cpu();
    let output = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "-s"])
        .arg(&path)
        .arg(format!("http://{}/orders", case.addr))
        .output()
        .expect("run wrk (apt-get install wrk)");
    let cpu = process_cpu() - cpu_before;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let rps = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let latency = text
        .lines()
        .find(|line| line.trim_start().starts_with("Latency"))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    let errors = text
        .lines()
        .filter(|line| line.contains("Non-2xx") || line.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    Measured {
        rps,
        cpu_us: cpu.as_secs_f64() * 1e6 / requests,
        latency,
        errors,
    }
}

/// CPU time of every thread of this process so far (`/proc/self/task/*/schedstat`).
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The orders routes behind axum-idempotent in header mode, and a route that opens a session.
fn axum_idempotent_app() -> Router {
    let store = Arc::new(MokaStore::builder().build());
    let options = IdempotentOptions::default()
        .expire_after(3600)
        .use_idempotency_key_header(Some("idempotency-key"), true);
    let session = Router::new().route(
        "/session",
        post(|session: Session<MokaStore>| async move {
            session
                .set(
                    "user",
                    &String::from("bench"),
                    ruts::store::Ttl::new(3600).unwrap(),
                    None,
                )
                .await
                .unwrap();
            "session"
        }),
    );
    orders::routes(Orders::new())
        .layer(IdempotentLayer::<MokaStore>::new(options))
        .merge(session)
        .layer(
            SessionLayer::new(store).with_cookie_options(
                CookieOptions::build()
                    .name("session")
                    .max_age(3600)
                    .path("/"),
            ),
        )
        .layer(CookieManagerLayer::new())
}

async fn session_cookie(addr: SocketAddr) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .post(format!("http://{addr}/session"))
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .find(|value| value.starts_with("session="))
        .expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let seconds: u64 = std::env::var("HTTP_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (baseline, layer, other, cookie) = runtime.block_on(async {
        let baseline = serve(orders::routes(Orders::new())).await;
        let layer = serve(orders::app(Orders::new(), Arc::new(MemoryStore::new())).unwrap()).await;
        let other = serve(axum_idempotent_app()).await;
        let cookie = session_cookie(other).await;
        (baseline, layer, other, cookie)
    });
    // The server keeps running on the runtime's worker while wrk runs here.
    let cases = [
        Case {
            name: "baseline",
            addr: baseline,
            unique: true,
            cookie: None,
        },
        Case {
            name: "layer unique",
            addr: layer,
            unique: true,
            cookie: None,
        },
        Case {
            name: "layer replay",
            addr: layer,
            unique: false,
            cookie: None,
        },
        Case {
            name: "axum-idempotent unique",
            addr: other,
            unique: true,
            cookie: Some(cookie.clone()),
        },
        Case {
            name: "axum-idempotent replay",
            addr: other,
            unique: false,
            cookie: Some(cookie),
        },
    ];
    // `HTTP_BENCH_ONLY=<case name>` runs one case alone (to profile it); no table then.
    if let Ok(only) = std::env::var("HTTP_BENCH_ONLY") {
        for case in cases.iter().filter(|case| case.name == only) {
            let m = wrk(case, seconds);
            eprintln!("{}: {:.0} req/s, latency {}", case.name, m.rps, m.latency);
        }
        return;
    }
    let mut rps = vec![Vec::new(); cases.len()];
    let mut ratios = vec![Vec::new(); cases.len()];
    let mut latencies = vec![Vec::new(); cases.len()];
    let mut cpu = vec![Vec::new(); cases.len()];
    let mut cpu_ratios = vec![Vec::new(); cases.len()];
    for round in 1..=rounds {
        let measured: Vec<Measured> = cases.iter().map(|case| wrk(case, seconds)).collect();
        let base = measured[0].rps;
        for (i, m) in measured.iter().enumerate() {
            eprintln!(
                "round {round}: {:<24} {:>9.0} req/s  {:>5.2}x  {:>6.1} us CPU/req  latency {:>8}  {}",
                cases[i].name,
                m.rps,
                m.rps / base,
                m.cpu_us,
                m.latency,
                m.errors
            );
            rps[i].push(m.rps);
            ratios[i].push(m.rps / base);
            cpu[i].push(m.cpu_us);
            cpu_ratios[i].push(m.cpu_us / measured[0].cpu_us);
            latencies[i].push(m.latency.clone());
        }
    }
    println!(
        "| case | req/s | req/s / baseline | server CPU per request | CPU / baseline | mean latency per round |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for (i, case) in cases.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2}x | {:.1} us | {:.2}x | {} |",
            case.name,
            median(rps[i].clone()),
            median(ratios[i].clone()),
            median(cpu[i].clone()),
            median(cpu_ratios[i].clone()),
            latencies[i].join(", ")
        );
    }
    drop(runtime);
}
