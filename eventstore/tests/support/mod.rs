//! Shared by the event store tests: scratch databases on either backend and
//! a small world (members, a cafe) to run commands in.

#![allow(dead_code)]

pub mod tap;

use domain::values::{
    Amount, DisplayName, EarnPolicy, Handle, MemberId, Points, PostBody, PostId, Provider, PurchaseRef, StoreId,
    StoreName,
};
use domain::{Member, MemberCommand, PostCommand, Store, StoreCommand, WalletCommand};
use eventstore::chain::{HashedFields, event_hash};
use eventstore::scratch::ScratchDatabase;
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Generates, for each named `async fn name(backend: Backend)`, one
/// `#[tokio::test]` on SQLite (module `sqlite`) and one on MariaDB (`mysql`).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Mysql).await
                }
            )*
        }
    };
}

/// Which database a contract test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// A fresh database of `backend`; `None` only when MySQL was explicitly
/// opted out of locally. A missing MariaDB fails the test with how to fix it.
pub async fn scratch(backend: Backend) -> Option<ScratchDatabase> {
    match backend {
        Backend::Sqlite => Some(ScratchDatabase::sqlite()),
        Backend::Mysql => ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")),
    }
}

/// A store on `db` with small snapshots and a follower that never runs, so
/// tests decide when caches go stale.
pub async fn open(db: &ScratchDatabase, config: EventStoreConfig) -> EventStore {
    EventStore::open(&db.url, config).await.expect("the scratch database opens")
}

/// A store on `db` (as [`quiet`]) that counts the statements it runs for
/// which `counted` holds, given their SQL.
pub async fn open_counting(
    db: &ScratchDatabase,
    counted: fn(&str) -> bool,
) -> (EventStore, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    open_counting_with(db, quiet(), counted).await
}

/// Like [`open_counting`], with `config`.
pub async fn open_counting_with(
    db: &ScratchDatabase,
    config: EventStoreConfig,
    counted: fn(&str) -> bool,
) -> (EventStore, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (store, mut counters) = open_counting_each(db, config, &[counted]).await;
    (store, counters.remove(0))
}

/// Like [`open_counting_with`], with a counter for each of `counted`.
pub async fn open_counting_each(
    db: &ScratchDatabase,
    config: EventStoreConfig,
    counted: &[fn(&str) -> bool],
) -> (EventStore, Vec<std::sync::Arc<std::sync::atomic::AtomicUsize>>) {
    let mut connection = eventstore::connect(&db.url, 4).await.expect("connects");
    eventstore::migrate(&connection).await.expect("migrates");
    let counters: Vec<_> =
        counted.iter().map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0))).collect();
    let counting: Vec<_> = counted.iter().copied().zip(counters.clone()).collect();
    connection.set_metric_callback(move |info| {
        for (counted, counter) in &counting {
            if counted(&info.statement.sql) {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    (EventStore::with_connection(connection, config).await.expect("opens"), counters)
}

pub fn quiet() -> EventStoreConfig {
    EventStoreConfig { follow_interval: std::time::Duration::from_secs(3600), ..EventStoreConfig::default() }
}

pub fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("member id literal is valid")
}

pub fn cafe() -> StoreId {
    StoreId::parse("cafe").expect("store id literal is valid")
}

pub fn amount(raw: u64) -> Amount {
    Amount::new(raw).expect("amount literal is valid")
}

pub fn points(raw: u64) -> Points {
    Points::new(raw).expect("points literal is valid")
}

/// `author`'s post `id` about the cafe, cross-posted to Facebook.
pub fn cafe_post(author: &str, id: &str) -> PostCommand {
    PostCommand::Create {
        post: PostId::parse(id).expect("post id literal is valid"),
        author: member(author),
        store: cafe(),
        body: PostBody::parse("Flat white").expect("post body literal is valid"),
        photos: vec![],
        providers: vec![Provider::Facebook],
    }
}

/// 10% of the amount paid, no cap, from 1 up.
pub fn tenth() -> EarnPolicy {
    EarnPolicy::new(1_000, None, 1).expect("policy literal is valid")
}

/// Registers `members` and the `cafe` (owned by the first, earning 10%).
pub async fn world(store: &EventStore, members: &[&str]) {
    for id in members {
        let command = MemberCommand::Register {
            member: member(id),
            handle: Handle::parse(*id).expect("handle literal is valid"),
            display_name: DisplayName::parse(id.to_uppercase()).expect("display name literal is valid"),
        };
        store.execute::<Member>(id, command, CommandContext::default()).await.expect("member registers");
    }
    let command = StoreCommand::Register {
        store: cafe(),
        name: StoreName::parse("The Cafe").expect("store name literal is valid"),
        owner: member(members[0]),
        policy: tenth(),
    };
    store.execute::<Store>("cafe", command, CommandContext::default()).await.expect("cafe registers");
}

/// An earn of `paid` (so `paid / 10` points) at the cafe under a unique purchase ref.
pub fn earn(who: &str, purchase_ref: &str, paid: u64) -> WalletCommand {
    WalletCommand::Earn {
        member: member(who),
        store: cafe(),
        purchase_ref: PurchaseRef::parse(purchase_ref).expect("purchase ref literal is valid"),
        amount: amount(paid),
    }
}

/// Appends the stored `PointsEarned` v1 fixture (wallet `old`, 250 points at
/// the cafe) as a build of that time wrote it: raw rows, chained hashes.
pub async fn import_v1_fixture(store: &EventStore) {
    #[derive(serde::Deserialize)]
    struct Row {
        aggregate_type: String,
        aggregate_id: String,
        sequence: u64,
        event_type: String,
        event_version: u32,
        payload: String,
        metadata: String,
        recorded_at_us: i64,
    }
    let fixture = include_str!("../fixtures/points_earned_v1.json");
    let rows: Vec<Row> = serde_json::from_str(fixture).expect("fixture parses");
    let mut previous = String::new();
    let mut position = store.read_head().await.expect("the head reads");
    for row in &rows {
        position += 1;
        let hash = event_hash(
            &previous,
            &HashedFields {
                aggregate_type: &row.aggregate_type,
                aggregate_id: &row.aggregate_id,
                sequence: row.sequence,
                event_type: &row.event_type,
                event_version: row.event_version,
                payload: &row.payload,
                metadata: &row.metadata,
                recorded_at_us: row.recorded_at_us,
            },
        );
        let placeholders = match store.backend() {
            DbBackend::MySql => "?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
            _ => "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10",
        };
        let insert = Statement::from_sql_and_values(
            store.backend(),
            format!(
                "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                 payload, metadata, recorded_at_us, hash) VALUES ({placeholders})"
            ),
            [
                (position as i64).into(),
                row.aggregate_type.clone().into(),
                row.aggregate_id.clone().into(),
                (row.sequence as i64).into(),
                row.event_type.clone().into(),
                i64::from(row.event_version).into(),
                row.payload.clone().into(),
                row.metadata.clone().into(),
                row.recorded_at_us.into(),
                hash.clone().into(),
            ],
        );
        store.db().execute_raw(insert).await.expect("fixture row inserts");
        previous = hash;
    }
    let head =
        Statement::from_string(store.backend(), format!("UPDATE log_head SET position = {position} WHERE id = 1"));
    store.db().execute_raw(head).await.expect("the head moves");
}
