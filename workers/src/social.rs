//! The social worker: cross-posts new posts to the networks they target, and
//! each photo added to a post later, once the post itself is published there
//! (on Twitter as a reply to the post's tweet, on Facebook as a photo post
//! whose caption names the post).
//!
//! It reads `{prefix}:events` (and `{prefix}:retry:social`, where `pointstream
//! dlq retry` requeues) in the consumer group `social`, any number of
//! instances side by side. An entry is acknowledged once every targeted
//! network has an outcome. Entries a crashed consumer held are reclaimed
//! (`XAUTOCLAIM`) after `claim_idle`; a worker waiting out a back-off keeps
//! its entry's idle time fresh so it is not taken from it meanwhile.
//!
//! Effects happen once: before each call the worker loads the post and skips
//! a network whose outcome is already published; every attempt is recorded
//! as a command (`SocialPostPublished`, or `SocialPostFailed` with its
//! attempt number; `SocialPhotoPublished` and `SocialPhotoFailed` for a later
//! photo), so the audit trail shows each one. A deleted post is not
//! published any more. Failures are retried
//! with exponential back-off and jitter, never sooner than a 429's
//! `Retry-After`; after `max_attempts` the entry goes to the dead-letter
//! stream `{prefix}:dlq:social`.
//!
//! Stopping ([`SocialWorker::run`]'s `shutdown`) lets the network call in
//! flight finish and its outcome be recorded, starts no other, and hands back
//! every entry read but not finished: each is added again to the retries
//! stream, which every worker of the group reads, and acknowledged, in one
//! script, so another worker takes it up at once rather than after
//! `claim_idle`. Its networks that have an outcome are not called again.
//!
//! Accounts that keep working: an access token expiring within
//! [`REFRESH_MARGIN`] is refreshed before use, and once more on a 401, under a
//! claim on the account so that two workers never spend one (rotating)
//! refresh token. A network that refuses the refresh, or an account with no
//! tokens, marks the account `SocialAccountNeedsRelink` and the post (or
//! photo) `SocialPostNeedsRelink`: it waits without spending attempts. When
//! the member links the account again (`SocialAccountLinked`), the worker
//! that takes that event publishes every post of theirs waiting there, once
//! the posts read model shows them all.
//!
//! With traces on, an entry's work is a child of the span that wrote its
//! event (the trace context the relay carries in the entry), and each network
//! call is a span of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use domain::values::{ExternalRef, PhotoKey, Provider, Reason};
use domain::{
    DomainError, Member, MemberCommand, MemberEvent, Post, PostCommand, PostEvent, SocialOutcome, SocialStatus,
};
use eventstore::{CommandContext, CommandError, EventStore, RecordedEvent};
use fred::prelude::*;
use fred::types::streams::XReadResponse;
use projections::lease::Lease;
use projections::{Names, checkpoint};
use tokio::sync::watch;
use tracing::Instrument;

use crate::WorkerError;
use crate::providers::{Outgoing, Refusal, SocialNetwork};
use crate::relay;
use crate::tokens::{TokenSet, TokenVault};

/// An access token expiring within this long is refreshed before it is used.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How a social worker runs.
#[derive(Debug, Clone)]
pub struct SocialConfig {
    /// The relayed events.
    pub events: String,
    /// Entries requeued from the dead letters.
    pub retries: String,
    /// Dead letters.
    pub dead: String,
    /// The consumer group.
    pub group: String,
    /// This instance's name in the group.
    pub consumer: String,
    /// Attempts per network before an entry is dead-lettered.
    pub max_attempts: u32,
    /// First back-off; it doubles each attempt, with jitter.
    pub backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Entries idle this long in a consumer's hands are taken over.
    pub claim_idle: Duration,
    /// Longest wait for new entries.
    pub block: Duration,
    /// Entries read at a time.
    pub batch: u64,
    /// The app's public URL: posts link to `{public_url}/posts/{id}`.
    pub public_url: Option<String>,
}

impl SocialConfig {
    /// Defaults for the streams under `prefix`, as consumer `consumer`.
    pub fn new(prefix: &str, consumer: &str) -> Self {
        SocialConfig {
            events: crate::redis::key(prefix, "events"),
            retries: crate::redis::key(prefix, "retry:social"),
            dead: crate::redis::key(prefix, "dlq:social"),
            group: "social".into(),
            consumer: consumer.into(),
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            claim_idle: Duration::from_secs(30),
            block: Duration::from_secs(1),
            batch: 16,
            public_url: None,
        }
    }
}

/// The Redis entry a post came in, held while it is worked on.
#[derive(Clone, Copy)]
struct Held<'a> {
    stream: &'a str,
    id: &'a str,
    fields: &'a HashMap<String, String>,
}

/// How far the work on an entry got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Every targeted network has its outcome (or the entry is dead-lettered).
    Done,
    /// The worker is stopping: no further network call was started.
    Stopped,
}

/// Hands an entry back to the group: if `ARGV[3]` (an id of stream
/// `KEYS[1]`) is still pending for consumer `ARGV[2]` of group `ARGV[1]`, its
/// fields `ARGV[4..]` are added to the retries stream `KEYS[2]` and it is
/// acknowledged; answers 1 if so, 0 if it is no longer this consumer's (taken
/// over meanwhile). One script: the entry is never both lost and kept.
const HAND_BACK: &str = r#"
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
local command = {'XADD', KEYS[2], '*'}
for i = 4, #ARGV do command[#command + 1] = ARGV[i] end
redis.call(unpack(command))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"#;

/// An entry: its stream, id and fields.
type Entry = (String, String, HashMap<String, String>);

/// Entries of one stream: id and fields.
type Entries = Vec<(String, HashMap<String, String>)>;

/// What is published: a post as its `PostCreated` event tells it, or one
/// photo added to it later.
struct Draft<'a> {
    post: &'a str,
    author: &'a str,
    body: String,
    photos: &'a [domain::Photo],
    /// The later photo this draft publishes (`photos` holds it alone), or
    /// `None` for the post itself.
    later: Option<&'a PhotoKey>,
    /// When the post (or the later photo) was written.
    written_at_us: i64,
    /// The photos' bytes, read once for every network and attempt.
    blobs: tokio::sync::OnceCell<Vec<media::Blob>>,
}

/// The events the social worker acts on.
/// How long the embedded worker lets events accumulate after a batch with
/// nothing to publish, as projectors do (`ProjectorConfig::coalesce_irrelevant`).
const COALESCE_IRRELEVANT: Duration = Duration::from_millis(20);

