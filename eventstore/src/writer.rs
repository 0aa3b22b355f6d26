//! Group commit: one task per process appends the events of many commands in
//! one transaction.
//!
//! Positions come from the one-row `log_head` table, bumped as the first
//! statement of every append transaction. That row lock is held to commit, so
//! appenders in all processes take positions and commit in the same order:
//! positions are dense, gap-free (a rolled-back transaction rolls its bump
//! back) and a reader never sees position `p + 1` before `p`. Batching many
//! commands into one transaction amortises the lock and the commit's fsync.
//!
//! On MySQL a batch goes as one [`Script`] when it can: BEGIN, every statement
//! and COMMIT in one round trip ([`commit_scripted`]). The script guesses the
//! head (where this process's last append left it) and each inline
//! projection's checkpoint; a wrong guess fails it, and the batch is then
//! appended statement by statement ([`commit`]), which reads what it must.
//!
//! When a batch fails on a unique key (a concurrent writer in another process
//! took a sequence, a claim or a command id), each request of the batch is
//! retried alone so that every command gets its own verdict.

use std::sync::{Arc, LazyLock, RwLock};

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, Query, Value};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, SqlErr, Statement,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use migrations::tables::{Claims, CommandLog, Events, Snapshots};

use crate::connection::Shapes;
use crate::inline::{Inline, Projected};
use crate::log::EVENT_COLUMNS;
use crate::outcome::CommandOutcome;
use crate::recent::RecentEvents;
use crate::record::RecordedEvent;
use crate::script::{InsertInto, Ran, Script, Unscriptable, fails_unless};

/// Counter of group commits, by `path`: `script` (one round trip for every
/// statement) or `statements` (one round trip each).
pub const GROUP_COMMITS: &str = "pointstream_group_commits_total";
/// Counter of scripts that failed and were rolled back, their batch then
/// appended statement by statement (another process appended meanwhile,
/// a projection's checkpoint moved behind this process, a conflict).
pub const SCRIPTS_ROLLED_BACK: &str = "pointstream_group_commit_scripts_rolled_back_total";

/// One event ready to be stored (position still to come).
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub event_version: u32,
    pub payload: String,
    pub metadata: String,
    pub recorded_at_us: i64,
    pub hash: String,
}

/// The command-log row of a keyed command.
#[derive(Debug, Clone)]
pub(crate) struct CommandRecord {
    pub command_id: String,
    pub fingerprint: String,
}

/// A snapshot to store with the events.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRecord {
    pub sequence: u64,
    pub state: String,
    pub hash: String,
}

/// Everything one command writes, atomically.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub events: Vec<NewEvent>,
    pub command: Option<CommandRecord>,
    pub claims: Vec<domain::Claim>,
    pub snapshot: Option<SnapshotRecord>,
    pub reply: oneshot::Sender<Result<CommandOutcome, AppendError>>,
    /// The span that waits for this append, when traces are on.
    pub trace: Option<Traced>,
}

/// The trace of a command waiting for its group commit.
#[derive(Debug)]
pub(crate) struct Traced {
    /// The waiting span's context: the group commit's parent, or a link.
    context: opentelemetry::Context,
    /// When it was queued.
    queued_at: std::time::Instant,
}

impl Traced {
    /// `span`'s context, when traces are on.
    pub fn of(span: &tracing::Span) -> Option<Traced> {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        crate::trace::enabled().then(|| Traced { context: span.context(), queued_at: std::time::Instant::now() })
    }
}

/// The span of one group commit, when any of its commands is traced: a child
/// of the first traced command's append, linked to the others', with the
/// batch's size and how long its first command waited in the queue.
fn group_commit_span(batch: &[AppendRequest]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut traced = batch.iter().filter_map(|request| request.trace.as_ref());
    let Some(first) = traced.next() else { return tracing::Span::none() };
    let queued_us = batch
        .iter()
        .filter_map(|request| request.trace.as_ref())
        .map(|t| t.queued_at.elapsed().as_micros() as u64)
        .max()
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: crate::trace::TARGET,
        "group_commit",
        commands = batch.len(),
        events = batch.iter().map(|r| r.events.len()).sum::<usize>(),
        queued_us,
        path = tracing::field::Empty,
    );
    if span.set_parent(first.context.clone()).is_err() {
        tracing::debug!("the group commit's span has started before its parent was set");
    }
    for other in traced.take(crate::trace::MAX_LINKS) {
        span.add_link(other.context.span().span_context().clone());
    }
    span
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// Another writer appended to the stream first.
    Conflict,
    /// This claim belongs to an aggregate already.
    ClaimTaken(domain::Claim),
    /// The command id was recorded by a concurrent execution.
    DuplicateCommand,
    /// The database failed.
    Database(DbErr),
}

