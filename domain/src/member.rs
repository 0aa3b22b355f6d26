//! The Member aggregate: a person with a wallet, a handle and linked social
//! accounts. Access tokens are never part of it (they are secrets, kept
//! encrypted outside the log).

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::{Claim, Claims, MemberStatus, Services};
use crate::error::DomainError;
use crate::values::{DisplayName, ExternalRef, Handle, MemberId, Provider, Reason};

/// What can be asked of a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberCommand {
    /// Register with a unique handle.
    Register { member: MemberId, handle: Handle, display_name: DisplayName },
    /// Link an account at a social provider: a new link, the same account
    /// again, or any account in place of one that needs relinking.
    LinkSocialAccount {
        provider: Provider,
        external_id: ExternalRef,
        /// The server the account lives on (a Mastodon instance, a Bluesky PDS).
        instance: Option<ExternalRef>,
        /// This link's id, which its sealed tokens carry.
        link: Option<ExternalRef>,
    },
    /// Unlink it.
    UnlinkSocialAccount { provider: Provider },
    /// The network refused the tokens of link `link` for good (a refused
    /// refresh, a revoked grant): the member must link the account again.
    MarkNeedsRelink { provider: Provider, link: Option<ExternalRef>, reason: Reason },
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
    /// A social account was linked (or linked again). Never its tokens.
    SocialAccountLinked {
        provider: Provider,
        external_id: ExternalRef,
        /// The server the account lives on (absent for Facebook and Twitter,
        /// and in events written before instances were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<ExternalRef>,
        /// The link's id, carried by its sealed tokens (absent for a link
        /// made before ids were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<ExternalRef>,
    },
    /// A social account was unlinked.
    SocialAccountUnlinked { provider: Provider },
    /// The network refused a link's tokens for good: posts there wait until
    /// the member links the account again.
    SocialAccountNeedsRelink { provider: Provider, link: Option<ExternalRef>, reason: Reason },
    /// The member was deactivated.
    MemberDeactivated,
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> String {
        match self {
            MemberEvent::MemberRegistered { .. } => "MemberRegistered",
            MemberEvent::SocialAccountLinked { .. } => "SocialAccountLinked",
            MemberEvent::SocialAccountUnlinked { .. } => "SocialAccountUnlinked",
            MemberEvent::SocialAccountNeedsRelink { .. } => "SocialAccountNeedsRelink",
            MemberEvent::MemberDeactivated => "MemberDeactivated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// A linked social account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The account at the network.
    pub external_id: ExternalRef,
    /// Its server, where the network has many.
    pub instance: Option<ExternalRef>,
    /// The link's id.
    pub link: Option<ExternalRef>,
    /// Whether the network refused its tokens for good.
    pub needs_relink: bool,
}

/// A member's current state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    id: Option<MemberId>,
    active: bool,
    /// Required (no serde default): a snapshot from before links had ids and
    /// states does not deserialize, so the member is replayed from its log.
    links: BTreeMap<Provider, Link>,
}

impl Member {
    /// The linked account at `provider`, if any.
    pub fn link(&self, provider: Provider) -> Option<&Link> {
        self.links.get(&provider)
    }

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
            MemberCommand::LinkSocialAccount { provider, external_id, instance, link } => {
                self.require_active()?;
                match self.links.get(&provider) {
                    None => {}
                    Some(existing) if existing.needs_relink => {}
                    Some(existing) if existing.external_id == external_id && existing.instance == instance => {}
                    Some(_) => return Err(DomainError::AlreadyLinked(provider)),
                }
                MemberEvent::SocialAccountLinked { provider, external_id, instance, link }
            }
            MemberCommand::UnlinkSocialAccount { provider } => {
                if self.id.is_none() {
                    return Err(DomainError::NotFound("member"));
                }
                if !self.links.contains_key(&provider) {
                    return Err(DomainError::NotLinked(provider));
                }
                MemberEvent::SocialAccountUnlinked { provider }
            }
            MemberCommand::MarkNeedsRelink { provider, link, reason } => {
                let current = self.links.get(&provider).ok_or(DomainError::NotLinked(provider))?;
                if current.link != link {
                    return Err(DomainError::StaleLink(provider));
                }
                if current.needs_relink {
                    // Marked already (by another worker): nothing new.
                    return Ok(());
                }
                MemberEvent::SocialAccountNeedsRelink { provider, link, reason }
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
            MemberEvent::SocialAccountLinked { provider, external_id, instance, link } => {
                self.links.insert(provider, Link { external_id, instance, link, needs_relink: false });
            }
            MemberEvent::SocialAccountUnlinked { provider } => {
                self.links.remove(&provider);
            }
            MemberEvent::SocialAccountNeedsRelink { provider, .. } => {
                if let Some(link) = self.links.get_mut(&provider) {
                    link.needs_relink = true;
                }
            }
            MemberEvent::MemberDeactivated => self.active = false,
        }
    }
}
