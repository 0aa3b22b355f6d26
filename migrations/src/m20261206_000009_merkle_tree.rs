//! The Merkle tree over the whole log and the signed digests of its root.
//!
//! `merkle_nodes` holds every complete subtree of the tree: level 0 the
//! leaves (leaf `i` is the event at position `i + 1`), level `l` index `i`
//! the root of leaves `i·2^l .. (i+1)·2^l`. Any root or proof of any size up
//! to `merkle_head.size` is then O(log n) rows.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000009_merkle_tree"
    }
}

/// Columns of `merkle_nodes`.
#[derive(Iden, Clone, Copy)]
pub enum MerkleNodes {
    Table,
    Level,
    NodeIndex,
    Hash,
}

/// Columns of `merkle_head` (one row, id 1).
#[derive(Iden, Clone, Copy)]
pub enum MerkleHead {
    Table,
    Id,
    /// Leaves in the tree: it covers positions 1..=size.
    Size,
}

/// Columns of `log_digests`.
#[derive(Iden, Clone, Copy)]
pub enum LogDigests {
    Table,
    TreeSize,
    RootHash,
    TimestampUs,
    KeyId,
    Signature,
    /// When it was written to the publication store (null: not yet).
    PublishedAtUs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MerkleNodes::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(MerkleNodes::Level).small_integer().not_null())
                    .col(ColumnDef::new(MerkleNodes::NodeIndex).big_integer().not_null())
                    .col(ColumnDef::new(MerkleNodes::Hash).string_len(64).not_null())
                    .primary_key(Index::create().col(MerkleNodes::Level).col(MerkleNodes::NodeIndex))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MerkleHead::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(MerkleHead::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(MerkleHead::Size).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(MerkleHead::Table)
                    .columns([MerkleHead::Id, MerkleHead::Size])
                    .values_panic([1.into(), 0i64.into()])
                    .on_conflict(OnConflict::column(MerkleHead::Id).update_column(MerkleHead::Id).to_owned())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LogDigests::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(LogDigests::TreeSize).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(LogDigests::RootHash).string_len(64).not_null())
                    .col(ColumnDef::new(LogDigests::TimestampUs).big_integer().not_null())
                    .col(ColumnDef::new(LogDigests::KeyId).string_len(32).not_null())
                    .col(ColumnDef::new(LogDigests::Signature).string_len(128).not_null())
                    .col(ColumnDef::new(LogDigests::PublishedAtUs).big_integer().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [LogDigests::Table.into_iden(), MerkleHead::Table.into_iden(), MerkleNodes::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
