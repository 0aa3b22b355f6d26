//! The one error type every aggregate returns.

use crate::values::{MemberId, Points, PostId, Provider, PurchaseRef, ShareId, StoreId, ValueError};

/// Why a command was refused. Every variant is a decision of the domain except
/// [`DomainError::Lookup`], which says a directory lookup could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value in the command is not acceptable.
    #[error(transparent)]
    Invalid(#[from] ValueError),
    /// The member is not registered.
    #[error("member {0} is not registered")]
    UnknownMember(MemberId),
    /// The store is not registered.
    #[error("store {0} is not registered")]
    UnknownStore(StoreId),
    /// The command is addressed to an aggregate that does not exist yet.
    #[error("this {0} does not exist")]
    NotFound(&'static str),
    /// The share is unknown to this wallet, or that part of it is settled.
    #[error("share {share} has no open part for {recipient}")]
    UnknownSharePart {
        /// The share.
        share: ShareId,
        /// The recipient whose part was to be refunded.
        recipient: MemberId,
    },
    /// Registering something that is registered already.
    #[error("{0} is already registered")]
    AlreadyRegistered(String),
    /// The handle belongs to another member.
    #[error("handle {0} is taken")]
    HandleTaken(String),
    /// The member was deactivated.
    #[error("member {0} is deactivated")]
    MemberInactive(MemberId),
    /// The wallet belongs to another member than the command names.
    #[error("wallet belongs to member {0}")]
    WrongWallet(MemberId),
    /// The store is closed.
    #[error("store {0} is closed")]
    StoreClosed(StoreId),
    /// The store is open.
    #[error("store {0} is open")]
    StoreOpen(StoreId),
    /// The purchase was already used to earn points at this store.
    #[error("purchase {purchase_ref} was already recorded at store {store}")]
    DuplicatePurchaseRef {
        /// The store.
        store: StoreId,
        /// The purchase.
        purchase_ref: PurchaseRef,
    },
    /// The purchase earns nothing under the store's policy.
    #[error("a purchase of {amount} earns no points at store {store} (minimum purchase {min_purchase})")]
    NothingToEarn {
        /// The store.
        store: StoreId,
        /// The amount paid.
        amount: u64,
        /// The store's minimum purchase.
        min_purchase: u64,
    },
    /// Not enough points at that store.
    #[error("insufficient points at store {store}: balance {balance}, needed {needed}")]
    InsufficientPoints {
        /// The store.
        store: StoreId,
        /// The balance there.
        balance: u64,
        /// What the command needed.
        needed: u64,
    },
    /// A member tried to share points with themselves.
    #[error("points cannot be shared with oneself")]
    SelfShare,
    /// A share with no recipient, too many, or one listed twice.
    #[error("invalid recipients: {0}")]
    InvalidRecipients(String),
    /// The social account is linked already.
    #[error("a {0} account is already linked")]
    AlreadyLinked(Provider),
    /// No social account of that provider is linked.
    #[error("no {0} account is linked")]
    NotLinked(Provider),
    /// The account was linked again since the link a worker acted on.
    #[error("the {0} account was linked again since")]
    StaleLink(Provider),
    /// The post was deleted.
    #[error("post {0} is deleted")]
    PostDeleted(PostId),
    /// The post is not cross-posted to that provider.
    #[error("post is not cross-posted to {0}")]
    ProviderNotTargeted(Provider),
    /// The provider's outcome is final already.
    #[error("post was already published on {0}")]
    AlreadyPublished(Provider),
    /// A total would leave the representable range.
    #[error("balance would exceed the largest balance allowed")]
    BalanceOverflow,
    /// A directory lookup failed (storage unavailable); nothing was decided.
    #[error("lookup failed: {0}")]
    Lookup(String),
}

impl DomainError {
    /// Shorthand for the common case of "balance too small".
    pub fn insufficient(store: &StoreId, balance: u64, needed: Points) -> Self {
        Self::InsufficientPoints { store: store.clone(), balance, needed: needed.get() }
    }
}
