//! What an aggregate may ask about other aggregates while deciding.
//!
//! The answers are read from the event store at decision time; they are
//! consistent with the log up to the moment of the lookup, which is what a
//! cross-aggregate rule of this kind needs (a store closing a millisecond later
//! does not undo a purchase made before). Rules that must hold exactly across
//! aggregates (unique handles, unique purchase refs) are [`Claim`]s instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::DomainError;
use crate::values::{EarnPolicy, MemberId, StoreId};

/// What a member lookup tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// False once the member is deactivated.
    pub active: bool,
}

/// What a store lookup tells: whether it earns, and under which policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTerms {
    /// False while the store is closed.
    pub open: bool,
    /// The earn policy in force.
    pub policy: EarnPolicy,
    /// The version of that policy (1 for the one the store registered with).
    pub policy_version: u32,
}

/// Lookups across aggregates. Implemented over the event store in
/// `eventstore`, and in memory here for tests.
#[async_trait]
pub trait Directory: Send + Sync {
    /// The member's status, `None` if never registered.
    async fn member(&self, id: &MemberId) -> Result<Option<MemberStatus>, DomainError>;
    /// The store's terms, `None` if never registered.
    async fn store(&self, id: &StoreId) -> Result<Option<StoreTerms>, DomainError>;
}

/// The services every aggregate receives (cqrs-es `Aggregate::Services`).
pub type Services = Arc<dyn Directory>;

/// An in-memory directory: for tests and for the aggregate test framework.
#[derive(Debug, Default, Clone)]
pub struct InMemoryDirectory {
    members: Arc<Mutex<HashMap<MemberId, MemberStatus>>>,
    stores: Arc<Mutex<HashMap<StoreId, StoreTerms>>>,
}

impl InMemoryDirectory {
    /// Records a member.
    pub fn with_member(self, id: &MemberId, active: bool) -> Self {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), MemberStatus { active });
        self
    }

    /// Records a store.
    pub fn with_store(self, id: &StoreId, terms: StoreTerms) -> Self {
        self.stores.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), terms);
        self
    }

    /// This directory as aggregate services.
    pub fn services(self) -> Services {
        Arc::new(self)
    }
}

#[async_trait]
impl Directory for InMemoryDirectory {
    async fn member(&self, id: &MemberId) -> Result<Option<MemberStatus>, DomainError> {
        Ok(self.members.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied())
    }

    async fn store(&self, id: &StoreId) -> Result<Option<StoreTerms>, DomainError> {
        Ok(self.stores.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied())
    }
}

/// A value that may belong to one aggregate only (a handle, a purchase ref).
///
/// A command lists its claims; the event store records each claim atomically
/// with the command's events and refuses the command if another aggregate
/// holds the claim already (the "reservation stream" pattern).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    /// What kind of value (`handle`, `purchase`).
    pub kind: &'static str,
    /// The value, unique within its kind.
    pub key: String,
}

/// A command that may carry claims, and the error to report when one is taken.
pub trait Claims {
    /// The claims this command needs; empty for most commands.
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }

    /// What a retry under the same idempotency key must repeat: by default
    /// the whole command.
    fn retry_identity(&self) -> Self
    where
        Self: Clone,
    {
        self.clone()
    }

    /// The error to return when `claim` belongs to another aggregate.
    fn claim_taken(&self, claim: &Claim) -> DomainError {
        DomainError::AlreadyRegistered(format!("{} {}", claim.kind, claim.key))
    }
}
