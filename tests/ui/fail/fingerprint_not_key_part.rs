use idempotent_core::{Error, idempotent};

struct Client {
    url: String,
}

#[idempotent(key = "order_id")]
async fn charge(order_id: u64, client: &Client) -> Result<String, Error> {
    Ok(format!("{}/{order_id}", client.url))
}

fn main() {}
