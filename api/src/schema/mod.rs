//! The GraphQL schema: queries over the read models ([`query`]), mutations
//! that run one command each and answer from the read model once it has
//! caught up ([`mutation`]), subscriptions fed by live tails
//! ([`subscription`]), DataLoaders against N+1 queries ([`loaders`]).

pub mod loaders;
pub mod mutation;
pub mod objects;
pub mod proofs;
pub mod query;
pub mod scalars;
pub mod subscription;

use std::time::Duration;

use async_graphql::{Context, Result, Schema};
use domain::values::Points;
use eventstore::EventStore;
use projections::ProjectorStatus;
use tokio::sync::watch;
use workers::tokens::TokenVault;

pub use self::mutation::MutationRoot;
pub use self::query::QueryRoot;
pub use self::subscription::{ConnectionSlots, SubscriptionRoot};
use crate::auth::{AuthError, Claims, Role};
use crate::checkpoints::Checkpoints;
use crate::documents::Reach;
pub(crate) use crate::errors::coded;
use crate::tail::Tails;
pub use loaders::{BalanceReads, Loaders, ReadConn, RequestLoaders};

/// The schema type.
pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What every resolver can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The event store (and its database, which holds the read models).
    pub store: EventStore,
    /// How long a mutation waits for its read model to catch up.
    pub read_timeout: Duration,
    /// Request limits.
    pub limits: Limits,
    /// Where linked accounts' access tokens are sealed; `None` when no token
    /// key is configured (then `linkSocialAccount` takes no token).
    pub tokens: Option<TokenVault>,
    /// Redis, when the service uses it (`/readyz` checks it).
    pub redis: Option<fred::prelude::Client>,
    /// Where photos are stored.
    pub media: media::MediaStore,
    /// How long a photo URL handed out stays good.
    pub photo_url_ttl: Duration,
    /// Status of the projectors running in this process (none when they run
    /// elsewhere): mutations wake on their commits instead of polling
    /// checkpoints, and `/readyz` and `/metrics` report them.
    pub projectors: Vec<watch::Receiver<ProjectorStatus>>,
    /// The public key of the notary running in this process, if one does:
    /// `myLedgerProof` hands it out for pinning.
    pub notary_key: Option<verify::PublicKey>,
    /// Where queries read: the primary, or replicas (`--read-database-url`).
    pub reads: crate::replicas::Reads,
    /// Linking social accounts on the server (OAuth); `None` without a token key.
    pub links: Option<std::sync::Arc<crate::links::SocialLinks>>,
}

/// A request's id: the client's `X-Request-Id` when it is a plausible one
/// (up to 64 letters, digits, `-`, `_`, `.`), else a fresh one. Every log
/// line about the request carries it, its commands' events store it in
/// their metadata, and the answer's `X-Request-Id` header repeats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// From the request's `X-Request-Id` header, if any.
    pub fn from_header(header: Option<&str>) -> RequestId {
        match header {
            Some(id)
                if !id.is_empty()
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
            {
                RequestId(id.to_string())
            }
            _ => RequestId(uuid::Uuid::now_v7().simple().to_string()),
        }
    }
}

/// Limits on what one request may ask; each hit is a clear error, not a failure.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection nesting.
    pub max_depth: usize,
    /// Highest query complexity (one per field, times page sizes).
    pub max_complexity: usize,
    /// Largest page a paginated field returns.
    pub max_page: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most subscriptions one WebSocket connection may hold at once.
    pub max_subscriptions: usize,
    /// Largest uploaded file, in bytes.
    pub max_upload_bytes: usize,
    /// Most files one request may upload.
    pub max_uploads: usize,
    /// Uploads of a request up to this many bytes are held in memory rather
    /// than in temporary files: a request declaring a longer body writes its
    /// files to disk, and a file goes there once it grows past this size.
    pub upload_memory_bytes: usize,
    /// Memory all uploads held in memory may take together, in bytes; an
    /// upload that does not fit goes to a temporary file.
    pub upload_memory_total: usize,
    /// Whether a request's only photo goes on to S3 while it arrives, when
    /// the request declares its length (see [`crate::multipart`]).
    pub stream_uploads: bool,
    /// Whether the schema answers introspection (`__schema`, `__type`).
    pub introspection: bool,
    /// How long a mutation's command may take before the client is told
    /// its outcome is unknown (`OUTCOME_UNKNOWN`).
    pub mutation_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 12,
            max_complexity: 5_000,
            max_page: 100,
            max_body_bytes: 1 << 20,
            max_subscriptions: 32,
            max_upload_bytes: 10 << 20,
            max_uploads: domain::post::MAX_PHOTOS,
            upload_memory_bytes: 2 << 20,
            upload_memory_total: 64 << 20,
            stream_uploads: true,
            introspection: true,
            mutation_deadline: Duration::from_secs(10),
        }
    }
}

