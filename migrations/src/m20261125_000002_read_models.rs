//! The read models: tables maintained by the projections from the event log
//! (members, stores, wallets, shares, posts), one checkpoint table per
//! projection, and the leases that elect a single runner per projection.

use sea_orm_migration::async_trait;
use sea_orm_migration::prelude::*;

/// Creates the read model tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_read_models"
    }
}

/// Columns of `Members`.
#[derive(Iden, Clone, Copy)]
pub enum Members {
    Table,
    MemberId,
    Handle,
    DisplayName,
    Active,
    RegisteredAtUs,
}

/// Columns of `SocialAccounts`.
#[derive(Iden, Clone, Copy)]
pub enum SocialAccounts {
    Table,
    MemberId,
    Provider,
    ExternalId,
    LinkedAtUs,
}

/// Columns of `Stores`.
#[derive(Iden, Clone, Copy)]
pub enum Stores {
    Table,
    StoreId,
    Name,
    OwnerId,
    Open,
    RateBasisPoints,
    Cap,
    MinPurchase,
    PolicyVersion,
    RegisteredAtUs,
}

/// Columns of `Balances`.
#[derive(Iden, Clone, Copy)]
pub enum Balances {
    Table,
    MemberId,
    StoreId,
    Balance,
    Earned,
    Redeemed,
    SharedOut,
    Received,
    Refunded,
    Adjusted,
    Expired,
    LastPosition,
}

/// Columns of `Ledger`.
#[derive(Iden, Clone, Copy)]
pub enum Ledger {
    Table,
    Position,
    MemberId,
    StoreId,
    Kind,
    Delta,
    BalanceAfter,
    PurchaseRef,
    AmountPaid,
    CounterpartyId,
    ShareId,
    Reason,
    RecordedAtUs,
}

/// Columns of `Shares`.
#[derive(Iden, Clone, Copy)]
pub enum Shares {
    Table,
    ShareId,
    SenderId,
    StoreId,
    Total,
    Message,
    Recipients,
    Settled,
    Status,
    CreatedAtUs,
    Position,
}

/// Columns of `ShareRecipients`.
#[derive(Iden, Clone, Copy)]
pub enum ShareRecipients {
    Table,
    ShareId,
    MemberId,
    Points,
    Status,
    SettledAtUs,
}

/// Columns of `Posts`.
#[derive(Iden, Clone, Copy)]
pub enum Posts {
    Table,
    PostId,
    AuthorId,
    StoreId,
    Body,
    Deleted,
    CreatedAtUs,
    Position,
}

/// Columns of `PostPhotos`.
#[derive(Iden, Clone, Copy)]
pub enum PostPhotos {
    Table,
    PostId,
    Idx,
    PhotoKey,
    ContentType,
    Sha256,
}

/// Columns of `PostSocial`.
#[derive(Iden, Clone, Copy)]
pub enum PostSocial {
    Table,
    PostId,
    Provider,
    Status,
    ExternalId,
    Url,
    Reason,
    Attempts,
    UpdatedAtUs,
}

/// Columns shared by every checkpoint table (see [`CHECKPOINT_TABLES`]); the
/// single row has `id = 1`.
#[derive(Iden, Clone, Copy)]
pub enum Checkpoint {
    Id,
    Position,
    UpdatedAtUs,
}

/// Names of the checkpoint tables, one per projection.
pub const CHECKPOINT_TABLES: [&str; 6] = [
    "members_checkpoint",
    "stores_checkpoint",
    "wallets_checkpoint",
    "shares_checkpoint",
    "posts_checkpoint",
    "share_distribution_checkpoint",
];

/// Columns of `Leases`.
#[derive(Iden, Clone, Copy)]
pub enum Leases {
    Table,
    Name,
    Holder,
    ExpiresAtUs,
}

/// An identifier column (`VARCHAR(64)`).
fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(64).to_owned()
}

