//! One record by hand: [`IdempotencyStore::inspect`] and [`IdempotencyStore::forget`].

use std::time::Duration;

use bytes::Bytes;
use sqlx::Acquire;
use sqlx::postgres::{PgConnection, PgRow};

#[cfg(doc)]
use crate::store::IdempotencyStore;

use super::PostgresStore;
use super::connection::store_error;
use super::statements::sql;
use crate::error::Error;
use crate::store::records::{ForgetStep, forget_step, state_of};
use crate::store::{Forget, RecordState};
use crate::stores::sql_rows::{DeadlineNames, column, decode_row};

/// The deadline columns, read as microseconds since the Unix epoch (`inspect.sql`).
const DEADLINES: DeadlineNames = ("lease_until", "expires_at");
/// `inspect.sql`'s last column: the statement's time, in the deadlines' unit.
const COL_NOW: usize = 7;

impl PostgresStore {
    /// Reads the record; `for_update` also locks its row for the rest of the transaction.
    async fn read_record(
        &self,
        connection: &mut PgConnection,
        scope: &str,
        key: &str,
        for_update: bool,
    ) -> Result<RecordState, Error> {
        let statement = if for_update {
            &self.inner.sql.inspect_for_update
        } else {
            &self.inner.sql.inspect
        };
        let row = sqlx::query(sql(statement))
            .bind(scope.as_bytes())
            .bind(key.as_bytes())
            .fetch_optional(&mut *connection)
            .await
            .map_err(store_error)?;
        match row {
            Some(row) => row_state(scope, &row),
            None => Ok(RecordState::Absent),
        }
    }

    pub(super) async fn inspect_record(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<RecordState, Error> {
        self.on_connection("inspection", async |connection| {
            self.read_record(connection, scope, key, false).await
        })
        .await
    }

    /// Reads and locks the row, decides, and releases it, in one transaction: a claim or a
    /// completion waits for it, and nothing changes the row between the read and the write.
    /// An early return drops the transaction, which rolls it back.
    pub(super) async fn forget_record(
        &self,
        scope: &str,
        key: &str,
        mode: Forget,
    ) -> Result<RecordState, Error> {
        self.on_connection("forget", async |connection| {
            let mut tx = connection.begin().await.map_err(store_error)?;
            let state = self.read_record(&mut tx, scope, key, true).await?;
            if forget_step(&state, mode)? == ForgetStep::Forget {
                sqlx::query(sql(&self.inner.sql.forget))
                    .bind(scope.as_bytes())
                    .bind(key.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
            }
            Ok(state)
        })
        .await
    }
}

/// An `inspect.sql` row as the record's state at the statement's time.
fn row_state(scope: &str, row: &PgRow) -> Result<RecordState, Error> {
    let stored = decode_row(row, scope, DEADLINES)?;
    let now: i64 = column(row, COL_NOW, "now", scope)?;
    state_of(
        scope,
        &stored.stored,
        stored.payload.map(Bytes::from),
        now,
        |deadline| Duration::from_micros(u64::try_from(deadline.saturating_sub(now)).unwrap_or(0)),
    )
}
