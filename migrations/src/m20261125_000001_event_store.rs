//! The event store: the log, its head counter, the command log (idempotency),
//! claims (values unique across aggregates) and snapshots.

use sea_orm_migration::async_trait;
use sea_orm_migration::prelude::*;

/// Creates the event store tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_event_store"
    }
}

/// Columns of `Events`.
#[derive(Iden, Clone, Copy)]
pub enum Events {
    Table,
    Position,
    AggregateType,
    AggregateId,
    Sequence,
    EventType,
    EventVersion,
    Payload,
    Metadata,
    RecordedAtUs,
    Hash,
}

/// Columns of `LogHead`.
#[derive(Iden, Clone, Copy)]
pub enum LogHead {
    Table,
    Id,
    Position,
}

/// Columns of `CommandLog`.
#[derive(Iden, Clone, Copy)]
pub enum CommandLog {
    Table,
    CommandId,
    Fingerprint,
    AggregateType,
    AggregateId,
    Outcome,
    RecordedAtUs,
}

/// Columns of `Claims`.
#[derive(Iden, Clone, Copy)]
pub enum Claims {
    Table,
    Kind,
    ClaimKey,
    AggregateType,
    AggregateId,
}

/// Columns of `Snapshots`.
#[derive(Iden, Clone, Copy)]
pub enum Snapshots {
    Table,
    AggregateType,
    AggregateId,
    Sequence,
    State,
    Hash,
    TakenAtUs,
}

fn long_text() -> Alias {
    Alias::new("LONGTEXT")
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Events::Position).big_integer().not_null().primary_key())
                    .col(ColumnDef::new(Events::AggregateType).string_len(64).not_null())
                    .col(ColumnDef::new(Events::AggregateId).string_len(160).not_null())
                    .col(ColumnDef::new(Events::Sequence).big_integer().not_null())
                    .col(ColumnDef::new(Events::EventType).string_len(128).not_null())
                    .col(ColumnDef::new(Events::EventVersion).integer().not_null())
                    .col(ColumnDef::new(Events::Payload).custom(long_text()).not_null())
                    .col(ColumnDef::new(Events::Metadata).custom(long_text()).not_null())
                    .col(ColumnDef::new(Events::RecordedAtUs).big_integer().not_null())
                    .col(ColumnDef::new(Events::Hash).string_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_stream_sequence")
                    .table(Events::Table)
                    .col(Events::AggregateType)
                    .col(Events::AggregateId)
                    .col(Events::Sequence)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LogHead::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(LogHead::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(LogHead::Position).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(LogHead::Table)
                    .columns([LogHead::Id, LogHead::Position])
                    .values_panic([1.into(), 0.into()])
                    .on_conflict(OnConflict::column(LogHead::Id).update_column(LogHead::Id).to_owned())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CommandLog::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CommandLog::CommandId).string_len(160).not_null().primary_key())
                    .col(ColumnDef::new(CommandLog::Fingerprint).string_len(64).not_null())
                    .col(ColumnDef::new(CommandLog::AggregateType).string_len(64).not_null())
                    .col(ColumnDef::new(CommandLog::AggregateId).string_len(160).not_null())
                    .col(ColumnDef::new(CommandLog::Outcome).custom(long_text()).not_null())
                    .col(ColumnDef::new(CommandLog::RecordedAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Claims::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Claims::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Claims::ClaimKey).string_len(200).not_null())
                    .col(ColumnDef::new(Claims::AggregateType).string_len(64).not_null())
                    .col(ColumnDef::new(Claims::AggregateId).string_len(160).not_null())
                    .primary_key(Index::create().col(Claims::Kind).col(Claims::ClaimKey))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Snapshots::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Snapshots::AggregateType).string_len(64).not_null())
                    .col(ColumnDef::new(Snapshots::AggregateId).string_len(160).not_null())
                    .col(ColumnDef::new(Snapshots::Sequence).big_integer().not_null())
                    .col(ColumnDef::new(Snapshots::State).custom(long_text()).not_null())
                    .col(ColumnDef::new(Snapshots::Hash).string_len(64).not_null())
                    .col(ColumnDef::new(Snapshots::TakenAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(Snapshots::AggregateType).col(Snapshots::AggregateId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Snapshots::Table.into_iden(),
            Claims::Table.into_iden(),
            CommandLog::Table.into_iden(),
            LogHead::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
