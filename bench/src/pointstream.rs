//! The contender: pointstream's event store on MySQL.

use domain::values::{Amount, DisplayName, EarnPolicy, Handle, MemberId, Points, PurchaseRef, StoreId, StoreName};
use domain::{Member, MemberCommand, Store, StoreCommand, WalletCommand};
use eventstore::{CommandContext, EventStore};

pub fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("bench member ids are valid")
}

pub fn cafe() -> StoreId {
    StoreId::parse("cafe").expect("bench store id is valid")
}

/// 10% of the amount paid, from 1 up.
pub fn policy() -> EarnPolicy {
    EarnPolicy::new(1_000, None, 1).expect("bench policy is valid")
}

/// A number of points.
pub fn points(raw: u64) -> Points {
    Points::new(raw).expect("bench points are valid")
}

/// An earn of 1000 (100 points) at the cafe.
pub fn earn(who: &str, purchase_ref: &str) -> WalletCommand {
    WalletCommand::Earn {
        member: member(who),
        store: cafe(),
        purchase_ref: PurchaseRef::parse(purchase_ref).expect("bench purchase refs are valid"),
        amount: Amount::new(1_000).expect("bench amount is valid"),
    }
}

/// Registers `members` (concurrently) and the cafe, owned by the first.
pub async fn register(store: &EventStore, members: &[String]) -> anyhow::Result<()> {
    let tasks: Vec<_> = members
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let command = MemberCommand::Register {
                    member: member(&id),
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
        store: cafe(),
        name: StoreName::parse("Cafe")?,
        owner: member(&members[0]),
        policy: policy(),
    };
    store.execute::<Store>("cafe", command, CommandContext::default()).await?;
    Ok(())
}
