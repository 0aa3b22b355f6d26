//! Running a command: load (cache, snapshot, log), decide, append with
//! optimistic concurrency, retry on conflict, and idempotency by command id.

use std::sync::Arc;
use std::time::Duration;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use domain::{Claims, DomainError, Services};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tracing::Instrument;

use migrations::tables::CommandLog;

use crate::chain::{HashedFields, event_hash};
use crate::clock::now_us;
use crate::directory::StoreDirectory;
use crate::error::{CommandError, EventStoreError};
use crate::outcome::CommandOutcome;
use crate::record::{Metadata, encode};
use crate::store::{EventStore, Slot};
use crate::trace::{self, TraceContext};
use crate::writer::{AppendError, AppendRequest, CommandRecord, NewEvent, SnapshotRecord, Traced};

/// An aggregate the store can run commands on: a cqrs-es aggregate of the
/// pointstream domain whose commands can be fingerprinted and carry claims.
pub trait Model:
    Aggregate<Error = DomainError, Services = Services, Command: Claims + Serialize + Clone + Send + Sync> + Clone + 'static
{
}

impl<A> Model for A where
    A: Aggregate<Error = DomainError, Services = Services, Command: Claims + Serialize + Clone + Send + Sync>
        + Clone
        + 'static
{
}

/// Who issues a command and why; becomes the events' [`Metadata`].
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Client idempotency key or an id derived from the cause (share + recipient).
    /// The first outcome for a key is kept; the same key again returns it.
    pub command_id: Option<String>,
    /// Who issues the command.
    pub actor: Option<String>,
    /// In which role.
    pub role: Option<String>,
    /// Shared by all commands caused by one request; defaults to the command id.
    pub correlation_id: Option<String>,
    /// The event or command that caused this one.
    pub causation_id: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_ip: Option<String>,
    /// The command starts the aggregate's stream (its id was made up for it,
    /// or it can only create), so the stream is taken to be empty without
    /// reading it. Should it exist after all, the append conflicts on the
    /// stream's first sequence and the command is retried on the stored state.
    pub fresh_id: bool,
}

impl EventStore {
    /// Runs `command` on aggregate `A` with id `id`.
    ///
    /// Returns the positions written, or the recorded outcome when the
    /// command id was seen before with the same command. A command that keeps
    /// losing races to other processes is retried `max_attempts` times, then
    /// fails with [`CommandError::Conflict`]. Nothing is written on any error.
    pub async fn execute<A: Model>(
        &self,
        id: &str,
        command: A::Command,
        context: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        // A span for traces only (logs have the caller's `command` span):
        // its context is stored with the events, which carry the trace on.
        let span = tracing::info_span!(
            target: trace::TARGET,
            "execute",
            otel.name = %format_args!("execute {}", A::TYPE),
            aggregate_type = A::TYPE,
            aggregate_id = id,
            attempts = tracing::field::Empty,
        );
        self.execute_in_span::<A>(id, command, context).instrument(span).await
    }

