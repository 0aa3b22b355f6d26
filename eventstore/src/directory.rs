//! The domain's [`Directory`] answered from the event store (through the
//! aggregate cache, so a lookup is usually a memory read).

use async_trait::async_trait;
use domain::values::{MemberId, StoreId};
use domain::{Directory, DomainError, Member, MemberStatus, Store, StoreTerms};

use crate::store::EventStore;

/// Looks members and stores up by loading their aggregates.
pub struct StoreDirectory {
    store: EventStore,
}

impl StoreDirectory {
    /// A directory over `store`.
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }
}

fn lookup_failed(err: crate::error::EventStoreError) -> DomainError {
    DomainError::Lookup(err.to_string())
}

#[async_trait]
impl Directory for StoreDirectory {
    async fn member(&self, id: &MemberId) -> Result<Option<MemberStatus>, DomainError> {
        Ok(self.store.current::<Member>(id.as_str()).await.map_err(lookup_failed)?.state.status())
    }

    async fn store(&self, id: &StoreId) -> Result<Option<StoreTerms>, DomainError> {
        Ok(self.store.current::<Store>(id.as_str()).await.map_err(lookup_failed)?.state.terms())
    }
}