/// Limits of one group commit.
const MAX_REQUESTS_PER_BATCH: usize = 256;
/// Most rows in one INSERT (a power of two, see [`Shapes`]).
const ROWS_PER_INSERT: usize = 256;

/// Where appends go: the database, the inline projections written in the
/// same transactions, and the memory of recent events.
pub(crate) struct Sink {
    pub db: DatabaseConnection,
    pub inline: Arc<RwLock<Vec<Arc<Inline>>>>,
    pub recent: Arc<RecentEvents>,
    /// The connections run READ COMMITTED already (the group commit's own
    /// MySQL pool); otherwise each MySQL append with inline projections asks for it.
    pub read_committed: bool,
    /// Appends may go as one [`Script`]: the group commit's own MySQL
    /// connections, which run in strict mode, unless configured otherwise.
    pub scripts: bool,
}

impl Sink {
    fn inline(&self) -> Vec<Arc<Inline>> {
        self.inline.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Connections of the group commit's own pool: one appends, one answers
/// the questions a failed append raises.
const WRITER_CONNECTIONS: u32 = 2;

/// Runs [`run`] on a thread of its own, with a current-thread runtime and
/// its own connections to `url`, so that no other work of the process delays
/// its round trips. Returns once it is connected; it ends when every sender
/// of `requests` is dropped.
pub(crate) async fn spawn_thread(
    url: String,
    inline: Arc<RwLock<Vec<Arc<Inline>>>>,
    recent: Arc<RecentEvents>,
    requests: mpsc::Receiver<AppendRequest>,
    head: Arc<watch::Sender<u64>>,
    scripts: bool,
) -> Result<(), crate::error::EventStoreError> {
    let (connected, ready) = oneshot::channel();
    std::thread::Builder::new()
        .name("pointstream-writer".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = connected.send(Err(crate::error::EventStoreError::Database(DbErr::Custom(format!(
                        "cannot start the group commit's runtime: {err}"
                    )))));
                    return;
                }
            };
            runtime.block_on(async move {
                match crate::connection::connect_writer(&url, WRITER_CONNECTIONS).await {
                    Ok(db) => {
                        let _ = connected.send(Ok(()));
                        run(Sink { db, inline, recent, read_committed: true, scripts }, requests, head).await;
                    }
                    Err(err) => {
                        let _ = connected.send(Err(err));
                    }
                }
            });
        })
        .map_err(|err| {
            crate::error::EventStoreError::Database(DbErr::Custom(format!("cannot start the group commit: {err}")))
        })?;
    ready.await.map_err(|_| crate::error::EventStoreError::Closed)?
}

