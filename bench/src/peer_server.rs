//! The peer of the `api` mode's `peer` part: the server a user would build
//! instead of running pointstream, in a process of its own (`bench
//! peer-server`), as plain as such a server gets. async-graphql 7 on poem
//! (the request read by `async-graphql-poem`'s extractor, the answer written
//! by its response), sqlx's MySQL pool, one `earnPoints` mutation with the
//! arguments and the answer of pointstream's as far as a client of `earnPoints`
//! reads them (`member`, `store`, `purchaseRef`, `amount`; `position`,
//! `replayed`, `balance { balance }`), an HS256 bearer token checked on every
//! request, and each mutation one transaction:
//!
//! 1. the purchase's row, the idempotency key: unique on (store, purchase
//!    ref); a repeated purchase ref answers the first earn's outcome;
//! 2. the balance: `INSERT ... ON DUPLICATE KEY UPDATE balance = balance + ?`;
//! 3. the balance read back;
//! 4. the ledger row, with the balance after it (the first outcome that a
//!    repeat answers with, its id the position);
//!
//! then `COMMIT`. No events, no hash chain, no read models apart from the
//! balance and the ledger, no projections, no metrics.

use std::time::Duration;

use anyhow::Context as _;
use async_graphql::{Context, EmptySubscription, ErrorExtensions, Object, Schema, SimpleObject};
use async_graphql_poem::{GraphQLRequest, GraphQLResponse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use poem::http::{HeaderMap, header};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, Server, handler, post};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{Executor, MySql, Transaction};
use tokio::io::AsyncReadExt;

/// The earn rate of the store the benchmark registers, in basis points of
/// the amount paid (`crate::pointstream::policy`: 10%, no cap, from 1 up).
pub const RATE_BASIS_POINTS: i64 = 1_000;

/// The peer's tables, created when it starts: InnoDB, the indexes a ledger
/// needs (a member's history in order; one ledger row per purchase).
const TABLES: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS peer_purchases (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        store_id VARCHAR(64) NOT NULL,
        purchase_ref VARCHAR(128) NOT NULL,
        member_id VARCHAR(64) NOT NULL,
        amount BIGINT NOT NULL,
        created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        UNIQUE KEY peer_purchases_ref (store_id, purchase_ref)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS peer_balances (
        member_id VARCHAR(64) NOT NULL,
        store_id VARCHAR(64) NOT NULL,
        balance BIGINT NOT NULL,
        PRIMARY KEY (member_id, store_id)
    ) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS peer_ledger (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        purchase_id BIGINT NOT NULL,
        member_id VARCHAR(64) NOT NULL,
        store_id VARCHAR(64) NOT NULL,
        delta BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        UNIQUE KEY peer_ledger_purchase (purchase_id),
        KEY peer_ledger_member (member_id, store_id, id)
    ) ENGINE=InnoDB",
];

/// What a token must carry: a role, the store of a `staff` token, an expiry.
#[derive(Debug, serde::Deserialize)]
struct TokenClaims {
    role: String,
    #[serde(default)]
    store: Option<String>,
    #[allow(dead_code, reason = "checked by the token's validation")]
    exp: u64,
}

/// The bearer token of a request, if it had one.
struct Bearer(String);

/// How tokens are checked.
struct Tokens {
    key: DecodingKey,
    validation: Validation,
}

impl Tokens {
    fn new(secret: &str) -> Self {
        Self { key: DecodingKey::from_secret(secret.as_bytes()), validation: Validation::new(Algorithm::HS256) }
    }
}

/// The answer to an earn.
#[derive(SimpleObject)]
struct WalletResult {
    /// The ledger row's id.
    position: i64,
    /// True when the purchase had been earned for already: nothing new was written.
    replayed: bool,
    balance: Balance,
}

/// A member's balance at a store.
#[derive(SimpleObject)]
struct Balance {
    member: String,
    store: String,
    balance: i64,
}

struct Query;

