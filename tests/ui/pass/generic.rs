// Generic functions: key and fingerprint parts of a generic type, a generic return type.
use idempotent_core::{Error, KeyPart, idempotent};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[idempotent(key = "id")]
async fn echo<T>(id: T) -> Result<T, Error>
where
    T: KeyPart + Serialize + DeserializeOwned,
{
    Ok(id)
}

#[idempotent(key = "id")]
async fn describe<K: KeyPart + Sync, V: KeyPart + std::fmt::Debug>(
    id: &K,
    value: V,
) -> Result<String, Error> {
    let _ = id;
    Ok(format!("{value:?}"))
}

fn main() {
    let _ = echo::<u64>;
    let _ = describe::<String, Vec<u8>>;
}
