// Durations with unit names and spaces, as people write them.
use idempotent_core::{Error, idempotent};

#[idempotent(key = "id", ttl = "1 hour", lease = "30 seconds")]
async fn one_hour(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[idempotent(key = "id", ttl = "60 minutes", lease = "1 min")]
async fn sixty_minutes(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[idempotent(key = "id", ttl = "1 hour 30 minutes", lease = "90 secs")]
async fn compound(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[idempotent(key = "id", ttl = "2 days", lease = "1500 milliseconds")]
async fn days(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[idempotent(key = "id", ttl = "1d 12h", lease = "1 second")]
async fn spaced_short_forms(id: u64) -> Result<u64, Error> {
    Ok(id)
}

fn main() {
    let _ = one_hour;
    let _ = sixty_minutes;
    let _ = compound;
    let _ = days;
    let _ = spaced_short_forms;
}
