use idempotent_core::{Error, idempotent};

#[idempotent(key = "id")]
async fn create(id: u64) -> Result<u64, Error> {
    Ok(id)
}

struct Orders;

impl Orders {
    #[idempotent(key = "id")]
    async fn create(id: u64) -> Result<u64, Error> {
        Ok(id + 1)
    }
}

fn main() {
    let _ = create;
    let _ = Orders::create;
}