/// Runs until every sender is dropped. Committed events go to `recent`, and
/// inline projections learn where they stand, before the head moves: readers
/// woken by the head find them there.
pub(crate) async fn run(sink: Sink, mut requests: mpsc::Receiver<AppendRequest>, head: Arc<watch::Sender<u64>>) {
    let db = &sink.db;
    let recent = &sink.recent;
    let mut batch = Vec::with_capacity(MAX_REQUESTS_PER_BATCH);
    // Where this process's last append left the log's head, while no append
    // has failed since: the guess a script starts from.
    let mut head_was: Option<u64> = None;
    while requests.recv_many(&mut batch, MAX_REQUESTS_PER_BATCH).await > 0 {
        // A caller that stopped waiting (its deadline passed, or its client
        // went away) while its command sat in the queue is told nothing: the
        // command is dropped before it reaches a transaction, so "unknown"
        // settles as "not written" and a retry with its key runs it afresh.
        let queued = batch.len();
        batch.retain(|request| !request.reply.is_closed());
        if batch.len() < queued {
            metrics::counter!("pointstream_appends_abandoned_total").increment((queued - batch.len()) as u64);
        }
        if batch.is_empty() {
            continue;
        }
        let inline = sink.inline();
        let inline = Projections { inline: &inline, read_committed: sink.read_committed };
        let span = group_commit_span(&batch);
        // The batch, and its requests one by one should it fail, in its span.
        async {
            let scripted = match head_was.filter(|_| sink.scripts) {
                Some(was) => commit_scripted(db, &batch, inline, recent, was).await,
                None => Ok(None),
            };
            let batch_result = match scripted {
                Ok(Some(outcomes)) => {
                    tracing::Span::current().record("path", "script");
                    Ok(outcomes)
                }
                Ok(None) => {
                    tracing::Span::current().record("path", "statements");
                    commit(db, &batch, inline, recent).await
                }
                Err(err) => Err(err),
            };
            head_was = None;
            match batch_result {
                Ok(outcomes) => {
                    head_was = outcomes.iter().map(|o| o.last_position).max();
                    publish(&head, &outcomes);
                    for (request, outcome) in batch.drain(..).zip(outcomes) {
                        let _ = request.reply.send(Ok(outcome));
                    }
                }
                Err(_) if batch.len() > 1 => {
                    tracing::Span::current().record("path", "one by one");
                    for request in batch.drain(..) {
                        let result = commit_one(db, &request, inline, recent).await;
                        if let Ok(outcome) = &result {
                            publish(&head, std::slice::from_ref(outcome));
                        }
                        let _ = request.reply.send(result);
                    }
                }
                Err(err) => {
                    if let Some(request) = batch.pop() {
                        let result = classify(db, &request, err).await;
                        let _ = request.reply.send(Err(result));
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }
}

fn publish(head: &watch::Sender<u64>, outcomes: &[CommandOutcome]) {
    if let Some(last) = outcomes.iter().map(|o| o.last_position).max() {
        head.send_if_modified(|h| {
            let newer = last > *h;
            if newer {
                *h = last;
            }
            newer
        });
    }
}

/// The inline projections an append writes, and whether its connection
/// already reads committed data at every statement.
#[derive(Clone, Copy)]
struct Projections<'a> {
    inline: &'a [Arc<Inline>],
    read_committed: bool,
}

impl Projections<'_> {
    /// The isolation level an append transaction asks for: READ COMMITTED
    /// with inline projections on MySQL, unless the connection runs it already.
    fn isolation(&self, db: &DatabaseConnection) -> Option<IsolationLevel> {
        (!self.inline.is_empty() && !self.read_committed && db.get_database_backend() == DbBackend::MySql)
            .then_some(IsolationLevel::ReadCommitted)
    }

    /// Opens the append transaction. With inline projections on MySQL it
    /// runs READ COMMITTED: each projection reads its rows after locking its
    /// checkpoint, and a snapshot fixed by an earlier read could predate it.
    ///
    /// Nothing is sent before BEGIN, so a BEGIN that fails is tried again
    /// (see [`on_a_live_connection`]).
    async fn begin(&self, db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
        let isolation = self.isolation(db);
        on_a_live_connection("BEGIN", || db.begin_with_config(isolation, None)).await
    }
}

/// Runs `attempt`, a first round trip that changes nothing unless it
/// succeeds, until it succeeds or every connection of the group commit's
/// pool, and then a new one, had its turn. Those connections are not pinged
/// before use: one that broke while idle (the server restarted, say), or
/// together with the one an append just lost, fails its first round trip,
/// and the pool drops it when it comes back.
async fn on_a_live_connection<T, Fut>(what: &str, attempt: impl Fn() -> Fut) -> Result<T, DbErr>
where
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut failed = 0;
    loop {
        match attempt().await {
            Err(err) if failed < WRITER_CONNECTIONS => {
                tracing::warn!(%err, "{what} failed; trying another connection");
                failed += 1;
            }
            done => return done,
        }
    }
}

async fn commit_one(
    db: &DatabaseConnection,
    request: &AppendRequest,
    inline: Projections<'_>,
    recent: &RecentEvents,
) -> Result<CommandOutcome, AppendError> {
    match commit(db, std::slice::from_ref(request), inline, recent).await {
        Ok(mut outcomes) => outcomes.pop().ok_or(AppendError::Database(DbErr::Custom("empty commit".into()))),
        Err(err) => match already_stored(db, request).await {
            // A commit whose acknowledgement was lost: it did land, exactly once.
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(classify(db, request, err).await),
            Err(lookup) => Err(AppendError::Database(lookup)),
        },
    }
}

/// The outcome of `request` if its events are already stored, byte for byte
/// (same chain hash): its earlier commit succeeded although it reported an error.
async fn already_stored(db: &DatabaseConnection, request: &AppendRequest) -> Result<Option<CommandOutcome>, DbErr> {
    let (Some(first), Some(last)) = (request.events.first(), request.events.last()) else { return Ok(None) };
    let select = Query::select()
        .columns([Events::Position, Events::Hash])
        .from(Events::Table)
        .and_where(Expr::col(Events::AggregateType).eq(first.aggregate_type))
        .and_where(Expr::col(Events::AggregateId).eq(first.aggregate_id.as_str()))
        .and_where(Expr::col(Events::Sequence).eq(first.sequence as i64))
        .to_owned();
    // Asked after a connection failed: the pool's others may have failed with it.
    let found = on_a_live_connection("asking the log for an append in doubt", || db.query_one(&select)).await?;
    let Some(row) = found else { return Ok(None) };
    let hash: String = row.try_get("", "hash")?;
    if hash != first.hash {
        return Ok(None);
    }
    let first_position = row.try_get::<i64>("", "position")? as u64;
    Ok(Some(CommandOutcome {
        command_id: request.command.as_ref().map(|c| c.command_id.clone()).unwrap_or_default(),
        aggregate_type: first.aggregate_type.to_string(),
        aggregate_id: first.aggregate_id.clone(),
        sequence: last.sequence,
        first_position,
        last_position: first_position + request.events.len() as u64 - 1,
        replayed: false,
    }))
}

/// Names the unique key a failed append ran into.
async fn classify(db: &DatabaseConnection, request: &AppendRequest, err: DbErr) -> AppendError {
    if !matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return AppendError::Database(err);
    }
    // The same command landing elsewhere first also took its claims: ask about it first.
    if let Some(command) = &request.command {
        let recorded = db
            .query_one(
                Query::select()
                    .column(CommandLog::CommandId)
                    .from(CommandLog::Table)
                    .and_where(Expr::col(CommandLog::CommandId).eq(command.command_id.as_str())),
            )
            .await;
        match recorded {
            Ok(Some(_)) => return AppendError::DuplicateCommand,
            Ok(None) => {}
            Err(e) => return AppendError::Database(e),
        }
    }
    for claim in &request.claims {
        let taken = db
            .query_one(
                Query::select()
                    .column(Claims::Kind)
                    .from(Claims::Table)
                    .and_where(Expr::col(Claims::Kind).eq(claim.kind))
                    .and_where(Expr::col(Claims::ClaimKey).eq(claim.key.as_str())),
            )
            .await;
        match taken {
            Ok(Some(_)) => return AppendError::ClaimTaken(claim.clone()),
            Ok(None) => {}
            Err(e) => return AppendError::Database(e),
        }
    }
    AppendError::Conflict
}