#[Object]
impl Query {
    /// A member's balance at a store (0 before any earn).
    async fn balance(&self, ctx: &Context<'_>, member: String, store: String) -> async_graphql::Result<Balance> {
        let pool = ctx.data::<MySqlPool>()?;
        let balance: Option<i64> =
            sqlx::query_scalar("SELECT balance FROM peer_balances WHERE member_id = ? AND store_id = ?")
                .bind(&member)
                .bind(&store)
                .fetch_optional(pool)
                .await
                .map_err(internal)?;
        Ok(Balance { member, store, balance: balance.unwrap_or(0) })
    }
}

struct Mutation;

#[Object]
impl Mutation {
    /// Earn points for a purchase (staff of the store, or admin); a repeated
    /// purchase ref answers the first earn's outcome.
    async fn earn_points(
        &self,
        ctx: &Context<'_>,
        member: String,
        store: String,
        purchase_ref: String,
        amount: i64,
    ) -> async_graphql::Result<WalletResult> {
        let claims = ctx
            .data_opt::<Bearer>()
            .ok_or_else(|| coded("UNAUTHENTICATED", "a bearer token is required"))
            .and_then(|Bearer(token)| {
                let tokens = ctx.data::<Tokens>()?;
                jsonwebtoken::decode::<TokenClaims>(token, &tokens.key, &tokens.validation)
                    .map(|data| data.claims)
                    .map_err(|e| coded("UNAUTHENTICATED", format!("invalid token: {e}")))
            })?;
        let permitted = match claims.role.as_str() {
            "admin" => true,
            "staff" => claims.store.as_deref() == Some(store.as_str()),
            _ => false,
        };
        if !permitted {
            return Err(coded("FORBIDDEN", "not allowed to earn at this store"));
        }
        for (name, value, max) in [("member", &member, 64), ("store", &store, 64), ("purchaseRef", &purchase_ref, 128)]
        {
            if value.is_empty() || value.len() > max {
                return Err(coded("BAD_USER_INPUT", format!("{name} must be 1 to {max} bytes")));
            }
        }
        if amount <= 0 {
            return Err(coded("BAD_USER_INPUT", "amount must be positive"));
        }
        let points = points_for(amount).ok_or_else(|| coded("BAD_USER_INPUT", "the purchase earns no points"))?;
        let pool = ctx.data::<MySqlPool>()?;
        earn(pool, Earn { member: &member, store: &store, purchase_ref: &purchase_ref, amount, points })
            .await
            .map_err(internal)
    }
}

/// The points a purchase of `amount` earns at the store: 10%, rounded down;
/// `None` when that is none.
pub fn points_for(amount: i64) -> Option<i64> {
    let points = i64::try_from(i128::from(amount) * i128::from(RATE_BASIS_POINTS) / 10_000).ok()?;
    (points > 0).then_some(points)
}

/// One earn's arguments, checked.
struct Earn<'a> {
    member: &'a str,
    store: &'a str,
    purchase_ref: &'a str,
    amount: i64,
    points: i64,
}

/// The earn's transaction; a purchase already earned for answers its first outcome.
async fn earn(pool: &MySqlPool, earn: Earn<'_>) -> Result<WalletResult, sqlx::Error> {
    let Earn { member, store, purchase_ref, amount, points } = earn;
    let mut tx = pool.begin().await?;
    let claimed =
        sqlx::query("INSERT INTO peer_purchases (store_id, purchase_ref, member_id, amount) VALUES (?, ?, ?, ?)")
            .bind(store)
            .bind(purchase_ref)
            .bind(member)
            .bind(amount)
            .execute(&mut *tx)
            .await;
    let purchase = match claimed {
        Ok(done) => done.last_insert_id(),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            tx.rollback().await?;
            return replay(pool, store, purchase_ref).await;
        }
        Err(e) => return Err(e),
    };
    sqlx::query(
        "INSERT INTO peer_balances (member_id, store_id, balance) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE balance = balance + ?",
    )
    .bind(member)
    .bind(store)
    .bind(points)
    .bind(points)
    .execute(&mut *tx)
    .await?;
    let balance = read_balance(&mut tx, member, store).await?;
    let position = sqlx::query(
        "INSERT INTO peer_ledger (purchase_id, member_id, store_id, delta, balance_after) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(purchase)
    .bind(member)
    .bind(store)
    .bind(points)
    .bind(balance)
    .execute(&mut *tx)
    .await?
    .last_insert_id();
    tx.commit().await?;
    Ok(WalletResult {
        position: position as i64,
        replayed: false,
        balance: Balance { member: member.to_string(), store: store.to_string(), balance },
    })
}

