// Return types: `Result<(), E>`, `Result<Option<T>, E>`, an alias, a fully qualified path,
// and an error type of the user's own that converts from `idempotent_core::Error`.
use idempotent_core::{Error, idempotent};

#[derive(Debug)]
enum MyError {
    NotFound,
    Idempotency(Error),
}

impl From<Error> for MyError {
    fn from(error: Error) -> Self {
        MyError::Idempotency(error)
    }
}

type Res<T> = Result<T, MyError>;

#[idempotent(key = "id")]
async fn unit(id: u64) -> Result<(), MyError> {
    if id == 0 {
        return Err(MyError::NotFound);
    }
    Ok(())
}

#[idempotent(key = "id")]
async fn optional(id: u64) -> Result<Option<String>, MyError> {
    Ok((id > 0).then(|| id.to_string()))
}

#[idempotent(key = "id")]
async fn aliased(id: u64) -> Res<Vec<u64>> {
    // `?` converts through `From` as in any function returning `Result`.
    let parsed: u64 = "7".parse().map_err(|_| MyError::NotFound)?;
    Ok(vec![id, parsed])
}

#[idempotent(key = "id")]
async fn qualified(id: u64) -> ::core::result::Result<u64, Error> {
    Ok(id)
}

fn main() {
    let _ = unit;
    let _ = optional;
    let _ = aliased;
    let _ = qualified;
}