/// Reserves `count` positions; returns the new head.
async fn reserve(txn: &impl ConnectionTrait, count: u64) -> Result<u64, DbErr> {
    let backend = txn.get_database_backend();
    match backend {
        DbBackend::MySql => {
            // LAST_INSERT_ID(expr) hands the new value back in the OK packet:
            // one round trip, and the row stays locked until commit.
            let result = txn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    "UPDATE log_head SET position = LAST_INSERT_ID(position + ?) WHERE id = 1",
                    [(count as i64).into()],
                ))
                .await?;
            if result.rows_affected() != 1 {
                return Err(DbErr::RecordNotFound("log_head row 1 (run the migrations)".into()));
            }
            Ok(result.last_insert_id())
        }
        _ => {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    "UPDATE log_head SET position = position + ? WHERE id = 1 RETURNING position",
                    [(count as i64).into()],
                ))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("log_head row 1 (run the migrations)".into()))?;
            Ok(row.try_get::<i64>("", "position")? as u64)
        }
    }
}

/// A batch laid out at its positions: each request's outcome and each
/// event's row.
struct Layout<'a> {
    outcomes: Vec<CommandOutcome>,
    events: Vec<(u64, &'a NewEvent)>,
}

impl<'a> Layout<'a> {
    /// `batch`'s events at positions from `first` on, in order.
    fn new(batch: &'a [AppendRequest], first: u64) -> Self {
        let mut next = first;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for request in batch {
            let first = next;
            for event in &request.events {
                events.push((next, event));
                next += 1;
            }
            let last_event = request.events.last();
            outcomes.push(CommandOutcome {
                command_id: request.command.as_ref().map(|c| c.command_id.clone()).unwrap_or_default(),
                aggregate_type: last_event.map(|e| e.aggregate_type.to_string()).unwrap_or_default(),
                aggregate_id: last_event.map(|e| e.aggregate_id.clone()).unwrap_or_default(),
                sequence: last_event.map_or(0, |e| e.sequence),
                first_position: first,
                last_position: next - 1,
                replayed: false,
            });
        }
        Layout { outcomes, events }
    }

    /// The batch's events as recorded.
    fn recorded(&self) -> Vec<RecordedEvent> {
        self.events
            .iter()
            .map(|(position, e)| RecordedEvent {
                position: *position,
                aggregate_type: e.aggregate_type.to_string(),
                aggregate_id: e.aggregate_id.clone(),
                sequence: e.sequence,
                event_type: e.event_type.clone(),
                event_version: e.event_version,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                recorded_at_us: e.recorded_at_us,
                hash: e.hash.clone(),
            })
            .collect()
    }

