//! The audit: recompute every hash chain, replay the log in memory and report
//! every difference from the stored read models.

use eventstore::{ChainCheck, ChainReport, EventStore, RecordedEvent};
use sea_orm::{DatabaseTransaction, TransactionTrait};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::checkpoint;
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::read_models::{members::Members, posts::Posts, shares::Shares, stores::Stores, wallets::Wallets};
use crate::table::Difference;

/// Events read per page while replaying.
const PAGE: u64 = 5_000;

/// What the audit of one projection found.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionAudit {
    /// The projection.
    pub name: &'static str,
    /// The position its tables were compared at (its checkpoint).
    pub checkpoint: u64,
    /// Rows that differ from a replay of the log up to the checkpoint.
    pub differences: Vec<Difference>,
    /// Events the replay could not apply, with why.
    pub unreadable: Vec<String>,
}

/// The whole audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Hash chains and holes in the log.
    pub chain: ChainReport,
    /// Each projection.
    pub projections: Vec<ProjectionAudit>,
}

impl AuditReport {
    /// True when the chains verify and every read model matches the log.
    pub fn is_clean(&self) -> bool {
        self.chain.is_clean() && self.projections.iter().all(|p| p.differences.is_empty() && p.unreadable.is_empty())
    }

    /// Every problem, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.chain.breaks.iter().map(|b| b.to_string()).collect();
        for projection in &self.projections {
            problems.extend(projection.unreadable.iter().map(|u| format!("{}: {u}", projection.name)));
            problems.extend(projection.differences.iter().map(|d| d.to_string()));
        }
        problems
    }
}

/// Audits the chains and every read model, in one pass over the log.
///
/// The read models and their checkpoints are read in one transaction (one
/// moment); then one reader pages through the log up to its head and checks
/// the chains, while this task replays each page into every projection up
/// to that projection's checkpoint. Reading the next page overlaps replaying
/// the last.
pub async fn audit(store: &EventStore) -> Result<AuditReport, ProjectionError> {
    let txn = store.db().begin().await?;
    let mut replays: Vec<Box<dyn Replaying>> = vec![
        Replay::<Members>::read(&txn).await?,
        Replay::<Stores>::read(&txn).await?,
        Replay::<Wallets>::read(&txn).await?,
        Replay::<Shares>::read(&txn).await?,
        Replay::<Posts>::read(&txn).await?,
    ];
    txn.commit().await?;

    let mut check = ChainCheck::start(store.db()).await?;
    // The chain is checked up to the head; a projection's checkpoint may be
    // a little past the head read after it, so read up to both.
    let end = replays.iter().map(|r| r.checkpoint()).fold(check.head(), u64::max);
    let (pages_tx, mut pages) = mpsc::channel::<Vec<RecordedEvent>>(2);
    let reader_store = store.clone();
    let reader = tokio::spawn(async move {
        let mut after = 0;
        while after < end {
            let page = reader_store.read_stored(after, PAGE.min(end - after)).await?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for event in &page {
                check.feed(event);
            }
            if pages_tx.send(page).await.is_err() {
                break;
            }
        }
        Ok::<_, ProjectionError>(check.finish())
    });
    while let Some(page) = pages.recv().await {
        for replay in &mut replays {
            replay.feed(&page);
        }
    }
    let chain = reader.await.map_err(|err| ProjectionError::Task(err.to_string()))??;
    Ok(AuditReport { chain, projections: replays.into_iter().map(|r| r.finish()).collect() })
}

/// One projection's replay during an audit, whatever its state's type.
trait Replaying: Send {
    fn checkpoint(&self) -> u64;
    fn feed(&mut self, page: &[RecordedEvent]);
    fn finish(self: Box<Self>) -> ProjectionAudit;
}

/// Projection `P`'s stored rows and checkpoint, and the replay of the log up
/// to that checkpoint.
struct Replay<P: Projection> {
    at: u64,
    found: P::State,
    expected: P::State,
    unreadable: Vec<String>,
}

impl<P: Projection> Replay<P> {
    async fn read(txn: &DatabaseTransaction) -> Result<Box<dyn Replaying>, ProjectionError> {
        let at = checkpoint::read(txn, P::NAME, &Names::LIVE).await?;
        let found = P::dump(txn, &Names::LIVE).await?;
        Ok(Box::new(Replay::<P> { at, found, expected: P::State::default(), unreadable: Vec::new() }))
    }
}

impl<P: Projection> Replaying for Replay<P> {
    fn checkpoint(&self) -> u64 {
        self.at
    }

    fn feed(&mut self, page: &[RecordedEvent]) {
        for event in page.iter().take_while(|e| e.position <= self.at) {
            let applied = P::decode(event).and_then(|view| match view {
                Some(view) => P::apply(&mut self.expected, event, &view),
                None => Ok(()),
            });
            if let Err(err) = applied {
                self.unreadable.push(err.to_string());
            }
        }
    }

    fn finish(self: Box<Self>) -> ProjectionAudit {
        ProjectionAudit {
            name: P::NAME,
            checkpoint: self.at,
            differences: P::diff(&self.expected, &self.found),
            unreadable: self.unreadable,
        }
    }
}
