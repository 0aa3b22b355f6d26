//! sea-orm entities of the read model tables created by the
//! `m20261125_000002_read_models` migration. Checkpoint and lease tables are
//! accessed with sea-query directly and have no entities.

pub mod balances;
pub mod ledger;
pub mod members;
pub mod post_photo_social;
pub mod post_photos;
pub mod post_social;
pub mod posts;
pub mod share_recipients;
pub mod shares;
pub mod social_accounts;
pub mod stores;
