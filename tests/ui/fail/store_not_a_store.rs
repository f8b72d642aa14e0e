use idempotent_core::{Error, idempotent};

struct HttpClient;

#[idempotent(key = "order_id", store = client)]
async fn charge(client: &HttpClient, order_id: u64) -> Result<(), Error> {
    let _ = (client, order_id);
    Ok(())
}

struct Service {
    client: HttpClient,
}

impl Service {
    #[idempotent(key = "order_id", store = self.client, scope = "service.charge")]
    async fn charge(&self, order_id: u64) -> Result<(), Error> {
        let _ = order_id;
        Ok(())
    }
}

fn main() {}
