//! Mutations: one command each. Each answers with the command's last event
//! position and the state read from the read model once its projection has
//! applied that position (read-your-writes, bounded by `read_timeout`).
//! An `idempotencyKey` makes a retry return the first outcome.

mod catalog;

pub(crate) use catalog::{link_error, links, own_member};
mod posts;
mod wallet;

use std::time::{Duration, Instant};

use async_graphql::{Context, Result};
use eventstore::{CommandContext, CommandOutcome, Model};
use sha2::{Digest, Sha256};

use tracing::Instrument;

use super::{RequestId, coded, state};
use crate::auth::Claims;
use crate::checkpoints::Checkpoints;
use crate::errors::command_error;

/// Mutations: one command each.
#[derive(async_graphql::MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    wallet::EarnMutations,
    wallet::SpendMutations,
    wallet::CorrectionMutations,
    catalog::MemberMutations,
    catalog::StoreMutations,
    posts::PostMutations,
);

/// A command on its way: which aggregate, which read model shows its effect.
struct Run<'a, A: Model> {
    /// The aggregate's id.
    id: &'a str,
    command: A::Command,
    idempotency_key: Option<String>,
    /// The projection whose read model the answer is read from.
    projection: &'static str,
    /// The command's name in metrics.
    kind: &'static str,
    /// The command starts the aggregate's stream (see `CommandContext::fresh_id`).
    fresh_id: bool,
}

/// Runs the command as the caller and waits until its projection has applied it.
async fn run<A: Model>(ctx: &Context<'_>, claims: &Claims, run: Run<'_, A>) -> Result<CommandOutcome> {
    let state = state(ctx)?;
    let request_id = ctx.data_opt::<RequestId>().map(|id| id.0.clone());
    let command_id = scoped_key(claims, run.idempotency_key)?;
    // Its log lines carry the command id and correlation id its events will
    // (the scoped idempotency key, else one the store makes up: known once
    // it is written), and the position it was written at.
    let span = tracing::info_span!(
        "command",
        command = run.kind,
        command_id = command_id.as_deref(),
        correlation_id = command_id.as_deref(),
        position = tracing::field::Empty,
    );
    let context = CommandContext {
        command_id,
        actor: Some(claims.sub.clone()),
        role: Some(format!("{:?}", claims.role).to_lowercase()),
        request_id,
        fresh_id: run.fresh_id,
        ..CommandContext::default()
    };
    let started = Instant::now();
    let deadline = state.limits.mutation_deadline;
    let execute = state.store.execute::<A>(run.id, run.command, context).instrument(span.clone());
    let outcome = match tokio::time::timeout(deadline, execute).await {
        Ok(outcome) => {
            let outcome = outcome.map_err(command_error)?;
            span.record("command_id", outcome.command_id.as_str());
            span.record("correlation_id", outcome.command_id.as_str());
            span.record("position", outcome.last_position);
            span.in_scope(|| tracing::debug!(replayed = outcome.replayed, "command recorded"));
            outcome
        }
        Err(_) => {
            metrics::counter!("pointstream_mutation_deadlines_total", "command" => run.kind).increment(1);
            return Err(coded(
                "OUTCOME_UNKNOWN",
                format!(
                    "the command did not finish within {} ms: it may or may not be recorded; retrying it with the \
                     same idempotencyKey is safe (a recorded command answers with its first outcome)",
                    deadline.as_millis()
                ),
            ));
        }
    };
    metrics::histogram!("pointstream_command_seconds", "command" => run.kind).record(started.elapsed().as_secs_f64());
    if let Some(progress) = ctx.data_opt::<std::sync::Arc<crate::transport::Progress>>() {
        progress.wrote(outcome.last_position);
    }
    let checkpoints = ctx.data::<Checkpoints>()?;
    wait_for_projection(checkpoints, state.read_timeout, run.projection, outcome.last_position).await?;
    Ok(outcome)
}

/// Waits until projection `name` has applied `position` (read-your-writes),
/// or fails with `NOT_YET_VISIBLE`: the write succeeded but cannot be read yet.
/// The wait, either way, goes to `pointstream_read_wait_seconds`.
async fn wait_for_projection(
    checkpoints: &Checkpoints,
    timeout: Duration,
    name: &'static str,
    position: u64,
) -> Result<()> {
    let started = Instant::now();
    let reached = checkpoints.wait(name, position, timeout).await;
    metrics::histogram!("pointstream_read_wait_seconds", "projection" => name).record(started.elapsed().as_secs_f64());
    reached.map(|_| ()).map_err(|at| {
        coded(
            "NOT_YET_VISIBLE",
            format!(
                "the command was recorded at position {position} but the {name} read model is at {at}; read again shortly"
            ),
        )
    })
}

/// The longest idempotency key a client may send, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// A client's idempotency key, checked (1 to 255 printable ASCII
/// characters) and scoped to the caller, as payment APIs scope theirs: the
/// command log keys it by a digest of the token's subject, so one caller's
/// key never meets another's (neither its outcome nor the knowledge that it
/// exists crosses over).
fn scoped_key(claims: &Claims, key: Option<String>) -> Result<Option<String>> {
    let Some(key) = key else { return Ok(None) };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(coded(
            "BAD_USER_INPUT",
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters"),
        ));
    }
    let scope = hex::encode(&Sha256::digest(claims.sub.as_bytes())[..16]);
    Ok(Some(format!("{scope}/{key}")))
}

/// The id of something a mutation creates when the client names none: derived
/// from the caller's scoped idempotency key (so a retry names the same
/// thing, and another caller's same key another), else fresh.
fn new_id(claims: &Claims, scope: &str, idempotency_key: Option<&str>) -> Result<String> {
    Ok(match scoped_key(claims, idempotency_key.map(str::to_string))?.as_deref() {
        Some(key) => {
            let digest = Sha256::digest(format!("{scope}\0{key}").as_bytes());
            format!("k{}", &hex::encode(digest)[..40])
        }
        None => uuid::Uuid::now_v7().simple().to_string(),
    })
}

/// The row a mutation answers with, which its projection has just written.
pub(super) fn written<T>(row: Option<T>, what: &str) -> Result<T> {
    row.ok_or_else(|| {
        tracing::error!(what, "a read model row is missing after its command was applied");
        coded("INTERNAL", "internal error")
    })
}
