//! Control of the local Redis server, for fault tests that stop and restart it. Only the
//! server at 127.0.0.1:6379 is touched: it is the one these commands can restart.

use std::process::Command;
use std::time::Duration;

/// The local server these commands control.
pub const HOST: &str = "127.0.0.1";
/// Its port.
pub const PORT: &str = "6379";

/// Runs `redis-cli` against the local server; its output, if it succeeded.
pub fn redis_cli(args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", HOST, "-p", PORT])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether the local server answers `PING`.
pub fn ping() -> bool {
    redis_cli(&["ping"]).as_deref() == Some("PONG")
}

/// Polls `condition` every 100 ms for at most `limit`.
pub fn wait_until(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts Redis exactly as `.ci/run` does, and waits until it answers.
pub fn start_redis() -> bool {
    let started = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            PORT,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ])
        .status()
        .is_ok_and(|status| status.success());
    started && wait_until(Duration::from_secs(30), ping)
}

/// Stops the local server (`SHUTDOWN NOSAVE`) and waits until it no longer answers.
pub fn stop_redis() -> bool {
    // The server closes the connection as it exits, so redis-cli may report an error.
    let _ = redis_cli(&["shutdown", "nosave"]);
    wait_until(Duration::from_secs(10), || !ping())
}

/// Restarts Redis if it is down when the test ends, passed or failed.
pub struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if !ping() && !start_redis() {
            eprintln!("could not restart Redis; start it by hand");
        }
    }
}