    /// The rows of the events, command-log rows, claims and snapshots of
    /// `batch` (laid out here), each with the insert it goes in.
    fn rows(&self, batch: &[AppendRequest], now_us: i64) -> Result<[TableRows; 4], DbErr> {
        let tables = &*TABLES;
        let events = self
            .events
            .iter()
            .map(|(position, e)| {
                vec![
                    (*position as i64).into(),
                    e.aggregate_type.into(),
                    e.aggregate_id.as_str().into(),
                    (e.sequence as i64).into(),
                    e.event_type.as_str().into(),
                    (e.event_version as i32).into(),
                    e.payload.as_str().into(),
                    e.metadata.as_str().into(),
                    e.recorded_at_us.into(),
                    e.hash.as_str().into(),
                ]
            })
            .collect();
        let (mut commands, mut claims, mut snapshots) = (Vec::new(), Vec::new(), Vec::new());
        for (request, outcome) in batch.iter().zip(&self.outcomes) {
            if let Some(command) = &request.command {
                let json = serde_json::to_string(outcome).map_err(|e| DbErr::Custom(e.to_string()))?;
                commands.push(vec![
                    command.command_id.as_str().into(),
                    command.fingerprint.as_str().into(),
                    outcome.aggregate_type.as_str().into(),
                    outcome.aggregate_id.as_str().into(),
                    json.into(),
                    now_us.into(),
                ]);
            }
            for claim in &request.claims {
                claims.push(vec![
                    claim.kind.into(),
                    claim.key.as_str().into(),
                    outcome.aggregate_type.as_str().into(),
                    outcome.aggregate_id.as_str().into(),
                ]);
            }
            if let Some(snapshot) = &request.snapshot {
                snapshots.push(vec![
                    outcome.aggregate_type.as_str().into(),
                    outcome.aggregate_id.as_str().into(),
                    (snapshot.sequence as i64).into(),
                    snapshot.state.as_str().into(),
                    snapshot.hash.as_str().into(),
                    now_us.into(),
                ]);
            }
        }
        Ok([
            (&tables.events, events),
            (&tables.commands, commands),
            (&tables.claims, claims),
            (&tables.snapshots, snapshots),
        ])
    }

    /// The inserts of [`Layout::rows`] as statements to run prepared.
    fn inserts(&self, batch: &[AppendRequest], now_us: i64) -> Result<Vec<InsertStatement>, DbErr> {
        let mut statements = Vec::new();
        for (insert, rows) in self.rows(batch, now_us)? {
            for chunk in Shapes::Prepared.chunks(&rows, ROWS_PER_INSERT) {
                statements.push(insert.statement(chunk).map_err(|e| DbErr::Custom(e.to_string()))?);
            }
        }
        Ok(statements)
    }

    /// The inserts of [`Layout::rows`], written into `script`.
    fn script(&self, batch: &[AppendRequest], now_us: i64, script: &mut Script) -> Result<(), Unscriptable> {
        for (insert, rows) in self.rows(batch, now_us).map_err(|e| Unscriptable(e.to_string()))? {
            for chunk in Shapes::Script.chunks(&rows, ROWS_PER_INSERT) {
                script.push_insert(insert, chunk)?;
            }
        }
        Ok(())
    }
}

/// Rows to insert with the insert they go in.
type TableRows = (&'static InsertInto, Vec<Vec<Value>>);

/// The tables an append inserts into.
struct Tables {
    events: InsertInto,
    commands: InsertInto,
    claims: InsertInto,
    snapshots: InsertInto,
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    // Through `dyn Iden`, whose methods need no import (its `to_string` would clash with `ToString`'s).
    let name = |iden: &dyn sea_orm::sea_query::Iden| iden.to_string();
    let names = |idens: &[&dyn sea_orm::sea_query::Iden]| idens.iter().map(|iden| name(*iden)).collect::<Vec<_>>();
    let snapshot_key = names(&[&Snapshots::AggregateType, &Snapshots::AggregateId]);
    let snapshot_data = names(&[&Snapshots::Sequence, &Snapshots::State, &Snapshots::Hash, &Snapshots::TakenAtUs]);
    Tables {
        events: InsertInto::new(name(&Events::Table), EVENT_COLUMNS.iter().map(|column| name(column))),
        commands: InsertInto::new(
            name(&CommandLog::Table),
            names(&[
                &CommandLog::CommandId,
                &CommandLog::Fingerprint,
                &CommandLog::AggregateType,
                &CommandLog::AggregateId,
                &CommandLog::Outcome,
                &CommandLog::RecordedAtUs,
            ]),
        ),
        claims: InsertInto::new(
            name(&Claims::Table),
            names(&[&Claims::Kind, &Claims::ClaimKey, &Claims::AggregateType, &Claims::AggregateId]),
        ),
        snapshots: InsertInto::new(name(&Snapshots::Table), [snapshot_key.clone(), snapshot_data.clone()].concat())
            .updating(snapshot_key, snapshot_data),
    }
});

