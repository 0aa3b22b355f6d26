//! The pointstream domain: aggregates, commands, events, value types and
//! errors. Pure: no I/O, no database, no async runtime of its own.
//!
//! Each aggregate implements cqrs-es's [`cqrs_es::Aggregate`]: `handle`
//! decides (returning events through the sink, or a [`DomainError`]) and
//! `apply` evolves state. Lookups across aggregates go through the
//! [`Directory`] the aggregate receives as its services.
//!
//! ```
//! use cqrs_es::test::TestFramework;
//! use pointstream_domain::{InMemoryDirectory, Member, MemberCommand, MemberEvent, values::*};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let member = MemberId::parse("ann")?;
//! let handle = Handle::parse("ann")?;
//! let display_name = DisplayName::parse("Ann")?;
//! TestFramework::<Member>::with(InMemoryDirectory::default().services())
//!     .given_no_previous_events()
//!     .when(MemberCommand::Register { member: member.clone(), handle: handle.clone(), display_name: display_name.clone() })
//!     .then_expect_events(vec![MemberEvent::MemberRegistered { member, handle, display_name }]);
//! # Ok(())
//! # }
//! ```

pub mod directory;
pub mod error;
pub mod member;
pub mod post;
pub mod store;
pub mod values;
pub mod wallet;

pub use directory::{Claim, Claims, Directory, InMemoryDirectory, MemberStatus, Services, StoreTerms};
pub use error::DomainError;
pub use member::{Member, MemberCommand, MemberEvent};
pub use post::{Photo, Post, PostCommand, PostEvent, SocialOutcome, SocialStatus};
pub use store::{Store, StoreCommand, StoreEvent};
pub use wallet::{SharePart, Wallet, WalletCommand, WalletEvent};
