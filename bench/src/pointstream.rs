//! The contender: pointstream's event store on MySQL.

use domain::values::{Amount, DisplayName, EarnPolicy, Handle, MemberId, Points, PurchaseRef, StoreId, StoreName};
use domain::{Member, MemberCommand, Store, StoreCommand, WalletCommand};
use eventstore::{CommandContext, EventStore};

/// Member `id`.
pub fn member(id: &str) -> anyhow::Result<MemberId> {
    Ok(MemberId::parse(id)?)
}

/// The benchmarks' one store.
pub fn cafe() -> anyhow::Result<StoreId> {
    Ok(StoreId::parse("cafe")?)
}

/// 10% of the amount paid, from 1 up.
pub fn policy() -> anyhow::Result<EarnPolicy> {
    Ok(EarnPolicy::new(1_000, None, 1)?)
}

/// A number of points.
pub fn points(raw: u64) -> anyhow::Result<Points> {
    Ok(Points::new(raw)?)
}

/// An earn of 1000 (100 points) at the cafe.
pub fn earn(who: &str, purchase_ref: &str) -> anyhow::Result<WalletCommand> {
    Ok(WalletCommand::Earn {
        member: member(who)?,
        store: cafe()?,
        purchase_ref: PurchaseRef::parse(purchase_ref)?,
        amount: Amount::new(1_000)?,
    })
}

/// Registers `members` (concurrently) and the cafe, owned by the first.
pub async fn register(store: &EventStore, members: &[String]) -> anyhow::Result<()> {
    let tasks: Vec<_> = members
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let command = MemberCommand::Register {
                    member: member(&id)?,
                    handle: Handle::parse(format!("m_{}", id.replace('-', "_")))?,
                    display_name: DisplayName::parse(id.clone())?,
                };
                store.execute::<Member>(&id, command, CommandContext::default()).await?;
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let command = StoreCommand::Register {
        store: cafe()?,
        name: StoreName::parse("Cafe")?,
        owner: member(members.first().map_or("", String::as_str))?,
        policy: policy()?,
    };
    store.execute::<Store>("cafe", command, CommandContext::default()).await?;
    Ok(())
}