/// What one batch of the embedded worker did ([`SocialWorker::local_step`]).
struct LocalStep {
    /// Where the checkpoint stands now; `None` if another process moved it.
    at: Option<u64>,
    /// Whether the batch was as long as a batch may be (more may be waiting).
    full: bool,
    /// Events read.
    events: usize,
    /// Whether any of them was to publish.
    relevant: bool,
}

fn publishes(event_type: &str) -> bool {
    matches!(event_type, "PostCreated" | "PhotoAdded")
}

/// The events the social worker acts on: posts and photos to publish, and
/// accounts linked (again), whose waiting posts it publishes.
fn acts_on(event_type: &str) -> bool {
    publishes(event_type) || event_type == "SocialAccountLinked"
}

/// A post (or a photo added to it later) as its log tells it: what a
/// [`Draft`] borrows, and the networks it goes to.
struct Drafted {
    post: String,
    author: String,
    body: String,
    photos: Vec<domain::Photo>,
    later: Option<PhotoKey>,
    written_at_us: i64,
    providers: Vec<Provider>,
}

impl Drafted {
    fn draft(&self) -> Draft<'_> {
        Draft {
            post: &self.post,
            author: &self.author,
            body: self.body.clone(),
            photos: &self.photos,
            later: self.later.as_ref(),
            written_at_us: self.written_at_us,
            blobs: tokio::sync::OnceCell::new(),
        }
    }
}

/// What one attempt posts and with which credentials (none without a token
/// key), or why it cannot; beside the id of the link it is tried under.
type Prepared = (Option<String>, Result<(Outgoing, Option<Credentials>), Refusal>);

/// The account one attempt posts with: its id at the network, its server and
/// its tokens.
struct Credentials {
    account: String,
    instance: Option<String>,
    tokens: TokenSet,
}

/// A social worker: on Redis streams, or (embedded, without Redis) following
/// the log itself.
pub struct SocialWorker {
    store: EventStore,
    redis: Option<Client>,
    vault: Option<TokenVault>,
    media: media::MediaStore,
    networks: BTreeMap<Provider, Arc<dyn SocialNetwork>>,
    config: SocialConfig,
}

impl SocialWorker {
    /// A worker posting through `networks`, reading tokens from `vault` and
    /// photos from `media`; on Redis when given a client, else on the log
    /// itself ([`Self::run_local`]).
    pub fn new(
        store: EventStore,
        redis: Option<Client>,
        vault: Option<TokenVault>,
        media: media::MediaStore,
        networks: BTreeMap<Provider, Arc<dyn SocialNetwork>>,
        config: SocialConfig,
    ) -> Self {
        SocialWorker { store, redis, vault, media, networks, config }
    }

    fn redis(&self) -> Result<&Client, WorkerError> {
        self.redis.as_ref().ok_or(WorkerError::NoRedis)
    }