/// Appends every request of `batch` in one transaction, with the inline
/// projections' rows, and notes its events in `recent`; its outcomes.
async fn commit(
    db: &DatabaseConnection,
    batch: &[AppendRequest],
    projections: Projections<'_>,
    recent: &RecentEvents,
) -> Result<Vec<CommandOutcome>, DbErr> {
    let count: u64 = batch.iter().map(|r| r.events.len() as u64).sum();
    let txn = projections.begin(db).await?;
    let head = reserve(&txn, count).await?;
    let layout = Layout::new(batch, head + 1 - count);
    for insert in layout.inserts(batch, crate::clock::now_us())? {
        txn.execute(&insert).await?;
    }
    let recorded = layout.recorded();
    let mut projected = Vec::with_capacity(projections.inline.len());
    if !recorded.is_empty() {
        for projection in projections.inline {
            projected.push(projection.projection.project(&projection.batch(&txn, &recorded, recent)).await?);
        }
    }
    finish(txn, recorded, projections.inline, projected, recent, (head - count, head)).await?;
    metrics::counter!(GROUP_COMMITS, "path" => "statements").increment(1);
    Ok(layout.outcomes)
}

/// [`commit`] in one round trip: a [`Script`] of BEGIN, every statement
/// and COMMIT. It guesses that the log's head is still `head_was`, where
/// this process's last append left it, and asks every inline projection for
/// its statements without reading (see
/// [`crate::inline::InlineProjection::script`]). `Ok(None)`: a projection
/// cannot, a guess was wrong (the script failed and was rolled back) or the
/// batch is too large for a script; nothing is written, [`commit`] it. When
/// the connection fails with the outcome unknown, the log says whether the
/// batch landed (its first event, byte for byte).
async fn commit_scripted(
    db: &DatabaseConnection,
    batch: &[AppendRequest],
    projections: Projections<'_>,
    recent: &RecentEvents,
    head_was: u64,
) -> Result<Option<Vec<CommandOutcome>>, DbErr> {
    let count: u64 = batch.iter().map(|r| r.events.len() as u64).sum();
    let head = head_was + count;
    let layout = Layout::new(batch, head_was + 1);
    let recorded = layout.recorded();
    let Some((script, projected)) = build_script(&layout, batch, &recorded, projections, (head_was, head)) else {
        return Ok(None);
    };

    let noting = recent.noting().await;
    let ran = script.commit(db, projections.isolation(db).is_some()).await?;
    if !landed(db, batch, ran).await? {
        return Ok(None);
    }
    noted(noting, recorded, projections.inline, projected, recent, (head_was, head));
    metrics::counter!(GROUP_COMMITS, "path" => "script").increment(1);
    Ok(Some(layout.outcomes))
}

/// Whether `batch`, run as a script that ended as `ran`, is in the log: at
/// once when it committed or was rolled back; in doubt, if its first event
/// is stored byte for byte (as after a lost COMMIT acknowledgement).
async fn landed(db: &DatabaseConnection, batch: &[AppendRequest], ran: Ran) -> Result<bool, DbErr> {
    match ran {
        Ran::Committed => Ok(true),
        Ran::RolledBack(err) => {
            tracing::debug!(%err, "the scripted append did not apply; appending statement by statement");
            metrics::counter!(SCRIPTS_ROLLED_BACK).increment(1);
            Ok(false)
        }
        Ran::InDoubt(err) => {
            tracing::warn!(%err, "the scripted append's connection failed; asking the log whether it landed");
            let Some(first) = batch.first() else { return Ok(false) };
            Ok(already_stored(db, first).await?.is_some())
        }
    }
}

/// The script of [`commit_scripted`] and what each inline projection will
/// have done; `None` if a statement has no script form or a projection
/// cannot write without reading.
fn build_script(
    layout: &Layout<'_>,
    batch: &[AppendRequest],
    recorded: &[RecordedEvent],
    projections: Projections<'_>,
    (head_was, head): (u64, u64),
) -> Option<(Script, Vec<Projected>)> {
    // The projections first: the one most likely to say no.
    let mut projected = Vec::with_capacity(projections.inline.len());
    let mut written = Vec::with_capacity(projections.inline.len());
    if !recorded.is_empty() {
        for projection in projections.inline {
            let (done, statements) = projection.script(recorded)?;
            projected.push(done);
            written.push(statements);
        }
    }
    let mut script = Script::new();
    // The head moves from where it was guessed to be, or the script fails:
    // the positions written in below are then someone else's.
    script
        .push_sql(
            &format!("UPDATE log_head SET position = {} WHERE id = 1", fails_unless("position = ?")),
            &[(head_was as i64).into(), (head as i64).into()],
        )
        .ok()?;
    layout.script(batch, crate::clock::now_us(), &mut script).ok()?;
    for statements in written {
        script.append(statements).ok()?;
    }
    Some((script, projected))
}

/// Commits `txn`, which appended `recorded` (positions `(before, head]`),
/// and tells `recent` and the inline projections.
async fn finish(
    txn: DatabaseTransaction,
    recorded: Vec<RecordedEvent>,
    inline: &[Arc<Inline>],
    projected: Vec<Projected>,
    recent: &RecentEvents,
    range: (u64, u64),
) -> Result<(), DbErr> {
    let noting = recent.noting().await;
    txn.commit().await?;
    noted(noting, recorded, inline, projected, recent, range);
    Ok(())
}