async fn read_balance(tx: &mut Transaction<'_, MySql>, member: &str, store: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT balance FROM peer_balances WHERE member_id = ? AND store_id = ?")
        .bind(member)
        .bind(store)
        .fetch_one(&mut **tx)
        .await
}

/// The first outcome of the earn for `purchase_ref` at `store`.
async fn replay(pool: &MySqlPool, store: &str, purchase_ref: &str) -> Result<WalletResult, sqlx::Error> {
    let (position, member, balance): (i64, String, i64) = sqlx::query_as(
        "SELECT l.id, l.member_id, l.balance_after FROM peer_purchases p \
         JOIN peer_ledger l ON l.purchase_id = p.id WHERE p.store_id = ? AND p.purchase_ref = ?",
    )
    .bind(store)
    .bind(purchase_ref)
    .fetch_one(pool)
    .await?;
    Ok(WalletResult { position, replayed: true, balance: Balance { member, store: store.to_string(), balance } })
}

fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn internal(e: sqlx::Error) -> async_graphql::Error {
    coded("INTERNAL", e.to_string())
}

type PeerSchema = Schema<Query, Mutation, EmptySubscription>;

#[handler]
async fn graphql(schema: Data<&PeerSchema>, headers: &HeaderMap, request: GraphQLRequest) -> GraphQLResponse {
    let mut request = request.0;
    let bearer = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if let Some(token) = bearer.and_then(|value| value.strip_prefix("Bearer ")) {
        request = request.data(Bearer(token.to_string()));
    }
    schema.execute(request).await.into()
}

/// Creates the peer's tables on `database_url` and serves it on `listen`
/// (a pool of `max_connections`) until stdin closes; prints where it
/// listens, as `bench api-server` does.
pub async fn serve(database_url: &str, secret: &str, max_connections: u32, listen: &str) -> anyhow::Result<()> {
    let pool = MySqlPoolOptions::new()
        .max_connections(max_connections)
        // Not a ping before every transaction (sqlx's default): the server is
        // on loopback and its connections never idle for long.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .connect(database_url)
        .await
        .context("the peer cannot connect to its database")?;
    for table in TABLES {
        pool.execute(table).await.context("the peer cannot create its tables")?;
    }
    let schema =
        Schema::build(Query, Mutation, EmptySubscription).data(pool.clone()).data(Tokens::new(secret)).finish();
    let app = Route::new().at("/graphql", post(graphql)).data(schema);
    let acceptor = TcpListener::bind(listen.to_string()).into_acceptor().await.context("the peer cannot listen")?;
    let address = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the peer's listening address")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
        app,
        async move {
            let _ = stopped.await;
        },
        None,
    ));
    println!("{}{address}", crate::api_server::LISTENING);

    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    let _ = stop.send(());
    server.await??;
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::points_for;

    #[test]
    fn points_are_the_benchmark_stores_policy() {
        let policy = crate::pointstream::policy().unwrap();
        for amount in [1, 9, 10, 11, 999, 1_000, 1_234, 1_000_000] {
            let expected = policy.points_for(domain::values::Amount::new(amount).unwrap()).map(|p| p.get() as i64);
            assert_eq!(points_for(amount as i64), expected, "amount {amount}");
        }
    }
}
