//! `members` and `social_accounts` (no tokens: those never enter the log).

use domain::values::Provider;
use domain::{Member, MemberEvent};
use eventstore::RecordedEvent;
use sea_orm::{DatabaseTransaction, DbErr};

use super::{decode_as, ids_of, key1, key2};
use crate::entities::{members, social_accounts};
use crate::error::ProjectionError;
use crate::projection::{Names, Projection};
use crate::table::{self, Difference, Rows, Writes, diff};

/// The members projection.
pub struct Members;

/// Members and their linked accounts, keyed by member id (and provider).
#[derive(Debug, Default)]
pub struct MembersState {
    /// `members` rows.
    pub members: Rows<String, members::Model>,
    /// `social_accounts` rows.
    pub accounts: Rows<(String, String), social_accounts::Model>,
}

impl Projection for Members {
    const NAME: &'static str = "members";
    const TABLES: &'static [&'static str] = &["members", "social_accounts"];
    type State = MembersState;
    type Event = MemberEvent;

    fn decode(event: &RecordedEvent) -> Result<Option<MemberEvent>, ProjectionError> {
        decode_as::<Member>(event)
    }

    async fn load(
        txn: &DatabaseTransaction,
        names: &Names,
        events: &[(&RecordedEvent, MemberEvent)],
    ) -> Result<MembersState, DbErr> {
        let ids: Vec<_> = ids_of(events).iter().map(|id| key1(id)).collect();
        let rows = table::load::<members::Entity>(txn, &names.table("members"), &ids).await?;
        let keys: Vec<_> =
            ids_of(events).iter().flat_map(|id| Provider::ALL.map(|provider| key2(id, provider.name()))).collect();
        let accounts = table::load::<social_accounts::Entity>(txn, &names.table("social_accounts"), &keys).await?;
        Ok(MembersState {
            members: Rows::loaded(rows.into_iter().map(|m| (m.member_id.clone(), m))),
            accounts: Rows::loaded(accounts.into_iter().map(|a| ((a.member_id.clone(), a.provider.clone()), a))),
        })
    }

    fn apply(state: &mut MembersState, event: &RecordedEvent, decoded: &MemberEvent) -> Result<(), ProjectionError> {
        let id = &event.aggregate_id;
        match decoded.clone() {
            MemberEvent::MemberRegistered { handle, display_name, .. } => state.members.put(
                id.clone(),
                members::Model {
                    member_id: id.clone(),
                    handle: handle.as_str().to_string(),
                    display_name: display_name.as_str().to_string(),
                    active: true,
                    registered_at_us: event.recorded_at_us,
                },
            ),
            MemberEvent::SocialAccountLinked { provider, external_id, instance, .. } => state.accounts.put(
                (id.clone(), provider.to_string()),
                social_accounts::Model {
                    member_id: id.clone(),
                    provider: provider.to_string(),
                    external_id: external_id.as_str().to_string(),
                    linked_at_us: event.recorded_at_us,
                    instance: instance.map(|i| i.as_str().to_string()),
                    status: "linked".to_string(),
                    reason: None,
                },
            ),
            MemberEvent::SocialAccountNeedsRelink { provider, reason, .. } => {
                let account = state.accounts.get_mut(&(id.clone(), provider.to_string())).ok_or_else(|| {
                    ProjectionError::Missing { at: event.address(), what: format!("{provider} account of {id}") }
                })?;
                account.status = "needs_relink".to_string();
                account.reason = Some(reason.as_str().to_string());
            }
            MemberEvent::SocialAccountUnlinked { provider } => {
                state.accounts.remove(&(id.clone(), provider.to_string()))
            }
            MemberEvent::MemberDeactivated => {
                let member = state
                    .members
                    .get_mut(id)
                    .ok_or_else(|| ProjectionError::Missing { at: event.address(), what: format!("member {id}") })?;
                member.active = false;
            }
        }
        Ok(())
    }

    fn writes(state: &mut MembersState, names: &Names) -> Result<Writes, DbErr> {
        let members = state.members.writes::<members::Entity>(&names.table("members"), |id| key1(id))?;
        let accounts =
            state.accounts.writes::<social_accounts::Entity>(&names.table("social_accounts"), |(m, p)| key2(m, p))?;
        Ok(members.then(accounts))
    }

    async fn dump(db: &DatabaseTransaction, names: &Names) -> Result<MembersState, DbErr> {
        let rows = table::dump::<members::Entity>(db, &names.table("members")).await?;
        let accounts = table::dump::<social_accounts::Entity>(db, &names.table("social_accounts")).await?;
        Ok(MembersState {
            members: Rows::loaded(rows.into_iter().map(|m| (m.member_id.clone(), m))),
            accounts: Rows::loaded(accounts.into_iter().map(|a| ((a.member_id.clone(), a.provider.clone()), a))),
        })
    }

    fn diff(expected: &MembersState, found: &MembersState) -> Vec<Difference> {
        let mut differences = diff("members", &expected.members, &found.members);
        differences.extend(diff("social_accounts", &expected.accounts, &found.accounts));
        differences
    }
}
