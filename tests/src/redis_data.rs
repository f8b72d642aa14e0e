//! Redis helpers for tests and benchmarks, through the store's own connection (the tests
//! package has no `redis` dependency).

use std::time::Duration;

use idempotent_core::stores::redis::RawReply;
use idempotent_core::{Error, RedisStore};

/// Deletes every key under `prefix` (`SCAN` + `DEL` per batch), bounded in steps.
pub async fn delete_prefix(store: &RedisStore, prefix: &str) -> Result<usize, Error> {
    let pattern = format!("{prefix}:*");
    let mut cursor = b"0".to_vec();
    let mut deleted = 0;
    for _ in 0..100_000 {
        let reply = store
            .raw_command(&[
                b"SCAN",
                &cursor,
                b"MATCH",
                pattern.as_bytes(),
                b"COUNT",
                b"1000",
            ])
            .await?;
        let unexpected = || Error::store("redis", format!("unexpected SCAN reply {reply:?}"));
        let RawReply::Array(parts) = &reply else {
            return Err(unexpected());
        };
        let [RawReply::Data(next), RawReply::Array(keys)] = &parts[..] else {
            return Err(unexpected());
        };
        let mut command: Vec<&[u8]> = vec![b"DEL"];
        command.extend(keys.iter().filter_map(|key| match key {
            RawReply::Data(key) => Some(key.as_slice()),
            _ => None,
        }));
        if command.len() > 1 {
            deleted += command.len() - 1;
            store.raw_command(&command).await?;
        }
        if next.as_slice() == b"0" {
            break;
        }
        cursor = next.clone();
    }
    Ok(deleted)
}

/// The Redis server's CPU time so far (`used_cpu_user` + `used_cpu_sys`; other clients of
/// the server count too); zero when it cannot be read.
pub async fn server_cpu(store: &RedisStore) -> Duration {
    let Ok(RawReply::Data(info)) = store.raw_command(&[b"INFO", b"cpu"]).await else {
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