    async fn execute_in_span<A: Model>(
        &self,
        id: &str,
        command: A::Command,
        context: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let traced = TraceContext::current();
        // The command's steps get spans of their own only in a sampled trace.
        let sampled = traced.as_ref().is_some_and(TraceContext::sampled);
        let keyed = context.command_id.is_some();
        let fresh_id = context.fresh_id;
        let command_id = context.command_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let fingerprint = if keyed { Some(fingerprint::<A>(id, &command)?) } else { None };
        let metadata = serde_json::to_string(&Metadata {
            actor: context.actor,
            role: context.role,
            correlation_id: context.correlation_id.unwrap_or_else(|| command_id.clone()),
            command_id: command_id.clone(),
            causation_id: context.causation_id,
            request_id: context.request_id,
            client_ip: context.client_ip,
            traceparent: traced.as_ref().map(|t| t.traceparent.clone()),
            tracestate: traced.and_then(|t| t.tracestate),
        })
        .map_err(|e| EventStoreError::Encode { what: "metadata", reason: e.to_string() })?;
        let services: Services = Arc::new(StoreDirectory::new(self.clone()));
        let claims = command.claims();

        let slot = self.slot(A::TYPE, id);
        let mut slot = slot.lock().await;
        if let Some(fingerprint) = &fingerprint
            && let Some(outcome) = self.recorded_outcome(&command_id, fingerprint).await?
        {
            return Ok(outcome);
        }

        // Taken to be new, not read: a stream found on append is no lost race.
        let mut assumed_new = fresh_id && slot.state.is_none();
        if assumed_new {
            *slot = Slot { state: Some(Box::new(A::default())), sequence: 0, hash: String::new() };
        }
        let max_attempts = Ord::max(self.inner.config.max_attempts, 1);
        // A refusal decided on a stale cache is decided once more on the
        // stored state; that is no lost race either, so it takes no attempt.
        let mut rechecked = false;
        let mut attempt = 0;
        while attempt < max_attempts {
            tracing::Span::current().record("attempts", attempt + 1);
            let load = trace::step(
                sampled,
                || tracing::info_span!(target: trace::TARGET, "load", from_cache = tracing::field::Empty),
            );
            let loaded = self.fill::<A>(id, &mut slot).instrument(load.clone()).await?;
            load.record("from_cache", !loaded);
            let Some(current) = slot.state.as_ref().and_then(|s| s.downcast_ref::<A>()) else {
                return Err(EventStoreError::Closed.into());
            };
            let mut next = current.clone();
            let sink = EventSink::default();
            let decide = trace::step(sampled, || tracing::info_span!(target: trace::TARGET, "decide"));
            if let Err(refusal) = next.handle(command.clone(), &services, &sink).instrument(decide).await {
                // Decided on this process's cache, which another process may
                // have outdated: refuse only on the stored state, bringing
                // the cached one up to it (one query) and deciding again.
                if !loaded && !rechecked && self.catch_up::<A>(id, &mut slot).await? {
                    rechecked = true;
                    continue;
                }
                return Err(refusal.into());
            }
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    command_id,
                    aggregate_type: A::TYPE.to_string(),
                    aggregate_id: id.to_string(),
                    sequence: slot.sequence,
                    first_position: 0,
                    last_position: 0,
                    replayed: false,
                });
            }

            let mut rows = Vec::with_capacity(events.len());
            let mut previous = slot.hash.clone();
            let recorded_at_us = now_us();
            for (offset, event) in events.iter().enumerate() {
                let encoded = encode(event)?;
                let sequence = slot.sequence + 1 + offset as u64;
                let hash = event_hash(
                    &previous,
                    &HashedFields {
                        aggregate_type: A::TYPE,
                        aggregate_id: id,
                        sequence,
                        event_type: &encoded.event_type,
                        event_version: encoded.event_version,
                        payload: &encoded.payload,
                        metadata: &metadata,
                        recorded_at_us,
                    },
                );
                previous.clone_from(&hash);
                rows.push(NewEvent {
                    aggregate_type: A::TYPE,
                    aggregate_id: id.to_string(),
                    sequence,
                    event_type: encoded.event_type,
                    event_version: encoded.event_version,
                    payload: encoded.payload,
                    metadata: metadata.clone(),
                    recorded_at_us,
                    hash,
                });
            }
            let new_sequence = slot.sequence + rows.len() as u64;
            let every = Ord::max(self.inner.config.snapshot_every, 1);
            let snapshot = if new_sequence / every > slot.sequence / every {
                Some(SnapshotRecord {
                    sequence: new_sequence,
                    state: serde_json::to_string(&next)
                        .map_err(|e| EventStoreError::Encode { what: "snapshot", reason: e.to_string() })?,
                    hash: previous.clone(),
                })
            } else {
                None
            };

            let (reply, answer) = oneshot::channel();
            // Waits in the group commit's queue, then for its commit (the
            // group commit's span is its child, or links to it).
            let append =
                trace::step(sampled, || tracing::info_span!(target: trace::TARGET, "append", events = rows.len()));
            let request = AppendRequest {
                trace: Traced::of(&append),
                events: rows,
                command: fingerprint
                    .as_ref()
                    .map(|f| CommandRecord { command_id: command_id.clone(), fingerprint: f.clone() }),
                claims: claims.clone(),
                snapshot,
                reply,
            };
            let appended = async {
                self.inner.appender.send(request).await.map_err(|_| EventStoreError::Closed)?;
                answer.await.map_err(|_| EventStoreError::Closed)
            };
            match appended.instrument(append).await? {
                Ok(mut outcome) => {
                    slot.state = Some(Box::new(next));
                    slot.sequence = new_sequence;
                    slot.hash = previous;
                    outcome.command_id = command_id;
                    return Ok(outcome);
                }
                Err(AppendError::Conflict) => {
                    slot.state = None;
                    if std::mem::take(&mut assumed_new) {
                        // The stream was there after all: decide on it at once.
                        continue;
                    }
                    // Another process wrote this aggregate: back off a random
                    // while so the contenders do not collide again in lockstep.
                    attempt += 1;
                    if attempt < max_attempts {
                        let ceiling_ms = 2u64 << Ord::min(attempt - 1, 6);
                        tokio::time::sleep(Duration::from_micros(rand::random_range(0..ceiling_ms * 1_000))).await;
                    }
                }
                Err(AppendError::ClaimTaken(claim)) => return Err(command.claim_taken(&claim).into()),
                Err(AppendError::DuplicateCommand) => {
                    slot.state = None;
                    let fingerprint = fingerprint.as_deref().unwrap_or_default();
                    return match self.recorded_outcome(&command_id, fingerprint).await? {
                        Some(outcome) => Ok(outcome),
                        None => Err(CommandError::Conflict {
                            aggregate_type: A::TYPE,
                            aggregate_id: id.to_string(),
                            attempts: max_attempts,
                        }),
                    };
                }
                Err(AppendError::Database(err)) => {
                    slot.state = None;
                    return Err(err.into());
                }
            }
        }
        Err(CommandError::Conflict { aggregate_type: A::TYPE, aggregate_id: id.to_string(), attempts: max_attempts })
    }

    /// Whether a command with this id has been recorded (by any process).
    pub async fn command_recorded(&self, command_id: &str) -> Result<bool, EventStoreError> {
        let select = Query::select()
            .column(CommandLog::CommandId)
            .from(CommandLog::Table)
            .and_where(Expr::col(CommandLog::CommandId).eq(command_id))
            .to_owned();
        Ok(self.inner.db.query_one(&select).await?.is_some())
    }

    /// The outcome recorded for `command_id`, if any; an error if it was
    /// recorded for a different command.
    async fn recorded_outcome(
        &self,
        command_id: &str,
        fingerprint: &str,
    ) -> Result<Option<CommandOutcome>, CommandError> {
        let row = self
            .inner
            .db
            .query_one(
                Query::select()
                    .columns([CommandLog::Fingerprint, CommandLog::Outcome])
                    .from(CommandLog::Table)
                    .and_where(Expr::col(CommandLog::CommandId).eq(command_id)),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let recorded: String = row.try_get("", "fingerprint")?;
        if recorded != fingerprint {
            return Err(CommandError::IdempotencyKeyReused { command_id: command_id.to_string() });
        }
        let outcome: String = row.try_get("", "outcome")?;
        let mut outcome: CommandOutcome = serde_json::from_str(&outcome)
            .map_err(|e| EventStoreError::Encode { what: "recorded outcome", reason: e.to_string() })?;
        outcome.replayed = true;
        Ok(Some(outcome))
    }
}

/// What makes two commands "the same" for idempotency: target and content.
fn fingerprint<A: Model>(id: &str, command: &A::Command) -> Result<String, EventStoreError> {
    let body = serde_json::to_vec(&command.retry_identity())
        .map_err(|e| EventStoreError::Encode { what: "command", reason: e.to_string() })?;
    let mut hasher = Sha256::new();
    hasher.update(A::TYPE.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    hasher.update([0]);
    hasher.update(&body);
    Ok(hex::encode(hasher.finalize()))
}