/// Who is calling, as the transport found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// A valid token.
    Authenticated(Claims),
    /// A token that was refused.
    Refused(AuthError),
}

/// Builds the schema around `state`.
pub fn build(state: ApiState) -> ApiSchema {
    let limits = state.limits;
    let checkpoints = Checkpoints::new(state.store.clone(), &state.projectors);
    let reach = Reach {
        max_depth: limits.max_depth,
        max_expanded_fields: limits.max_complexity as u64,
        introspection: limits.introspection,
    };
    let builder = Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot)
        .data(Loaders::new(ReadConn::Fixed(state.store.db().clone()), false))
        .data(BalanceReads::new(&state.store))
        .data(Tails::new(state.store.clone(), state.reads.clone(), checkpoints.clone()))
        .data(checkpoints)
        .data(state)
        // One extension for error codes, the transport and the documents
        // cache: every field pays a hop per extension.
        .extension(crate::pipeline::Pipeline::new(crate::documents::Documents::new(reach)))
        // The depth limit is checked by `Documents` (introspection apart), before validation.
        .limit_complexity(limits.max_complexity);
    // Root fields' spans cost an extension call per field: only with traces on.
    let builder = if eventstore::trace::enabled() { builder.extension(crate::traces::RootFieldSpans) } else { builder };
    if limits.introspection { builder.finish() } else { builder.disable_introspection().finish() }
}

/// The schema's SDL, as `pointstream schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot)
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}

fn state<'a>(ctx: &Context<'a>) -> Result<&'a ApiState> {
    ctx.data::<ApiState>()
}

/// The caller's claims, or `UNAUTHENTICATED`.
fn claims<'a>(ctx: &Context<'a>) -> Result<&'a Claims> {
    match ctx.data_opt::<Caller>() {
        // A WebSocket outlives the moment its token was checked: every
        // operation checks the expiry again.
        Some(Caller::Authenticated(claims)) if crate::auth::expired(claims) => {
            Err(coded("UNAUTHENTICATED", crate::auth::AuthError::Expired.to_string()))
        }
        Some(Caller::Authenticated(claims)) => Ok(claims),
        Some(Caller::Refused(reason)) => Err(coded("UNAUTHENTICATED", reason.to_string())),
        _ => Err(coded("UNAUTHENTICATED", "a bearer token is required")),
    }
}

fn forbidden() -> async_graphql::Error {
    coded("FORBIDDEN", "not allowed for this token")
}

/// `FORBIDDEN` unless the caller's role allows the operation.
fn permit(allowed: bool) -> Result<()> {
    if allowed { Ok(()) } else { Err(forbidden()) }
}

/// What only `member` themself, admins and auditors may see.
fn member_or_overseer(claims: &Claims, member: &str) -> Result<()> {
    permit(match claims.role {
        Role::Admin | Role::Auditor => true,
        Role::Member => claims.member.as_deref() == Some(member),
        Role::Staff => false,
    })
}

fn internal(err: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %err, "query failed");
    coded("INTERNAL", "internal error")
}

/// A value refused by the domain's checks.
fn bad_input(error: domain::values::ValueError) -> async_graphql::Error {
    coded("BAD_USER_INPUT", error.to_string())
}

/// A points argument: positive and within the domain's limit.
fn points_of(raw: i64) -> Result<Points> {
    let raw = u64::try_from(raw).map_err(|_| coded("BAD_USER_INPUT", "points must be positive"))?;
    Points::new(raw).map_err(bad_input)
}

/// The request's own loaders when it has them (HTTP), else the shared ones.
fn loaders<'a>(ctx: &Context<'a>) -> Result<&'a Loaders> {
    match ctx.data_opt::<RequestLoaders>() {
        Some(own) => {
            Ok(own.get(ctx.query_env.operation.node.ty == async_graphql::parser::types::OperationType::Mutation))
        }
        None => ctx.data::<Loaders>(),
    }
}

/// A page size: `first` (20 when absent), between 1 and the page limit.
fn page_size(ctx: &Context<'_>, first: Option<i32>) -> Result<usize> {
    let max_page = state(ctx)?.limits.max_page;
    match usize::try_from(first.unwrap_or(20)) {
        Ok(first) if first >= 1 && first <= max_page => Ok(first),
        _ => Err(coded("BAD_USER_INPUT", format!("first must be between 1 and {max_page}"))),
    }
}
