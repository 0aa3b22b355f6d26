//! The Store aggregate: a cafe or shop and the policy by which it awards points.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::{Claims, Services, StoreTerms};
use crate::error::DomainError;
use crate::values::{EarnPolicy, MemberId, StoreId, StoreName};

/// What can be asked of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreCommand {
    /// Register the store; its owner must be a registered member.
    Register { store: StoreId, name: StoreName, owner: MemberId, policy: EarnPolicy },
    /// Replace the earn policy; the version goes up by one.
    UpdateEarnPolicy { policy: EarnPolicy },
    /// Stop earning at this store.
    Close,
    /// Earn again.
    Reopen,
}

impl Claims for StoreCommand {}

/// What happened to a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreEvent {
    /// The store was registered with its first policy (version 1).
    StoreRegistered { store: StoreId, name: StoreName, owner: MemberId, policy: EarnPolicy },
    /// A new earn policy is in force from now on.
    EarnPolicyUpdated { policy: EarnPolicy, policy_version: u32 },
    /// The store stopped earning.
    StoreClosed,
    /// The store earns again.
    StoreReopened,
}

impl DomainEvent for StoreEvent {
    fn event_type(&self) -> String {
        match self {
            StoreEvent::StoreRegistered { .. } => "StoreRegistered",
            StoreEvent::EarnPolicyUpdated { .. } => "EarnPolicyUpdated",
            StoreEvent::StoreClosed => "StoreClosed",
            StoreEvent::StoreReopened => "StoreReopened",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// A registered store: its id, policy and whether it is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Store {
    registered: Option<RegisteredStore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RegisteredStore {
    id: StoreId,
    owner: MemberId,
    policy: EarnPolicy,
    policy_version: u32,
    open: bool,
}

impl Store {
    /// The terms a wallet earns under, `None` until registered.
    pub fn terms(&self) -> Option<StoreTerms> {
        self.registered.as_ref().map(|s| StoreTerms {
            open: s.open,
            policy: s.policy,
            policy_version: s.policy_version,
        })
    }

    /// The owner, `None` until registered.
    pub fn owner(&self) -> Option<&MemberId> {
        self.registered.as_ref().map(|s| &s.owner)
    }

    fn require(&self) -> Result<&RegisteredStore, DomainError> {
        self.registered.as_ref().ok_or(DomainError::NotFound("store"))
    }
}

impl Aggregate for Store {
    const TYPE: &'static str = "Store";
    type Command = StoreCommand;
    type Event = StoreEvent;
    type Error = DomainError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: StoreCommand,
        directory: &Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            StoreCommand::Register { store, name, owner, policy } => {
                if let Some(existing) = &self.registered {
                    return Err(DomainError::AlreadyRegistered(format!("store {}", existing.id)));
                }
                if directory.member(&owner).await?.is_none() {
                    return Err(DomainError::UnknownMember(owner));
                }
                StoreEvent::StoreRegistered { store, name, owner, policy }
            }
            StoreCommand::UpdateEarnPolicy { policy } => {
                let current = self.require()?;
                StoreEvent::EarnPolicyUpdated { policy, policy_version: current.policy_version + 1 }
            }
            StoreCommand::Close => {
                let current = self.require()?;
                if !current.open {
                    return Err(DomainError::StoreClosed(current.id.clone()));
                }
                StoreEvent::StoreClosed
            }
            StoreCommand::Reopen => {
                let current = self.require()?;
                if current.open {
                    return Err(DomainError::StoreOpen(current.id.clone()));
                }
                StoreEvent::StoreReopened
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: StoreEvent) {
        match event {
            StoreEvent::StoreRegistered { store, owner, policy, .. } => {
                self.registered = Some(RegisteredStore { id: store, owner, policy, policy_version: 1, open: true });
            }
            StoreEvent::EarnPolicyUpdated { policy, policy_version } => {
                if let Some(s) = &mut self.registered {
                    s.policy = policy;
                    s.policy_version = policy_version;
                }
            }
            StoreEvent::StoreClosed => {
                if let Some(s) = &mut self.registered {
                    s.open = false;
                }
            }
            StoreEvent::StoreReopened => {
                if let Some(s) = &mut self.registered {
                    s.open = true;
                }
            }
        }
    }
}
