//! `stores`, with the earn policy in force.

use domain::values::EarnPolicy;
use domain::{Store, StoreEvent};
use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr};

use super::{decode_as, ids_of, key1};
use crate::entities::stores;
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::table::{self, Difference, Rows, Writes, diff};

/// The stores projection.
pub struct Stores;

/// Stores keyed by id.
#[derive(Debug, Default)]
pub struct StoresState {
    /// `stores` rows.
    pub stores: Rows<String, stores::Model>,
}

fn set_policy(row: &mut stores::Model, policy: &EarnPolicy, version: u32) {
    row.rate_basis_points = i64::from(policy.rate_basis_points());
    row.cap = policy.cap().map(|cap| cap.get() as i64);
    row.min_purchase = policy.min_purchase() as i64;
    row.policy_version = i64::from(version);
}

impl Projection for Stores {
    const NAME: &'static str = "stores";
    const TABLES: &'static [&'static str] = &["stores"];
    type State = StoresState;
    type Event = StoreEvent;

    fn decode(event: &RecordedEvent) -> Result<Option<StoreEvent>, ProjectionError> {
        decode_as::<Store>(event)
    }

    async fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, StoreEvent)],
    ) -> Result<StoresState, DbErr> {
        let ids: Vec<_> = ids_of(events).iter().map(|id| key1(id)).collect();
        let rows = table::load::<stores::Entity>(txn, &names.table("stores"), &ids).await?;
        Ok(StoresState { stores: Rows::loaded(rows.into_iter().map(|s| (s.store_id.clone(), s))) })
    }

    fn apply(state: &mut StoresState, event: &RecordedEvent, decoded: &StoreEvent) -> Result<(), ProjectionError> {
        let id = &event.aggregate_id;
        let decoded = decoded.clone();
        if let StoreEvent::StoreRegistered { name, owner, policy, .. } = &decoded {
            let mut row = stores::Model {
                store_id: id.clone(),
                name: name.as_str().to_string(),
                owner_id: owner.as_str().to_string(),
                open: true,
                rate_basis_points: 0,
                cap: None,
                min_purchase: 0,
                policy_version: 0,
                registered_at_us: event.recorded_at_us,
            };
            set_policy(&mut row, policy, 1);
            state.stores.put(id.clone(), row);
            return Ok(());
        }
        let row = state
            .stores
            .get_mut(id)
            .ok_or_else(|| ProjectionError::Missing { at: event.address(), what: format!("store {id}") })?;
        match decoded {
            StoreEvent::StoreRegistered { .. } => {}
            StoreEvent::EarnPolicyUpdated { policy, policy_version } => set_policy(row, &policy, policy_version),
            StoreEvent::StoreClosed => row.open = false,
            StoreEvent::StoreReopened => row.open = true,
        }
        Ok(())
    }

    fn writes(state: &mut StoresState, names: &Names) -> Result<Writes, DbErr> {
        state.stores.writes::<stores::Entity>(&names.table("stores"), |id| key1(id))
    }

    async fn dump(db: &DatabaseTransaction, names: &Names) -> Result<StoresState, DbErr> {
        let rows = table::dump::<stores::Entity>(db, &names.table("stores")).await?;
        Ok(StoresState { stores: Rows::loaded(rows.into_iter().map(|s| (s.store_id.clone(), s))) })
    }

    fn diff(expected: &StoresState, found: &StoresState) -> Vec<Difference> {
        diff("stores", &expected.stores, &found.stores)
    }
}
