//! The Member aggregate: a person with a wallet, a handle and linked social
//! accounts. Access tokens are never part of it (they are secrets, kept
//! encrypted outside the log).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::{Claim, Claims, MemberStatus, Services};
use crate::error::DomainError;
use crate::values::{DisplayName, ExternalRef, Handle, MemberId, Provider};

/// What can be asked of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberCommand {
    /// Register with a unique handle.
    Register { member: MemberId, handle: Handle, display_name: DisplayName },
    /// Link an account at a social provider.
    LinkSocialAccount { provider: Provider, external_id: ExternalRef },
    /// Unlink it.
    UnlinkSocialAccount { provider: Provider },
    /// Deactivate the member: no more earning or receiving.
    Deactivate,
}

impl Claims for MemberCommand {
    fn claims(&self) -> Vec<Claim> {
        match self {
            MemberCommand::Register { handle, .. } => vec![Claim { kind: "handle", key: handle.to_string() }],
            _ => Vec::new(),
        }
    }

    fn claim_taken(&self, claim: &Claim) -> DomainError {
        DomainError::HandleTaken(claim.key.clone())
    }
}

/// What happened to a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberEvent {
    /// The member registered.
    MemberRegistered { member: MemberId, handle: Handle, display_name: DisplayName },
    /// A social account was linked.
    SocialAccountLinked { provider: Provider, external_id: ExternalRef },
    /// A social account was unlinked.
    SocialAccountUnlinked { provider: Provider },
    /// The member was deactivated.
    MemberDeactivated,
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> String {
        match self {
            MemberEvent::MemberRegistered { .. } => "MemberRegistered",
            MemberEvent::SocialAccountLinked { .. } => "SocialAccountLinked",
            MemberEvent::SocialAccountUnlinked { .. } => "SocialAccountUnlinked",
            MemberEvent::MemberDeactivated => "MemberDeactivated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// A member's current state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    id: Option<MemberId>,
    active: bool,
    social: BTreeMap<Provider, ExternalRef>,
}

impl Member {
    /// The member's status, `None` until registered.
    pub fn status(&self) -> Option<MemberStatus> {
        self.id.as_ref().map(|_| MemberStatus { active: self.active })
    }

    fn require_active(&self) -> Result<(), DomainError> {
        match &self.id {
            None => Err(DomainError::NotFound("member")),
            Some(id) if !self.active => Err(DomainError::MemberInactive(id.clone())),
            Some(_) => Ok(()),
        }
    }
}

impl Aggregate for Member {
    const TYPE: &'static str = "Member";
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = DomainError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: MemberCommand,
        _: &Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            MemberCommand::Register { member, handle, display_name } => {
                if let Some(id) = &self.id {
                    return Err(DomainError::AlreadyRegistered(format!("member {id}")));
                }
                MemberEvent::MemberRegistered { member, handle, display_name }
            }
            MemberCommand::LinkSocialAccount { provider, external_id } => {
                self.require_active()?;
                if self.social.contains_key(&provider) {
                    return Err(DomainError::AlreadyLinked(provider));
                }
                MemberEvent::SocialAccountLinked { provider, external_id }
            }
            MemberCommand::UnlinkSocialAccount { provider } => {
                if self.id.is_none() {
                    return Err(DomainError::NotFound("member"));
                }
                if !self.social.contains_key(&provider) {
                    return Err(DomainError::NotLinked(provider));
                }
                MemberEvent::SocialAccountUnlinked { provider }
            }
            MemberCommand::Deactivate => {
                self.require_active()?;
                MemberEvent::MemberDeactivated
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::MemberRegistered { member, .. } => {
                self.id = Some(member);
                self.active = true;
            }
            MemberEvent::SocialAccountLinked { provider, external_id } => {
                self.social.insert(provider, external_id);
            }
            MemberEvent::SocialAccountUnlinked { provider } => {
                self.social.remove(&provider);
            }
            MemberEvent::MemberDeactivated => self.active = false,
        }
    }
}
