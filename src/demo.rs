//! `pointstream demo`: a few stores, members, purchases, a share, a
//! redemption and a post, so a newcomer sees data at once. Every command
//! carries a fixed id, so running it again changes nothing.

use anyhow::Context;
use domain::values::{
    Amount, DisplayName, EarnPolicy, Handle, MemberId, Points, PostBody, PostId, Provider, PurchaseRef, Reason,
    ShareId, ShareMessage, StoreId, StoreName,
};
use domain::{Member, MemberCommand, Post, PostCommand, SharePart, Store, StoreCommand, Wallet, WalletCommand};
use eventstore::{CommandContext, EventStore};

fn keyed(id: &str) -> CommandContext {
    CommandContext { command_id: Some(format!("demo/{id}")), actor: Some("demo".into()), ..CommandContext::default() }
}

/// Loads the demo data and brings the read models up to date.
pub async fn load(store: &EventStore) -> anyhow::Result<()> {
    for (id, name) in [("ann", "Ann"), ("bob", "Bob"), ("cat", "Cat"), ("dan", "Dan")] {
        let command = MemberCommand::Register {
            member: MemberId::parse(id)?,
            handle: Handle::parse(format!("{id}_demo"))?,
            display_name: DisplayName::parse(name)?,
        };
        store.execute::<Member>(id, command, keyed(&format!("member/{id}"))).await?;
    }
    let stores = [
        ("cafe", "Corner Cafe", "ann", EarnPolicy::new(500, Some(Points::new(100)?), 1_000)?),
        ("bakery", "Morning Bakery", "bob", EarnPolicy::new(1_000, None, 500)?),
    ];
    for (id, name, owner, policy) in stores {
        let command = StoreCommand::Register {
            store: StoreId::parse(id)?,
            name: StoreName::parse(name)?,
            owner: MemberId::parse(owner)?,
            policy,
        };
        store.execute::<Store>(id, command, keyed(&format!("store/{id}"))).await?;
    }
    let purchases =
        [("bob", "cafe", "r-1001", 4_500), ("bob", "cafe", "r-1002", 2_000), ("cat", "bakery", "b-77", 1_200)];
    for (who, at, receipt, paid) in purchases {
        let command = WalletCommand::Earn {
            member: MemberId::parse(who)?,
            store: StoreId::parse(at)?,
            purchase_ref: PurchaseRef::parse(receipt)?,
            amount: Amount::new(paid)?,
        };
        store.execute::<Wallet>(who, command, keyed(&format!("earn/{at}/{receipt}"))).await?;
    }
    let share = WalletCommand::Share {
        share: ShareId::parse("demo-share-1")?,
        store: StoreId::parse("cafe")?,
        recipients: vec![
            SharePart { member: MemberId::parse("cat")?, points: Points::new(100)? },
            SharePart { member: MemberId::parse("dan")?, points: Points::new(50)? },
        ],
        message: ShareMessage::parse("Coffee is on me")?,
    };
    store.execute::<Wallet>("bob", share, keyed("share/1")).await?;
    let redeem = WalletCommand::Redeem {
        store: StoreId::parse("bakery")?,
        points: Points::new(50)?,
        reward: Reason::parse("croissant")?,
    };
    store.execute::<Wallet>("cat", redeem, keyed("redeem/1")).await?;
    let post = PostCommand::Create {
        post: PostId::parse("demo-post-1")?,
        author: MemberId::parse("bob")?,
        store: StoreId::parse("cafe")?,
        body: PostBody::parse("Best flat white in town")?,
        photos: Vec::new(),
        providers: vec![Provider::Facebook, Provider::Twitter],
    };
    store.execute::<Post>("demo-post-1", post, keyed("post/1")).await?;
    projections::catch_up(store, 1_000).await.context("bringing the read models up to date")?;
    Ok(())
}
