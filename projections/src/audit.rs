//! The audit: recompute every hash chain, replay the log in memory and report
//! every difference from the stored read models.

use eventstore::{ChainReport, EventStore};
use sea_orm::TransactionTrait;
use serde::Serialize;

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

/// Audits the chains and every read model.
pub async fn audit(store: &EventStore) -> Result<AuditReport, ProjectionError> {
    Ok(AuditReport {
        chain: store.verify().await?,
        projections: vec![
            audit_one::<Members>(store).await?,
            audit_one::<Stores>(store).await?,
            audit_one::<Wallets>(store).await?,
            audit_one::<Shares>(store).await?,
            audit_one::<Posts>(store).await?,
        ],
    })
}

/// Compares projection `P`'s stored rows with a replay of the log up to its checkpoint.
pub async fn audit_one<P: Projection>(store: &EventStore) -> Result<ProjectionAudit, ProjectionError> {
    // One transaction: the checkpoint and the rows it describes, as of one moment.
    let txn = store.db().begin().await?;
    let at = checkpoint::read(&txn, P::NAME, &Names::LIVE).await?;
    let found = P::dump(&txn, &Names::LIVE).await?;
    txn.commit().await?;

    let mut expected = P::State::default();
    let mut unreadable = Vec::new();
    let mut after = 0;
    while after < at {
        let page = store.read_stored(after, PAGE.min(at - after)).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            let applied = P::decode(event).and_then(|view| match view {
                Some(view) => P::apply(&mut expected, event, &view),
                None => Ok(()),
            });
            if let Err(err) = applied {
                unreadable.push(err.to_string());
            }
        }
    }
    Ok(ProjectionAudit { name: P::NAME, checkpoint: at, differences: P::diff(&expected, &found), unreadable })
}
