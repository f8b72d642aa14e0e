// `impl Trait` arguments, in the key, in the fingerprint and skipped.
use idempotent_core::{Error, KeyPart, idempotent};

#[idempotent(key = "id", skip = "label")]
async fn tag(
    id: impl KeyPart,
    amount: &impl KeyPart,
    label: impl Into<String>,
) -> Result<String, Error> {
    let _ = (id, amount);
    Ok(label.into())
}

fn main() {
    drop(tag(1_u64, &2_u32, "label"));
}