/// Tells `recent` (whose `noting` guard was taken before the commit) and the
/// inline projections that `recorded` (positions `(before, head]`) committed.
fn noted(
    noting: tokio::sync::MutexGuard<'_, ()>,
    recorded: Vec<RecordedEvent>,
    inline: &[Arc<Inline>],
    projected: Vec<Projected>,
    recent: &RecentEvents,
    (before, head): (u64, u64),
) {
    recent.committed(recorded);
    drop(noting);
    for (projection, projected) in inline.iter().zip(projected) {
        projection.committed(before, head, projected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::ScratchDatabase;

    const NONE: Projections<'static> = Projections { inline: &[], read_committed: false };

    fn request(hash: &str) -> (AppendRequest, oneshot::Receiver<Result<CommandOutcome, AppendError>>) {
        let (reply, answer) = oneshot::channel();
        let event = NewEvent {
            aggregate_type: "Wallet",
            aggregate_id: "ann".into(),
            sequence: 1,
            event_type: "WalletOpened".into(),
            event_version: 1,
            payload: r#"{"member":"ann"}"#.into(),
            metadata: r#"{"command_id":"c1","correlation_id":"c1"}"#.into(),
            recorded_at_us: 1,
            hash: hash.into(),
        };
        (
            AppendRequest {
                events: vec![event],
                command: None,
                claims: Vec::new(),
                snapshot: None,
                reply,
                trace: None,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn a_retried_append_that_had_landed_reports_its_outcome_not_a_conflict() {
        let scratch = ScratchDatabase::sqlite();
        let db = crate::connect(&scratch.url, 2).await.expect("connects");
        crate::migrate(&db).await.expect("migrates");
        let (first, _answer) = request("h1");
        let recent = RecentEvents::new(16);
        let landed = commit_one(&db, &first, NONE, &recent).await.expect("lands");

        // The same request again, as after a commit whose acknowledgement was lost.
        let again = commit_one(&db, &first, NONE, &recent).await.expect("recognised as already stored");
        assert_eq!((again.first_position, again.last_position), (landed.first_position, landed.last_position));
        assert_eq!(crate::log::head(&db).await.expect("head"), 1, "nothing written twice");

        // Other content at the same place is a genuine conflict.
        let (other, _answer) = request("h2");
        assert!(matches!(commit_one(&db, &other, NONE, &recent).await, Err(AppendError::Conflict)));
    }

    #[tokio::test]
    async fn a_script_in_doubt_counts_as_landed_only_if_its_first_event_is_stored() {
        let scratch = ScratchDatabase::sqlite();
        let db = crate::connect(&scratch.url, 2).await.expect("connects");
        crate::migrate(&db).await.expect("migrates");
        let recent = RecentEvents::new(16);
        let (stored, _answer) = request("h1");
        commit(&db, std::slice::from_ref(&stored), NONE, &recent).await.expect("lands");
        let lost = || Ran::InDoubt(DbErr::Custom("connection reset".into()));

        assert!(landed(&db, std::slice::from_ref(&stored), lost()).await.expect("reads"));
        // Not stored, or other content at its place (another writer's): not landed.
        let (mut missing, _answer) = request("h1");
        missing.events[0].aggregate_id = "elsewhere".into();
        assert!(!landed(&db, std::slice::from_ref(&missing), lost()).await.expect("reads"));
        let (other, _answer) = request("h2");
        assert!(!landed(&db, std::slice::from_ref(&other), lost()).await.expect("reads"));
        // Outcomes the server reported are taken as they are.
        assert!(landed(&db, std::slice::from_ref(&missing), Ran::Committed).await.expect("no read"));
        let failed = Ran::RolledBack(DbErr::Custom("a guess was wrong".into()));
        assert!(!landed(&db, std::slice::from_ref(&stored), failed).await.expect("no read"));
    }

    /// An append in doubt is asked about on the group commit's other
    /// connections, which may have broken with the one it lost (a server
    /// restart breaks them all): each broken one fails and is dropped, and
    /// the question is asked again until a live connection answers.
    #[tokio::test]
    async fn an_append_in_doubt_is_looked_up_past_broken_connections() {
        let Some(scratch) = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")) else { return };
        let db = crate::connection::connect_writer(&scratch.url, WRITER_CONNECTIONS).await.expect("connects");
        crate::migrate(&db).await.expect("migrates");
        let recent = RecentEvents::new(16);
        let (stored, _answer) = request("h1");
        commit(&db, std::slice::from_ref(&stored), NONE, &recent).await.expect("lands");

        // Every connection of the pool open and idle, then broken.
        let pool = db.get_mysql_connection_pool();
        let (a, b) = tokio::join!(pool.acquire(), pool.acquire());
        drop((a.expect("a connection"), b.expect("another")));
        assert_eq!(pool.size(), WRITER_CONNECTIONS);
        let admin = crate::connect(&crate::scratch::mysql_server_url(), 1).await.expect("connects");
        let name = scratch.url.rsplit('/').next().expect("a database name");
        let list = format!("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = '{name}'");
        let ids = admin.query_all_raw(Statement::from_string(DbBackend::MySql, list)).await.expect("lists");
        assert_eq!(ids.len(), WRITER_CONNECTIONS as usize, "the pool's connections are open");
        for row in ids {
            let id: i64 = row.try_get("", "id").expect("an id");
            admin.execute_unprepared(&format!("KILL {id}")).await.expect("kills");
        }

        let lost = Ran::InDoubt(DbErr::Custom("connection reset".into()));
        let found = landed(&db, std::slice::from_ref(&stored), lost).await;
        assert!(matches!(found, Ok(true)), "the log is asked on a live connection: {found:?}");
    }

    #[tokio::test]
    async fn a_script_stores_every_byte_as_given_and_a_wrong_guess_stores_nothing() {
        let Some(scratch) = ScratchDatabase::mysql().await.unwrap_or_else(|e| panic!("{e}")) else { return };
        let db = crate::connection::connect_writer(&scratch.url, 2).await.expect("connects");
        crate::migrate(&db).await.expect("migrates");
        let recent = RecentEvents::new(64);
        let projections = Projections { inline: &[], read_committed: true };
        let (first, _answer) = request("h1");
        let landed = commit(&db, std::slice::from_ref(&first), projections, &recent).await.expect("lands");
        let head = landed[0].last_position;

        // Text that escaping gets wrong, in every text column a script writes.
        let nasty = [
            "it's",
            "back\\slash\\",
            "\\'; DROP TABLE events; --",
            "nul\0byte",
            "? ?",
            "émoji 🎉",
            "\"q\"",
            "",
            "\n\r\t\x1a",
        ];
        let mut batch = Vec::new();
        for (i, text) in nasty.iter().enumerate() {
            let (mut request, _answer) = request(&format!("n{i}{text}"));
            let event = &mut request.events[0];
            event.aggregate_id = format!("nasty-{i}-{text}");
            event.event_type = format!("Odd{text}");
            event.payload = format!("{{\"text\":{text:?}}}{text}");
            event.metadata = text.to_string();
            request.command = Some(CommandRecord { command_id: format!("c{i}{text}"), fingerprint: text.to_string() });
            batch.push(request);
        }
        let outcomes = commit_scripted(&db, &batch, projections, &recent, head).await.expect("runs").expect("scripted");
        assert_eq!(outcomes.last().map(|o| o.last_position), Some(head + nasty.len() as u64));
        let stored = crate::log::read_from(&db, head, 100).await.expect("reads");
        assert_eq!(stored.len(), nasty.len());
        for ((request, event), outcome) in batch.iter().zip(&stored).zip(&outcomes) {
            let sent = &request.events[0];
            assert_eq!(
                (&event.aggregate_id, &event.event_type, &event.payload, &event.metadata, &event.hash),
                (&sent.aggregate_id, &sent.event_type, &sent.payload, &sent.metadata, &sent.hash)
            );
            assert_eq!(event.position, outcome.first_position);
            let command = request.command.as_ref().expect("keyed");
            let row = db
                .query_one(
                    Query::select()
                        .columns([CommandLog::CommandId, CommandLog::Fingerprint])
                        .from(CommandLog::Table)
                        .and_where(Expr::col(CommandLog::CommandId).eq(command.command_id.as_str())),
                )
                .await
                .expect("reads")
                .expect("its command-log row");
            assert_eq!(row.try_get::<String>("", "fingerprint").expect("a column"), command.fingerprint);
        }

        // A guess the head has passed, or one ahead of it: nothing stored,
        // no gap, and the head where it was.
        let head = head + nasty.len() as u64;
        let (mut late, _answer) = request("late");
        late.events[0].aggregate_id = "late".into();
        for guess in [head - 1, head + 3] {
            let scripted = commit_scripted(&db, std::slice::from_ref(&late), projections, &recent, guess).await;
            assert!(scripted.expect("runs").is_none(), "guessed {guess}, the head is {head}");
            assert_eq!(crate::log::head(&db).await.expect("head"), head);
            assert_eq!(crate::log::read_from(&db, head, 10).await.expect("reads").len(), 0);
        }
        let late = commit(&db, std::slice::from_ref(&late), projections, &recent).await.expect("lands");
        assert_eq!(late[0].first_position, head + 1);
    }
}