    /// Creates the consumer group on both streams (from their start) if missing.
    async fn ensure_groups(&self) -> Result<(), WorkerError> {
        for stream in [&self.config.events, &self.config.retries] {
            let created: Result<Value, Error> =
                self.redis()?.xgroup_create(stream, &self.config.group, "0", true).await;
            match created {
                Ok(_) => {}
                Err(error) if error.details().contains("BUSYGROUP") => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Works until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        self.ensure_groups().await?;
        // Blocking reads get a connection of their own: on a shared one they
        // would hold up every other command (acks, the relay's writes) meanwhile.
        let reader = self.redis()?.clone_new();
        reader.init().await?;
        let mut reclaim_at = tokio::time::Instant::now();
        while !*shutdown.borrow() {
            let entries = tokio::select! {
                entries = self.next_entries(&reader, &mut reclaim_at) => entries,
                _ = shutdown.changed() => continue,
            };
            let entries = match entries {
                Ok(entries) => entries,
                Err(error) => {
                    // Redis restarted empty: the groups are gone with it.
                    if error.to_string().contains("NOGROUP") {
                        self.ensure_groups().await.ok();
                    } else {
                        tracing::error!(%error, "social worker cannot read; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
            };
            // Most entries are other events: acknowledge those in one call per stream.
            let (posts, others): (Vec<Entry>, Vec<Entry>) =
                entries.into_iter().partition(|(_, _, fields)| fields.get("event_type").is_some_and(|t| acts_on(t)));
            for stream in [&self.config.events, &self.config.retries] {
                let ids: Vec<String> =
                    others.iter().filter(|(s, _, _)| s == stream).map(|(_, id, _)| id.clone()).collect();
                if !ids.is_empty()
                    && let Err(error) = self.redis()?.xack::<i64, _, _, _>(stream, &self.config.group, ids).await
                {
                    tracing::error!(%error, "social worker cannot acknowledge; the entries will come again");
                }
            }
            let mut posts = posts.into_iter();
            while let Some((stream, id, fields)) = posts.next() {
                if *shutdown.borrow() {
                    self.hand_back(std::iter::once((stream, id, fields)).chain(posts.by_ref())).await;
                    break;
                }
                match self.handle(&stream, &id, &fields, &shutdown).await {
                    Ok(Progress::Done) => {}
                    Ok(Progress::Stopped) => {
                        self.hand_back(std::iter::once((stream, id, fields)).chain(posts.by_ref())).await;
                        break;
                    }
                    // Left pending: this worker or another takes it up again.
                    Err(error) => tracing::error!(%error, %stream, %id, "social worker could not finish an entry"),
                }
            }
        }
        let _ = reader.quit().await;
        tracing::info!(consumer = %self.config.consumer, "social worker stopped");
        Ok(())
    }

    /// Hands `entries` (read, not finished) back to the group through the
    /// retries stream (see [`HAND_BACK`]), logging each; one that cannot be
    /// handed back stays pending, to be reclaimed after `claim_idle`.
    async fn hand_back(&self, entries: impl Iterator<Item = Entry>) {
        let Ok(redis) = self.redis() else { return };
        let config = &self.config;
        for (stream, id, fields) in entries {
            let mut args = vec![config.group.clone(), config.consumer.clone(), id.clone()];
            for (name, value) in fields {
                args.extend([name, value]);
            }
            let keys = vec![stream.clone(), config.retries.clone()];
            match redis.eval::<i64, _, _, _>(HAND_BACK, keys, args).await {
                Ok(1) => tracing::info!(%stream, entry = %id, retries = %config.retries, "stopping: entry handed back"),
                Ok(_) => tracing::info!(%stream, entry = %id, "stopping: entry already taken over by another worker"),
                Err(error) => tracing::warn!(
                    %error, %stream, entry = %id,
                    "stopping: cannot hand the entry back; it is reclaimed after the idle time"
                ),
            }
        }
    }

    /// Entries of crashed consumers first, then new ones. Nothing can be
    /// reclaimed before it has been idle `claim_idle`, so this looks for such
    /// entries at most every half of that (and again at once while it finds
    /// some), not before every read.
    async fn next_entries(
        &self,
        reader: &Client,
        reclaim_at: &mut tokio::time::Instant,
    ) -> Result<Vec<Entry>, WorkerError> {
        let config = &self.config;
        let mut entries = Vec::new();
        let now = tokio::time::Instant::now();
        let reclaim = now >= *reclaim_at;
        if reclaim {
            *reclaim_at = now + config.claim_idle / 2;
        }
        for stream in [&config.events, &config.retries].into_iter().filter(|_| reclaim) {
            let (_, claimed): (String, Entries) = self
                .redis()?
                .xautoclaim_values(
                    stream,
                    &config.group,
                    &config.consumer,
                    config.claim_idle.as_millis() as u64,
                    "0-0",
                    Some(config.batch),
                    false,
                )
                .await?;
            entries.extend(claimed.into_iter().map(|(id, fields)| (stream.clone(), id, fields)));
        }
        if !entries.is_empty() {
            // There may be more: look again at once.
            *reclaim_at = now;
            return Ok(entries);
        }
        let read: Value = reader
            .xreadgroup(
                &config.group,
                &config.consumer,
                Some(config.batch),
                Some(config.block.as_millis() as u64),
                false,
                vec![config.events.clone(), config.retries.clone()],
                vec![">", ">"],
            )
            .await?;
        // A read that times out answers nil, not an empty map.
        if read.is_null() {
            return Ok(entries);
        }
        let read: XReadResponse<String, String, String, String> = read.into_xread_response()?;
        for (stream, stream_entries) in read {
            entries.extend(stream_entries.into_iter().map(|(id, fields)| (stream.clone(), id, fields)));
        }
        Ok(entries)
    }

    /// Posts a `PostCreated` or `PhotoAdded` entry to each network it
    /// targets, then acknowledges it; stops between network calls once
    /// `shutdown` turns true, leaving it unacknowledged.
    async fn handle(
        &self,
        stream: &str,
        id: &str,
        fields: &HashMap<String, String>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        if fields.get("event_type").is_some_and(|t| acts_on(t)) {
            // A requeued entry gets a fresh budget of attempts.
            let spent: u32 = fields.get("attempts_before").and_then(|a| a.parse().ok()).unwrap_or(0);
            let event = recorded(id, fields)?;
            let span = entry_span(&event, relay::entry_trace(fields).as_ref());
            let held = Some(Held { stream, id, fields });
            if self.act_on(&event, held, spent, shutdown).instrument(span).await? == Progress::Stopped {
                return Ok(Progress::Stopped);
            }
        }
        let _: i64 = self.redis()?.xack(stream, &self.config.group, id).await?;
        Ok(Progress::Done)
    }

    /// Publishes a post or photo, or (for an account linked again) the posts
    /// that waited for it.
    async fn act_on(
        &self,
        event: &RecordedEvent,
        held: Option<Held<'_>>,
        spent: u32,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        if event.aggregate_type == "Member" {
            return self.resume(event, held, shutdown).await;
        }
        self.post_everywhere(event, held, spent, shutdown).await
    }

    /// For a `SocialAccountLinked` event: publishes the member's posts and
    /// photos waiting there for a relink. The posts read model is asked once
    /// it has applied every event before this one, so it shows each post
    /// marked before the link; one marked after finds the account linked
    /// itself and goes on (see [`Self::needs_relink`]).
    async fn resume(
        &self,
        event: &RecordedEvent,
        held: Option<Held<'_>>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        let MemberEvent::SocialAccountLinked { provider, .. } = event.decode::<Member>()? else {
            return Ok(Progress::Done);
        };
        if !self.networks.contains_key(&provider) {
            return Ok(Progress::Done);
        }
        let db = self.store.db();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let at = checkpoint::read(db, "posts", &Names::LIVE).await.map_err(eventstore::EventStoreError::from)?;
            if at >= event.position {
                break;
            }
            if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
                // Left pending: taken up again, by this worker or another.
                return Err(WorkerError::Behind { read_model: "posts", position: event.position });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let waiting =
            waiting_for_relink(db, &event.aggregate_id, provider).await.map_err(eventstore::EventStoreError::from)?;
        if !waiting.is_empty() {
            tracing::info!(member = %event.aggregate_id, %provider, posts = waiting.len(), "account linked again: publishing what waited");
        }
        for (post, photo) in waiting {
            let Some(drafted) = self.drafted(&post, photo.as_ref()).await? else { continue };
            if self.publish(held, &drafted.draft(), provider, 0, shutdown).await? == Progress::Stopped {
                return Ok(Progress::Stopped);
            }
        }
        Ok(Progress::Done)
    }

    /// Publishes a `PostCreated` event to each network it targets, or a
    /// `PhotoAdded` event's photo to each network its post targets.
    async fn post_everywhere(
        &self,
        event: &RecordedEvent,
        held: Option<Held<'_>>,
        spent: u32,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        let drafted = match event.decode::<Post>()? {
            PostEvent::PostCreated { post, author, body, providers, photos, .. } => Drafted {
                post: post.as_str().to_string(),
                author: author.as_str().to_string(),
                body: body.as_str().to_string(),
                photos,
                later: None,
                written_at_us: event.recorded_at_us,
                providers,
            },
            PostEvent::PhotoAdded { photo, cross_post: true } => {
                self.drafted(&event.aggregate_id, Some(&photo.key)).await?.ok_or_else(|| WorkerError::Malformed {
                    id: event.aggregate_id.clone(),
                    what: "a photo added to a post with no PostCreated".into(),
                })?
            }
            _ => return Ok(Progress::Done),
        };
        let draft = drafted.draft();
        for provider in &drafted.providers {
            if self.publish(held, &draft, *provider, spent, shutdown).await? == Progress::Stopped {
                return Ok(Progress::Stopped);
            }
        }
        Ok(Progress::Done)
    }

    /// Post `post`, or the photo `later` added to it, as its log tells it;
    /// `None` if the log holds no such post or photo. A later photo goes out
    /// with the post's text and its number in the post (networks refuse a
    /// duplicate text).
    async fn drafted(&self, post: &str, later: Option<&PhotoKey>) -> Result<Option<Drafted>, WorkerError> {
        let stream = self.store.read_stream("Post", post).await?;
        let mut found: Option<Drafted> = None;
        let mut number = 0;
        for event in &stream {
            match event.decode::<Post>()? {
                PostEvent::PostCreated { author, body, photos, providers, .. } => {
                    number += photos.len();
                    found = Some(Drafted {
                        post: post.to_string(),
                        author: author.as_str().to_string(),
                        body: body.as_str().to_string(),
                        photos,
                        later: None,
                        written_at_us: event.recorded_at_us,
                        providers,
                    });
                }
                PostEvent::PhotoAdded { photo, .. } => {
                    number += 1;
                    if let (Some(wanted), Some(drafted)) = (later, found.as_mut())
                        && *wanted == photo.key
                    {
                        drafted.body = format!("{} (photo {number})", drafted.body);
                        drafted.later = Some(photo.key.clone());
                        drafted.photos = vec![photo];
                        drafted.written_at_us = event.recorded_at_us;
                        return Ok(found);
                    }
                }
                _ => {}
            }
        }
        Ok(found.filter(|_| later.is_none()))
    }

    /// One batch of the embedded worker from `at` (read from
    /// `social_checkpoint` when `None`): publishes its posts and photos, then
    /// moves the checkpoint past it. Where it stands now, whether the batch was
    /// full, and whether it held anything to publish; `None` for where it
    /// stands if another process moved the checkpoint meanwhile.
    async fn local_step(&self, at: Option<u64>, shutdown: &watch::Receiver<bool>) -> Result<LocalStep, WorkerError> {
        let db = self.store.db();
        let at = match at {
            Some(at) => at,
            None => checkpoint::read(db, "social", &Names::LIVE).await.map_err(eventstore::EventStoreError::from)?,
        };
        let events = self.store.read_from(at, self.config.batch).await?;
        let mut relevant = false;
        // Stopping, the checkpoint moves only past the events finished.
        let mut last = events.last().map_or(at, |e| e.position);
        for event in
            events.iter().filter(|e| matches!(e.aggregate_type.as_str(), "Post" | "Member") && acts_on(&e.event_type))
        {
            relevant = true;
            let span = entry_span(event, eventstore::trace::stored_in(&event.metadata).as_ref());
            if self.act_on(event, None, 0, shutdown).instrument(span).await? == Progress::Stopped {
                tracing::info!(
                    position = event.position,
                    "stopping: the embedded social worker resumes here next time"
                );
                last = event.position - 1;
                break;
            }
        }
        let moved = last == at
            || checkpoint::advance(db, "social", &Names::LIVE, at, last, eventstore::now_us())
                .await
                .map_err(eventstore::EventStoreError::from)?;
        Ok(LocalStep {
            at: moved.then_some(last),
            full: events.len() as u64 >= self.config.batch,
            events: events.len(),
            relevant,
        })
    }

    /// Embedded mode, without Redis: follows the log from its own checkpoint
    /// (`social_checkpoint`) until `shutdown` turns true. Exhausted attempts
    /// are recorded and logged; there is no dead-letter stream. A failure
    /// (the database away, a network's client erring) is logged and the batch
    /// tried again shortly: the worker stops only when told to.
    pub async fn run_local(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        let db = self.store.db();
        // One embedded worker at a time per database, as one projector per projection.
        let lease = projections::lease::Lease::new("worker:social:embedded", Duration::from_secs(10));
        let mut renewed: Option<tokio::time::Instant> = None;
        // Where the checkpoint stands while this worker holds the lease and
        // nothing failed: read once, not before every batch.
        let mut known: Option<u64> = None;
        while !*shutdown.borrow() {
            if renewed.is_none_or(|at| at.elapsed() >= lease.renew_every()) {
                let held = lease.acquire(db).await.unwrap_or_else(|error| {
                    tracing::error!(%error, "embedded social worker cannot take its lease; retrying");
                    false
                });
                if !held {
                    (renewed, known) = (None, None);
                    tokio::select! {
                        _ = tokio::time::sleep(lease.retry_every()) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                renewed = Some(tokio::time::Instant::now());
            }
            let step = match self.local_step(known, &shutdown).await {
                Ok(step) => step,
                Err(error) => {
                    // The same batch again shortly, from the stored checkpoint.
                    tracing::error!(%error, "embedded social worker failed a batch; retrying");
                    known = None;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            known = step.at;
            if step.events > 0 && !step.relevant {
                // Nothing to publish (a wallet's events): let more accumulate
                // rather than move the checkpoint at every commit.
                tokio::select! {
                    _ = tokio::time::sleep(COALESCE_IRRELEVANT) => {}
                    _ = shutdown.changed() => {}
                }
            }
            if let (false, Some(at)) = (step.full, known) {
                tokio::select! {
                    _ = self.store.wait_for(at, Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if renewed.is_some() {
            let _ = lease.release(db).await;
        }
        Ok(())
    }

    /// Publishes `draft` on `provider` unless that is done already, retrying
    /// with back-off until it is published or dead-lettered.
    ///
    /// Each attempt runs under a claim in the database on (post, photo,
    /// network): loading the outcomes, calling the network and recording
    /// what it answered happen while no other worker can do the same. A
    /// consumer group hands an entry to one consumer at a time, but after a
    /// Redis failover the same entry can be in two workers' hands at once
    /// (the promoted replica had not heard of its delivery, or the relay
    /// appended it again); without the claim both could find the post
    /// pending and both publish it.
    async fn publish(
        &self,
        held: Option<Held<'_>>,
        draft: &Draft<'_>,
        provider: Provider,
        spent: u32,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        let Some(network) = self.networks.get(&provider) else {
            tracing::warn!(%provider, post = draft.post, "no network configured for this provider; skipped");
            return Ok(Progress::Done);
        };
        // Back-offs spent waiting for the post (a later photo only).
        let mut waited = 0;
        loop {
            let Some(claim) = self.claim(held, draft, provider, shutdown).await? else {
                return Ok(Progress::Stopped);
            };
            let attempt = self.attempt(held, draft, provider, network, spent, &mut waited, shutdown);
            let attempted = self.keeping(held, &claim, attempt).await;
            if let Err(error) = claim.release(self.store.db()).await {
                tracing::warn!(%error, post = draft.post, %provider, "cannot release a publishing claim; it will expire");
            }
            match attempted? {
                Next::Done => return Ok(Progress::Done),
                Next::Stopped => return Ok(Progress::Stopped),
                Next::Wait(wait) => {
                    if self.wait_holding(held, wait, shutdown).await? == Progress::Stopped {
                        return Ok(Progress::Stopped);
                    }
                }
            }
        }
    }

    /// Takes the claim on publishing `draft` on `provider`, waiting (and
    /// keeping the entry) while another worker holds it; `None` if the
    /// worker stops meanwhile. A claim whose holder died expires after
    /// `claim_idle`, as its entry does.
    async fn claim(
        &self,
        held: Option<Held<'_>>,
        draft: &Draft<'_>,
        provider: Provider,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<Lease>, WorkerError> {
        let lease = Lease::new(&claim_name(draft, provider), self.config.claim_idle);
        loop {
            if lease.acquire(self.store.db()).await.map_err(eventstore::EventStoreError::from)? {
                return Ok(Some(lease));
            }
            // Once the holder is done, the outcome it recorded decides.
            if self.wait_holding(held, lease.retry_every(), shutdown).await? == Progress::Stopped {
                return Ok(None);
            }
        }
    }

    /// Runs `work` while renewing `claim` and keeping the entry's idle time
    /// fresh, so that a slow network call loses neither to another worker.
    async fn keeping<T>(
        &self,
        held: Option<Held<'_>>,
        claim: &Lease,
        work: impl std::future::Future<Output = Result<T, WorkerError>>,
    ) -> Result<T, WorkerError> {
        tokio::pin!(work);
        let beat = claim.renew_every().max(Duration::from_millis(10));
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep(beat) => {
                    // A call in flight cannot be taken back: a failed renewal
                    // is worth a warning, not abandoning it.
                    match claim.acquire(self.store.db()).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(entry = ?held.map(|h| h.id), "a publishing claim expired under a slow attempt"),
                        Err(error) => tracing::warn!(%error, "cannot renew a publishing claim"),
                    }
                    if let (Some(redis), Some(Held { stream, id, .. })) = (&self.redis, held) {
                        let kept: Result<Value, Error> = redis
                            .xclaim(stream, &self.config.group, &self.config.consumer, 0, id, None, None, None, false, true)
                            .await;
                        if let Err(error) = kept {
                            tracing::warn!(%error, entry = id, "cannot keep an entry fresh");
                        }
                    }
                }
            }
        }
    }

    /// One attempt at publishing `draft` on `provider`, under its claim:
    /// done (published, given up on, or nothing to do), or a wait before the
    /// next attempt.
    // Each argument is a part of the one post being published.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        held: Option<Held<'_>>,
        draft: &Draft<'_>,
        provider: Provider,
        network: &Arc<dyn SocialNetwork>,
        spent: u32,
        waited: &mut u32,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Next, WorkerError> {
        let post = draft.post;
        // Effects once: what has been recorded, by any worker?
        let loaded = self.store.load::<Post>(post).await?;
        if loaded.state.is_deleted() {
            return Ok(Next::Done);
        }
        let status = match draft.later {
            None => loaded.state.social().get(&provider),
            Some(photo) => loaded.state.photo_social(photo).and_then(|statuses| statuses.get(&provider)),
        };
        let attempts = match status {
            None | Some(SocialStatus::Published { .. }) => return Ok(Next::Done),
            Some(SocialStatus::Pending | SocialStatus::NeedsRelink { .. }) => 0,
            Some(SocialStatus::Failed { attempts, .. }) => *attempts,
        };
        let waiting = matches!(status, Some(SocialStatus::NeedsRelink { .. }));
        if attempts >= spent + self.config.max_attempts {
            self.dead_letter(held, provider, attempts, "attempts exhausted").await?;
            return Ok(Next::Done);
        }
        let attempt = attempts + 1;
        // A later photo follows the post: on Twitter it is a reply to the post's tweet.
        let reply_to = match (draft.later, loaded.state.social().get(&provider)) {
            (None, _) => None,
            (Some(_), Some(SocialStatus::Published { external_id, .. })) => Some(external_id.as_str()),
            (Some(_), status) => {
                let given_up = matches!(status, Some(SocialStatus::Failed { attempts, .. })
                    if *attempts >= self.config.max_attempts);
                if given_up || *waited >= 2 * self.config.max_attempts {
                    // The post was given up on there (dead-lettered), or
                    // never came: so is the photo, until both are requeued.
                    let reason = "the post is not published there";
                    let failed = Reason::parse(reason).map_err(|e| malformed(post, e))?;
                    self.record(draft, provider, SocialOutcome::Failed { reason: failed, attempt }).await?;
                    self.dead_letter(held, provider, attempt, reason).await?;
                    return Ok(Next::Done);
                }
                // The post is still on its way there: wait for it without
                // spending one of the photo's attempts.
                *waited += 1;
                return Ok(Next::Wait(self.backoff(*waited, None)));
            }
        };
        if *shutdown.borrow() {
            tracing::info!(post, %provider, "stopping: no further network call for this entry");
            return Ok(Next::Stopped);
        }
        let call = tracing::info_span!(
            target: eventstore::trace::TARGET,
            "social_call",
            otel.name = %format_args!("publish to {provider}"),
            %provider,
            post,
            attempt,
            outcome = tracing::field::Empty,
        );
        let (link, prepared) = self.outgoing(draft, provider, network, reply_to).await?;
        let outcome = match prepared {
            Ok((mut outgoing, credentials)) => {
                let mut outcome = network.publish(&outgoing).instrument(call.clone()).await;
                if let (Err(Refusal::Unauthorized { .. }), Some(credentials)) = (&outcome, &credentials) {
                    // Once more, with refreshed tokens; refused again, the account needs relinking.
                    outcome = match self.refresh(draft.author, provider, network, credentials).await? {
                        Ok(tokens) => {
                            outgoing.token = Some(tokens.access);
                            match network.publish(&outgoing).instrument(call.clone()).await {
                                Err(Refusal::Unauthorized { reason }) => Err(Refusal::Relink { reason }),
                                other => other,
                            }
                        }
                        Err(refusal) => Err(refusal),
                    };
                }
                outcome
            }
            Err(refusal) => Err(refusal),
        };
        if *shutdown.borrow() {
            tracing::info!(post, %provider, "stopping: the network call in flight finished");
        }
        metrics_attempt(provider, &outcome);
        call.record("outcome", outcome_name(&outcome));
        drop(call);
        match outcome {
            Ok(published) => {
                let outcome = SocialOutcome::Published {
                    external_id: ExternalRef::parse(clip(&published.external_id)).map_err(|e| malformed(post, e))?,
                    url: ExternalRef::parse(clip(&published.url)).map_err(|e| malformed(post, e))?,
                };
                self.record(draft, provider, outcome).await?;
                Ok(Next::Done)
            }
            Err(Refusal::Relink { reason }) => self.needs_relink(draft, provider, link, &reason, waiting).await,
            Err(refusal) => {
                let reason = Reason::parse(clip(&refusal.to_string())).map_err(|e| malformed(post, e))?;
                self.record(draft, provider, SocialOutcome::Failed { reason, attempt }).await?;
                if attempt >= spent + self.config.max_attempts {
                    self.dead_letter(held, provider, attempt, &refusal.to_string()).await?;
                    return Ok(Next::Done);
                }
                let wait = self.backoff(attempt, refusal.retry_after());
                tracing::warn!(%provider, post, attempt, ?wait, reason = %refusal, "post failed; retrying");
                Ok(Next::Wait(wait))
            }
        }
    }

    /// What to post, and the account it is posted with: the member's linked
    /// account at `provider` (from the member's own stream, not a read
    /// model), its tokens (refreshed first if they expire within
    /// [`REFRESH_MARGIN`]), and the photos read from the photo store. A photo
    /// the store cannot give is a transient refusal (retried); a photo that
    /// is gone (the post was deleted meanwhile) is left out. An account not
    /// linked, waiting for a relink, or without tokens is a
    /// [`Refusal::Relink`]. Without a token key there are no credentials:
    /// the networks only log.
    async fn outgoing(
        &self,
        draft: &Draft<'_>,
        provider: Provider,
        network: &Arc<dyn SocialNetwork>,
        reply_to: Option<&str>,
    ) -> Result<Prepared, WorkerError> {
        let photos = match draft.blobs.get_or_try_init(|| self.read_photos(draft)).await {
            Ok(blobs) => blobs.clone(),
            Err(refusal) => return Ok((None, Err(refusal))),
        };
        if draft.later.is_some() && photos.is_empty() {
            return Ok((None, Err(Refusal::Refused { reason: "the photo is gone from the photo store".into() })));
        }
        let (link, credentials) = match &self.vault {
            None => (None, None),
            Some(vault) => match self.credentials(vault, draft.author, provider).await? {
                (link, Err(refusal)) => return Ok((link, Err(refusal))),
                (link, Ok(credentials))
                    if credentials.tokens.expires_within(eventstore::now_us(), REFRESH_MARGIN.as_micros() as i64) =>
                {
                    match self.refresh(draft.author, provider, network, &credentials).await? {
                        Ok(tokens) => (link, Some(Credentials { tokens, ..credentials })),
                        Err(refusal) => return Ok((link, Err(refusal))),
                    }
                }
                (link, Ok(credentials)) => (link, Some(credentials)),
            },
        };
        let outgoing = Outgoing {
            post: draft.post.to_string(),
            body: draft.body.clone(),
            link: self
                .config
                .public_url
                .as_ref()
                .map(|base| format!("{}/posts/{}", base.trim_end_matches('/'), draft.post)),
            account: credentials.as_ref().map(|c| c.account.clone()),
            token: credentials.as_ref().map(|c| c.tokens.access.clone()),
            instance: credentials.as_ref().and_then(|c| c.instance.clone()),
            key: format!("pointstream-{}", draft_key(draft, provider)),
            written_at_us: draft.written_at_us,
            photos,
            reply_to: reply_to.map(str::to_string),
        };
        Ok((link, Ok((outgoing, credentials))))
    }

    /// The author's linked account at `provider` and its tokens, beside the
    /// id of the link as the member's stream has it: a refusal for good
    /// marks that link (and only it) for relinking. A stale cache costs at
    /// most a refused mark (`StaleLink`) and a retry, never a wrong mark.
    async fn credentials(
        &self,
        vault: &TokenVault,
        author: &str,
        provider: Provider,
    ) -> Result<(Option<String>, Result<Credentials, Refusal>), WorkerError> {
        let tokens = vault.load(self.store.db(), author, &provider.to_string()).await?;
        // The member as this process's cache has it (kept current by the log
        // follower); read again from storage when the tokens belong to another
        // link than the cached one, which a relink a moment ago explains.
        let mut member = self.store.current::<Member>(author).await?.state;
        if let (Some(tokens), Some(link)) = (&tokens, member.link(provider))
            && tokens.link.is_some()
            && tokens.link.as_deref() != link.link.as_ref().map(|l| l.as_str())
        {
            member = self.store.load::<Member>(author).await?.state;
        }
        let Some(link) = member.link(provider) else {
            let reason = "the author has no linked account there".to_string();
            return Ok((None, Err(Refusal::Relink { reason })));
        };
        let id = link.link.as_ref().map(|l| l.as_str().to_string());
        let relink = |reason: &str| Ok((id.clone(), Err(Refusal::Relink { reason: reason.to_string() })));
        if link.needs_relink {
            return relink("the account waits to be linked again");
        }
        let Some(tokens) = tokens else {
            return relink("no token is kept for the author's account there");
        };
        if tokens.link.is_some() && tokens.link != id {
            // The tokens of the link before: the new link's are on their way.
            let reason = "the account was just linked again; its tokens are not stored yet".into();
            return Ok((id, Err(Refusal::Transient { reason, retry_after: None })));
        }
        let credentials = Credentials {
            account: link.external_id.as_str().to_string(),
            instance: link.instance.as_ref().map(|i| i.as_str().to_string()),
            tokens,
        };
        Ok((id, Ok(credentials)))
    }

    /// New tokens for `credentials`, under a claim on the account: the
    /// network may rotate its refresh tokens, so two workers must not both
    /// spend one. Whoever takes the claim second finds the tokens renewed
    /// already and uses them.
    async fn refresh(
        &self,
        author: &str,
        provider: Provider,
        network: &Arc<dyn SocialNetwork>,
        credentials: &Credentials,
    ) -> Result<Result<TokenSet, Refusal>, WorkerError> {
        let Some(vault) = &self.vault else {
            return Ok(Err(Refusal::Relink { reason: "this worker keeps no tokens".into() }));
        };
        let db = self.store.db();
        let lease = Lease::new(&account_claim_name(author, provider), Duration::from_secs(30));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !lease.acquire(db).await.map_err(eventstore::EventStoreError::from)? {
            if tokio::time::Instant::now() >= deadline {
                return Ok(Err(Refusal::Transient {
                    reason: "another worker is refreshing the account's tokens".into(),
                    retry_after: None,
                }));
            }
            tokio::time::sleep(lease.retry_every()).await;
        }
        let refreshed = async {
            let provider_name = provider.to_string();
            let current = vault.load(db, author, &provider_name).await?;
            if let Some(current) = current.filter(|current| current.access != credentials.tokens.access) {
                return Ok(Ok(current));
            }
            let renewed = network.refresh(credentials.instance.as_deref(), &credentials.tokens).await;
            let outcome = match &renewed {
                Ok(_) => "refreshed",
                Err(Refusal::Relink { .. }) => "refused",
                Err(_) => "failed",
            };
            metrics::counter!("pointstream_social_token_refreshes_total", "provider" => provider_name.clone(), "outcome" => outcome)
                .increment(1);
            if let Ok(tokens) = &renewed {
                vault.store(db, author, &provider_name, tokens, eventstore::now_us()).await?;
                tracing::info!(%provider, member = author, "access token refreshed");
            }
            Ok::<_, WorkerError>(renewed)
        }
        .await;
        if let Err(error) = lease.release(db).await {
            tracing::warn!(%error, "cannot release an account's refresh claim; it will expire");
        }
        refreshed
    }

    /// The account's tokens were refused for good: marks the account for
    /// relinking (unless it was linked again since the tokens tried) and the
    /// post (or photo) as waiting for it, spending no attempt. If the
    /// account turns out linked again by then, the post goes on at once.
    async fn needs_relink(
        &self,
        draft: &Draft<'_>,
        provider: Provider,
        link: Option<String>,
        reason: &str,
        waiting: bool,
    ) -> Result<Next, WorkerError> {
        let (post, author) = (draft.post, draft.author);
        let reason = Reason::parse(clip(reason)).map_err(|e| malformed(post, e))?;
        let link = link.map(ExternalRef::parse).transpose().map_err(|e| malformed(post, e))?;
        let context = CommandContext {
            actor: Some(format!("social-worker/{}", self.config.consumer)),
            role: Some("system".into()),
            ..CommandContext::default()
        };
        let mark = MemberCommand::MarkNeedsRelink { provider, link, reason: reason.clone() };
        match self.store.execute::<Member>(author, mark, context).await {
            Ok(_) => {}
            // Linked again since these tokens were read: try the new link's.
            Err(CommandError::Rejected(DomainError::StaleLink(_))) => return Ok(Next::Wait(self.backoff(0, None))),
            // Not linked at all: nothing to mark on the account.
            Err(CommandError::Rejected(_)) => {}
            Err(error) => return Err(WorkerError::Command(error)),
        }
        if !waiting {
            self.record(draft, provider, SocialOutcome::NeedsRelink { reason: reason.clone() }).await?;
            metrics::counter!("pointstream_social_needs_relink_total", "provider" => provider.to_string()).increment(1);
            tracing::warn!(%provider, post, member = author, %reason, "the account needs linking again; the post waits");
        }
        // Linked again between the mark and now: its relink found this post
        // still pending, or not yet marked; go on here.
        let member = self.store.load::<Member>(author).await?;
        if member.state.link(provider).is_some_and(|link| !link.needs_relink) {
            return Ok(Next::Wait(self.backoff(0, None)));
        }
        Ok(Next::Done)
    }

    /// The draft's photos from the photo store; one that is gone is left out.
    async fn read_photos(&self, draft: &Draft<'_>) -> Result<Vec<media::Blob>, Refusal> {
        let mut blobs = Vec::with_capacity(draft.photos.len());
        for photo in draft.photos {
            match self.media.get(photo.key.as_str()).await {
                Ok(blob) => blobs.push(blob),
                Err(media::MediaError::NotFound(key)) => {
                    tracing::warn!(post = draft.post, key, "photo gone; posted without it");
                }
                Err(err) => {
                    return Err(Refusal::Transient { reason: format!("reading photo: {err}"), retry_after: None });
                }
            }
        }
        Ok(blobs)
    }

    /// Records one attempt's outcome through the post's aggregate.
    async fn record(&self, draft: &Draft<'_>, provider: Provider, outcome: SocialOutcome) -> Result<(), WorkerError> {
        let post = draft.post;
        let context = CommandContext {
            actor: Some(format!("social-worker/{}", self.config.consumer)),
            role: Some("system".into()),
            ..CommandContext::default()
        };
        let command = match draft.later {
            None => PostCommand::RecordSocialResult { provider, outcome },
            Some(photo) => PostCommand::RecordPhotoResult { photo: photo.clone(), provider, outcome },
        };
        match self.store.execute::<Post>(post, command, context).await {
            Ok(_) => Ok(()),
            // Another worker recorded the publication first, or the post was deleted.
            Err(CommandError::Rejected(reason)) => {
                tracing::info!(%reason, post, %provider, "outcome not recorded");
                Ok(())
            }
            Err(error) => Err(WorkerError::Command(error)),
        }
    }

    /// Exponential back-off with full jitter, never under a `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.config.backoff.saturating_mul(1 << attempt.min(16)).min(self.config.max_backoff);
        let jittered = ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        retry_after.map_or(jittered, |after| jittered.max(after))
    }

    /// Sleeps `wait` while keeping the entry's idle time fresh, so no other
    /// consumer reclaims it meanwhile; stops short once `shutdown` turns true.
    async fn wait_holding(
        &self,
        held: Option<Held<'_>>,
        wait: Duration,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Progress, WorkerError> {
        let sleep = |duration: Duration| {
            let mut stopping = shutdown.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(duration) => Progress::Done,
                    _ = stopping.wait_for(|stop| *stop) => Progress::Stopped,
                }
            }
        };
        let (Some(redis), Some(Held { stream, id, .. })) = (&self.redis, held) else {
            return Ok(sleep(wait).await);
        };
        let beat = (self.config.claim_idle / 3).max(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Progress::Done);
            }
            if sleep((deadline - now).min(beat)).await == Progress::Stopped {
                tracing::info!(entry = id, "stopping: a back-off cut short");
                return Ok(Progress::Stopped);
            }
            let _: Value = redis
                .xclaim(stream, &self.config.group, &self.config.consumer, 0, id, None, None, None, false, true)
                .await?;
        }
    }

    /// Moves the entry to the dead letters (and acknowledges it with the rest).
    async fn dead_letter(
        &self,
        held: Option<Held<'_>>,
        provider: Provider,
        attempts: u32,
        reason: &str,
    ) -> Result<(), WorkerError> {
        let (Some(redis), Some(Held { stream, id, fields })) = (&self.redis, held) else {
            tracing::error!(%provider, attempts, reason, "post not published: attempts exhausted");
            return Ok(());
        };
        let mut letter: Vec<(String, String)> = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "attempts_before")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        letter.extend([
            ("from_stream".to_string(), stream.to_string()),
            ("from_entry".to_string(), id.to_string()),
            ("provider".to_string(), provider.to_string()),
            ("attempts".to_string(), attempts.to_string()),
            ("reason".to_string(), reason.chars().take(480).collect()),
        ]);
        let _: String = redis.xadd(&self.config.dead, false, None, "*", letter).await?;
        tracing::error!(%provider, entry = id, attempts, reason, "post dead-lettered");
        Ok(())
    }
}

/// What follows one attempt at publishing.
enum Next {
    /// Nothing more to do for this network.
    Done,
    /// The worker is stopping: no network call was started.
    Stopped,
    /// Try again after this long.
    Wait(Duration),
}

/// 40 hex digits of SHA-256 over `parts`, each length-prefixed: names that
/// fit a lease's 64 characters whatever the ids' lengths.
fn hashed(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())[..40].to_string()
}

/// The key of publishing `draft` on `provider`: the same for every attempt
/// and worker. It names the claim on the publication, and is the network's
/// idempotency key (Mastodon) or the seed of its record key (Bluesky).
fn draft_key(draft: &Draft<'_>, provider: Provider) -> String {
    hashed(&[draft.post, draft.later.map_or("", |photo| photo.as_str()), &provider.to_string()])
}

/// The name of the claim on publishing `draft` on `provider`.
fn claim_name(draft: &Draft<'_>, provider: Provider) -> String {
    format!("social:{}", draft_key(draft, provider))
}

/// The name of the claim on refreshing `member`'s tokens at `provider`.
fn account_claim_name(member: &str, provider: Provider) -> String {
    format!("tokens:{}", hashed(&[member, &provider.to_string()]))
}

/// The posts (and photos added later) of `member` waiting at `provider` for
/// the account to be linked again, from the posts read model.
async fn waiting_for_relink(
    db: &sea_orm::DatabaseConnection,
    member: &str,
    provider: Provider,
) -> Result<Vec<(String, Option<PhotoKey>)>, sea_orm::DbErr> {
    use sea_orm::ConnectionTrait;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
    let mut waiting = Vec::new();
    for table in ["post_social", "post_photo_social"] {
        let later = table == "post_photo_social";
        let (social, posts) = (Alias::new("s"), Alias::new("posts"));
        let mut query = Query::select();
        query
            .column((social.clone(), Alias::new("post_id")))
            .from_as(Alias::new(table), social.clone())
            .inner_join(
                Alias::new("posts"),
                Expr::col((posts.clone(), Alias::new("post_id"))).equals((social.clone(), Alias::new("post_id"))),
            )
            .and_where(Expr::col((posts.clone(), Alias::new("author_id"))).eq(member))
            .and_where(Expr::col((social.clone(), Alias::new("provider"))).eq(provider.to_string()))
            .and_where(Expr::col((social.clone(), Alias::new("status"))).eq("needs_relink"))
            .order_by((social.clone(), Alias::new("updated_at_us")), Order::Asc);
        if later {
            query.column((social.clone(), Alias::new("photo_key")));
        }
        for row in db.query_all(&query).await? {
            let post: String = row.try_get("", "post_id")?;
            let photo = if later {
                let key: String = row.try_get("", "photo_key")?;
                match PhotoKey::parse(key) {
                    Ok(key) => Some(key),
                    Err(_) => continue,
                }
            } else {
                None
            };
            waiting.push((post, photo));
        }
    }
    Ok(waiting)
}

/// Text cut to what a reason or an external reference may hold.
fn clip(text: &str) -> String {
    let clipped: String = text.chars().take(480).collect();
    if clipped.trim().is_empty() { "(empty)".to_string() } else { clipped }
}

fn malformed(post: &str, error: domain::values::ValueError) -> WorkerError {
    WorkerError::Malformed { id: post.to_string(), what: error.to_string() }
}

/// A network call's outcome, in metrics and spans.
fn outcome_name(outcome: &Result<crate::providers::Published, Refusal>) -> &'static str {
    match outcome {
        Ok(_) => "published",
        Err(Refusal::Transient { .. }) => "transient",
        Err(Refusal::Refused { .. }) => "refused",
        Err(Refusal::Unauthorized { .. }) => "unauthorized",
        Err(Refusal::Relink { .. }) => "needs_relink",
    }
}

/// The span of the work on one event to publish: a child of the span that
/// wrote it (`traced`), so that it joins the trace of the mutation that
/// created the post, whatever process and however much later.
fn entry_span(event: &RecordedEvent, traced: Option<&eventstore::trace::TraceContext>) -> tracing::Span {
    let span = tracing::info_span!(
        target: eventstore::trace::TARGET,
        parent: None,
        "social_entry",
        otel.name = %format_args!("cross-post {}", event.event_type),
        post = %event.aggregate_id,
        position = event.position,
        event_type = %event.event_type,
    );
    if let Some(traced) = traced {
        eventstore::trace::parent_of(&span, traced);
    }
    span
}

fn metrics_attempt(provider: Provider, outcome: &Result<crate::providers::Published, Refusal>) {
    let outcome = outcome_name(outcome);
    metrics::counter!("pointstream_social_attempts_total", "provider" => provider.to_string(), "outcome" => outcome)
        .increment(1);
}

/// The event a relayed entry holds.
pub fn recorded(id: &str, fields: &HashMap<String, String>) -> Result<RecordedEvent, WorkerError> {
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| WorkerError::Malformed { id: id.to_string(), what: format!("no {name}") })
    };
    let number = |name: &str| -> Result<i64, WorkerError> {
        field(name)?
            .parse()
            .map_err(|_| WorkerError::Malformed { id: id.to_string(), what: format!("{name} is not a number") })
    };
    Ok(RecordedEvent {
        position: number("position")? as u64,
        aggregate_type: field("aggregate_type")?,
        aggregate_id: field("aggregate_id")?,
        sequence: number("sequence")? as u64,
        event_type: field("event_type")?,
        event_version: number("event_version")? as u32,
        payload: field("payload")?,
        metadata: field("metadata")?,
        recorded_at_us: number("recorded_at_us")?,
        hash: String::new(),
    })
}
