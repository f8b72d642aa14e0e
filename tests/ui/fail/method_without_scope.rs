use idempotent_core::{Error, idempotent};

struct Orders;

impl Orders {
    #[idempotent(key = "id")]
    async fn get(&self, id: u64) -> Result<u64, Error> {
        Ok(id)
    }
}

fn main() {}