/// Creates the checkpoint table `name` and seeds its row `(1, 0, 0)`.
pub(crate) async fn create_checkpoint(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Alias::new(name))
                .if_not_exists()
                .col(ColumnDef::new(Checkpoint::Id).big_integer().not_null().primary_key())
                .col(ColumnDef::new(Checkpoint::Position).big_integer().not_null())
                .col(ColumnDef::new(Checkpoint::UpdatedAtUs).big_integer().not_null())
                .to_owned(),
        )
        .await?;
    manager
        .exec_stmt(
            Query::insert()
                .into_table(Alias::new(name))
                .columns([Checkpoint::Id, Checkpoint::Position, Checkpoint::UpdatedAtUs])
                .values_panic([1.into(), 0.into(), 0.into()])
                .on_conflict(OnConflict::column(Checkpoint::Id).update_column(Checkpoint::Id).to_owned())
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .if_not_exists()
                    .col(id(Members::MemberId).not_null().primary_key())
                    .col(ColumnDef::new(Members::Handle).string_len(64).not_null())
                    .col(ColumnDef::new(Members::DisplayName).string_len(255).not_null())
                    .col(ColumnDef::new(Members::Active).boolean().not_null())
                    .col(ColumnDef::new(Members::RegisteredAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        index(manager, "members_handle", Members::Table, &[Members::Handle], true).await?;
        manager
            .create_table(
                Table::create()
                    .table(SocialAccounts::Table)
                    .if_not_exists()
                    .col(id(SocialAccounts::MemberId).not_null())
                    .col(ColumnDef::new(SocialAccounts::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(SocialAccounts::ExternalId).string_len(255).not_null())
                    .col(ColumnDef::new(SocialAccounts::LinkedAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(SocialAccounts::MemberId).col(SocialAccounts::Provider))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Stores::Table)
                    .if_not_exists()
                    .col(id(Stores::StoreId).not_null().primary_key())
                    .col(ColumnDef::new(Stores::Name).string_len(255).not_null())
                    .col(id(Stores::OwnerId).not_null())
                    .col(ColumnDef::new(Stores::Open).boolean().not_null())
                    .col(ColumnDef::new(Stores::RateBasisPoints).big_integer().not_null())
                    .col(ColumnDef::new(Stores::Cap).big_integer().null())
                    .col(ColumnDef::new(Stores::MinPurchase).big_integer().not_null())
                    .col(ColumnDef::new(Stores::PolicyVersion).big_integer().not_null())
                    .col(ColumnDef::new(Stores::RegisteredAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Balances::Table)
                    .if_not_exists()
                    .col(id(Balances::MemberId).not_null())
                    .col(id(Balances::StoreId).not_null())
                    .col(ColumnDef::new(Balances::Balance).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Earned).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Redeemed).big_integer().not_null())
                    .col(ColumnDef::new(Balances::SharedOut).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Received).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Refunded).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Adjusted).big_integer().not_null())
                    .col(ColumnDef::new(Balances::Expired).big_integer().not_null())
                    .col(ColumnDef::new(Balances::LastPosition).big_integer().not_null())
                    .primary_key(Index::create().col(Balances::MemberId).col(Balances::StoreId))
                    .to_owned(),
            )
            .await?;
        index(manager, "balances_store", Balances::Table, &[Balances::StoreId, Balances::MemberId], false).await?;
        manager
            .create_table(
                Table::create()
                    .table(Ledger::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Ledger::Position).big_integer().not_null().primary_key())
                    .col(id(Ledger::MemberId).not_null())
                    .col(id(Ledger::StoreId).not_null())
                    .col(ColumnDef::new(Ledger::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Ledger::Delta).big_integer().not_null())
                    .col(ColumnDef::new(Ledger::BalanceAfter).big_integer().not_null())
                    .col(id(Ledger::PurchaseRef).null())
                    .col(ColumnDef::new(Ledger::AmountPaid).big_integer().null())
                    .col(id(Ledger::CounterpartyId).null())
                    .col(id(Ledger::ShareId).null())
                    .col(ColumnDef::new(Ledger::Reason).string_len(255).null())
                    .col(ColumnDef::new(Ledger::RecordedAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ledger_member_store",
            Ledger::Table,
            &[Ledger::MemberId, Ledger::StoreId, Ledger::Position],
            false,
        )
        .await?;
        index(manager, "ledger_member", Ledger::Table, &[Ledger::MemberId, Ledger::Position], false).await?;
        manager
            .create_table(
                Table::create()
                    .table(Shares::Table)
                    .if_not_exists()
                    .col(id(Shares::ShareId).not_null().primary_key())
                    .col(id(Shares::SenderId).not_null())
                    .col(id(Shares::StoreId).not_null())
                    .col(ColumnDef::new(Shares::Total).big_integer().not_null())
                    .col(ColumnDef::new(Shares::Message).text().not_null())
                    .col(ColumnDef::new(Shares::Recipients).big_integer().not_null())
                    .col(ColumnDef::new(Shares::Settled).big_integer().not_null())
                    .col(ColumnDef::new(Shares::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Shares::CreatedAtUs).big_integer().not_null())
                    .col(ColumnDef::new(Shares::Position).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        index(manager, "shares_sender", Shares::Table, &[Shares::SenderId, Shares::Position], false).await?;
        manager
            .create_table(
                Table::create()
                    .table(ShareRecipients::Table)
                    .if_not_exists()
                    .col(id(ShareRecipients::ShareId).not_null())
                    .col(id(ShareRecipients::MemberId).not_null())
                    .col(ColumnDef::new(ShareRecipients::Points).big_integer().not_null())
                    .col(ColumnDef::new(ShareRecipients::Status).string_len(16).not_null())
                    .col(ColumnDef::new(ShareRecipients::SettledAtUs).big_integer().null())
                    .primary_key(Index::create().col(ShareRecipients::ShareId).col(ShareRecipients::MemberId))
                    .to_owned(),
            )
            .await?;
        index(manager, "share_recipients_member", ShareRecipients::Table, &[ShareRecipients::MemberId], false).await?;
        manager
            .create_table(
                Table::create()
                    .table(Posts::Table)
                    .if_not_exists()
                    .col(id(Posts::PostId).not_null().primary_key())
                    .col(id(Posts::AuthorId).not_null())
                    .col(id(Posts::StoreId).not_null())
                    .col(ColumnDef::new(Posts::Body).text().not_null())
                    .col(ColumnDef::new(Posts::Deleted).boolean().not_null())
                    .col(ColumnDef::new(Posts::CreatedAtUs).big_integer().not_null())
                    .col(ColumnDef::new(Posts::Position).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        index(manager, "posts_store", Posts::Table, &[Posts::StoreId, Posts::Position], false).await?;
        index(manager, "posts_author", Posts::Table, &[Posts::AuthorId, Posts::Position], false).await?;
        manager
            .create_table(
                Table::create()
                    .table(PostPhotos::Table)
                    .if_not_exists()
                    .col(id(PostPhotos::PostId).not_null())
                    .col(ColumnDef::new(PostPhotos::Idx).big_integer().not_null())
                    .col(ColumnDef::new(PostPhotos::PhotoKey).string_len(255).not_null())
                    .col(ColumnDef::new(PostPhotos::ContentType).string_len(64).not_null())
                    .col(ColumnDef::new(PostPhotos::Sha256).string_len(64).not_null())
                    .primary_key(Index::create().col(PostPhotos::PostId).col(PostPhotos::Idx))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PostSocial::Table)
                    .if_not_exists()
                    .col(id(PostSocial::PostId).not_null())
                    .col(ColumnDef::new(PostSocial::Provider).string_len(16).not_null())
                    .col(ColumnDef::new(PostSocial::Status).string_len(16).not_null())
                    .col(ColumnDef::new(PostSocial::ExternalId).string_len(255).null())
                    .col(ColumnDef::new(PostSocial::Url).string_len(1024).null())
                    .col(ColumnDef::new(PostSocial::Reason).string_len(255).null())
                    .col(ColumnDef::new(PostSocial::Attempts).big_integer().not_null())
                    .col(ColumnDef::new(PostSocial::UpdatedAtUs).big_integer().not_null())
                    .primary_key(Index::create().col(PostSocial::PostId).col(PostSocial::Provider))
                    .to_owned(),
            )
            .await?;
        for name in CHECKPOINT_TABLES {
            create_checkpoint(manager, name).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Leases::Name).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Leases::Holder).string_len(128).not_null())
                    .col(ColumnDef::new(Leases::ExpiresAtUs).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut tables = vec![Leases::Table.into_iden()];
        tables.extend(CHECKPOINT_TABLES.iter().rev().map(|name| Alias::new(*name).into_iden()));
        tables.extend([
            PostSocial::Table.into_iden(),
            PostPhotos::Table.into_iden(),
            Posts::Table.into_iden(),
            ShareRecipients::Table.into_iden(),
            Shares::Table.into_iden(),
            Ledger::Table.into_iden(),
            Balances::Table.into_iden(),
            Stores::Table.into_iden(),
            SocialAccounts::Table.into_iden(),
            Members::Table.into_iden(),
        ]);
        for table in tables {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// Creates index `name` on `columns` of `table` (unless it exists).
pub(crate) async fn index<T: IntoIden + Copy + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    columns: &[T],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table).if_not_exists();
    for column in columns {
        index.col(*column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index).await
}
