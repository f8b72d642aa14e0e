//! What the server says about itself: command counts and CPU time.

use std::time::Duration;

use super::{RawRedis, RawReply};

/// Per-command call counts from `INFO commandstats`, server-wide. Commands that scripts run
/// inside Redis (`redis.call`) are counted too, so `total` is the server's work, not the round
/// trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Commands {
    /// `EVALSHA` calls.
    pub evalsha: u64,
    /// `EVAL` calls.
    pub eval: u64,
    /// Every command except `INFO` and `ECHO`, which a measurement itself sends.
    pub total: u64,
}

impl std::ops::Sub for Commands {
    type Output = Commands;
    fn sub(self, before: Commands) -> Commands {
        Commands {
            evalsha: self.evalsha - before.evalsha,
            eval: self.eval - before.eval,
            total: self.total - before.total,
        }
    }
}

impl RawRedis {
    /// The server's command counts so far; panics if they cannot be read.
    pub async fn commands(&self) -> Commands {
        let reply = self.command(&[b"INFO", b"commandstats"]).await;
        let RawReply::Data(text) = reply else {
            panic!("unexpected INFO reply {reply:?}");
        };
        let mut counts = Commands::default();
        for line in String::from_utf8_lossy(&text).lines() {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let calls: u64 = stats
                .split(',')
                .find_map(|stat| stat.strip_prefix("calls="))
                .and_then(|calls| calls.parse().ok())
                .unwrap_or_else(|| panic!("no call count in {line:?}"));
            match name {
                "info" | "echo" => continue,
                "evalsha" => counts.evalsha = calls,
                "eval" => counts.eval = calls,
                _ => {}
            }
            counts.total += calls;
        }
        counts
    }

    /// The server's CPU time so far (`used_cpu_user` + `used_cpu_sys`; other clients of the
    /// server count too); zero when it cannot be read.
    pub async fn server_cpu(&self) -> Duration {
        let Ok(RawReply::Data(info)) = self.try_command(&[b"INFO", b"cpu"]).await else {
            return Duration::ZERO;
        };
        let seconds: f64 = String::from_utf8_lossy(&info)
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                matches!(name, "used_cpu_user" | "used_cpu_sys")
                    .then(|| value.trim().parse::<f64>().ok())?
            })
            .sum();
        Duration::from_secs_f64(seconds.max(0.0))
    }
}
