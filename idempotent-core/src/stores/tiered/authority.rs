//! The authority: which PostgreSQL table decides a tiered store's claims, as its cache keys
//! name it (see the module docs).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::stores::postgres::PostgresStore;
use crate::stores::postgres::sqlx;
use crate::stores::postgres::sqlx::postgres::PgConnectOptions;
use crate::stores::redis::{hash_part, tagged_key};

/// The longest the statements that read the authority may take when the store is built.
const AUTHORITY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL table that decides the claims, as cache keys name it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Authority {
    pub(super) server: String,
    pub(super) database: String,
    pub(super) table: String,
}

impl Authority {
    /// Reads the authority of `durable` from its server.
    pub(super) async fn read(durable: &PostgresStore) -> Result<Authority, Error> {
        let read = async {
            let pool = durable.pool();
            let configured = durable.table();
            let (database, resolved_schema, current_schema, may_read_identifier): (
                String,
                Option<String>,
                Option<String>,
                bool,
            ) = sqlx::query_as(
                "SELECT pg_catalog.current_database()::text, \
                     (SELECT n.nspname::text FROM pg_catalog.pg_class AS c \
                      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
                      WHERE c.oid = pg_catalog.to_regclass($1)), \
                     pg_catalog.current_schema()::text, \
                     COALESCE(pg_catalog.has_function_privilege(\
                         pg_catalog.to_regprocedure('pg_catalog.pg_control_system()'), 'EXECUTE'), \
                         false)",
            )
            .bind(configured)
            .fetch_one(pool)
            .await?;
            let identifier: Option<String> = if may_read_identifier {
                // Allowed but failing anyway (an unusual server): the address will do.
                sqlx::query_scalar(
                    "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
                )
                .fetch_one(pool)
                .await
                .map_err(|error| {
                    tracing::debug!(%error, "cannot read the PostgreSQL system identifier");
                })
                .ok()
            } else {
                None
            };
            let server = server_name(identifier.as_deref(), &pool.connect_options());
            let table = if configured.contains('.') {
                configured.to_owned()
            } else {
                match resolved_schema.or(current_schema) {
                    Some(schema) => format!("{schema}.{configured}"),
                    None => configured.to_owned(),
                }
            };
            Ok::<_, sqlx::Error>(Authority {
                server,
                database,
                table,
            })
        };
        tokio::time::timeout(AUTHORITY_TIMEOUT, read)
            .await
            .map_err(|_| {
                Error::store(
                    "postgres",
                    format!(
                        "reading the server, database and table for the cache keys timed out after {AUTHORITY_TIMEOUT:?}"
                    ),
                )
            })?
            .map_err(|error| Error::store("postgres", error))
    }

    /// SHA-256 with the authority fed in, ready for a scope and a key.
    pub(super) fn key_hasher(&self) -> Sha256 {
        let mut hasher = Sha256::new();
        hash_part(&mut hasher, self.server.as_bytes());
        hash_part(&mut hasher, self.database.as_bytes());
        hash_part(&mut hasher, self.table.as_bytes());
        hasher
    }
}

/// The `server` part of the authority: the system identifier when the role may read it, else
/// the address the pool connects to.
fn server_name(identifier: Option<&str>, options: &PgConnectOptions) -> String {
    match (identifier, options.get_socket()) {
        (Some(identifier), _) => format!("system_identifier:{identifier}"),
        (None, Some(socket)) => format!("socket:{}:{}", socket.display(), options.get_port()),
        (None, None) => format!("address:{}:{}", options.get_host(), options.get_port()),
    }
}

/// `{prefix}:{<hex sha256(authority, scope, key), each length-prefixed>}`.
pub(super) fn cache_key(prefix: &str, key_hasher: &Sha256, scope: &str, key: &str) -> String {
    let mut hasher = key_hasher.clone();
    hash_part(&mut hasher, scope.as_bytes());
    hash_part(&mut hasher, key.as_bytes());
    tagged_key(prefix, hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_its_identifier_or_else_its_address() {
        let options: PgConnectOptions = "postgres://app@db.internal:6543/app"
            .parse()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            server_name(Some("7714252423507138688"), &options),
            "system_identifier:7714252423507138688"
        );
        assert_eq!(server_name(None, &options), "address:db.internal:6543");
        let socket = options.clone().socket("/run/postgresql");
        assert_eq!(server_name(None, &socket), "socket:/run/postgresql:6543");
    }

    #[test]
    fn cache_keys_name_the_authority_scope_and_key() {
        let authority = Authority {
            server: "system_identifier:7714252423507138688".to_owned(),
            database: "test".to_owned(),
            table: "public.idempotency_records".to_owned(),
        };
        let hasher = authority.key_hasher();
        // Golden: sha256 over the length-prefixed server, database, table, scope and key,
        // each length a big-endian u64, computed independently (Python hashlib).
        assert_eq!(
            cache_key("idem-cache", &hasher, "scope", "key"),
            "idem-cache:{852d45bdb9b4a91a2c30839dbd020b0dae738a43f30a9ea292ff00ee45b727ff}"
        );
        let fallback = Authority {
            server: "address:db.internal:5432".to_owned(),
            database: "app".to_owned(),
            table: "billing.idempotency".to_owned(),
        };
        assert_eq!(
            cache_key(
                "idem-cache",
                &fallback.key_hasher(),
                "payments.charge",
                "order-42"
            ),
            "idem-cache:{859b4d43b8e8ffdfc148f565811a3f4b4b2f2ae5e50d7f38e8bf8576d9b6d0ab}"
        );
        // Every part counts, and the length prefixes keep the parts apart.
        let other_table = Authority {
            table: "public.other_records".to_owned(),
            ..authority.clone()
        };
        let other_database = Authority {
            database: "test2".to_owned(),
            ..authority.clone()
        };
        let shifted = Authority {
            database: "tes".to_owned(),
            table: "tpublic.idempotency_records".to_owned(),
            ..authority.clone()
        };
        let key = cache_key("idem-cache", &hasher, "scope", "key");
        for other in [other_table, other_database, shifted] {
            assert_ne!(
                cache_key("idem-cache", &other.key_hasher(), "scope", "key"),
                key
            );
        }
        assert_ne!(
            cache_key("idem-cache", &hasher, "a:b", "c"),
            cache_key("idem-cache", &hasher, "a", "b:c")
        );
        // The record keys of a RedisStore never collide with cache keys of the same prefix.
        assert_ne!(
            crate::stores::redis::record_key("idem-cache", "scope", "key"),
            key
        );
    }
}
