//! Every table of pointstream, as sea-orm migrations. Run by `pointstream
//! migrate` and by every process at start-up (idempotent).
//!
//! Column types are chosen to work unchanged on MySQL/MariaDB and SQLite:
//! payloads are `LONGTEXT` (exact bytes, so hashes verify), times are integer
//! microseconds since the Unix epoch.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_event_store;
mod m20261125_000002_read_models;
mod m20261125_000003_binary_collation;
mod m20261125_000004_api_indexes;
mod m20261126_000005_social_tokens;
mod m20261201_000006_photo_sizes;
mod m20261201_000007_photo_social;
mod m20261206_000008_scoped_command_ids;
mod m20261206_000009_merkle_tree;
mod m20261206_000010_social_links;

/// Table and column names, for building queries with sea-query.
pub mod tables {
    pub use super::m20261125_000001_event_store::{Claims, CommandLog, Events, LogHead, Snapshots};
    pub use super::m20261125_000002_read_models::{
        Balances, CHECKPOINT_TABLES, Checkpoint, Leases, Ledger, Members, PostPhotos, PostSocial, Posts,
        ShareRecipients, Shares, SocialAccounts, Stores,
    };
    pub use super::m20261126_000005_social_tokens::SocialTokens;
    pub use super::m20261201_000007_photo_social::PostPhotoSocial;
    pub use super::m20261206_000009_merkle_tree::{LogDigests, MerkleHead, MerkleNodes};
    pub use super::m20261206_000010_social_links::{SocialApps, SocialLinkFlows};
}

/// The migrator of the whole application.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_event_store::Migration),
            Box::new(m20261125_000002_read_models::Migration),
            Box::new(m20261125_000003_binary_collation::Migration),
            Box::new(m20261125_000004_api_indexes::Migration),
            Box::new(m20261126_000005_social_tokens::Migration),
            Box::new(m20261201_000006_photo_sizes::Migration),
            Box::new(m20261201_000007_photo_social::Migration),
            Box::new(m20261206_000008_scoped_command_ids::Migration),
            Box::new(m20261206_000009_merkle_tree::Migration),
            Box::new(m20261206_000010_social_links::Migration),
        ]
    }
}
