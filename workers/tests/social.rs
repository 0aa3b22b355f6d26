//! The social worker against real Redis (a private `redis-server`), MariaDB
//! and a fake Facebook/Twitter server that records every call and answers as
//! each test scripts it.

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

mod services;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::values::{ExternalRef, MemberId, PostBody, PostId, Provider, StoreId};
use domain::{Member, MemberCommand, Post, PostCommand, SocialStatus};
use eventstore::{CommandContext, EventStore};
use fred::prelude::StreamsInterface;
use services::{Fake, RedisServer, fake_networks};
use support::{Backend, open, quiet, scratch, world};
use tokio::sync::watch;
use workers::WorkerError;
use workers::providers::{Bluesky, Facebook, Mastodon, SocialNetwork, Twitter, http_client};
use workers::relay::{self, RelayConfig};
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::{TokenSet, TokenVault};

extern crate pointstream_workers as workers;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const FB_TOKEN: &str = "EAAB-fb-secret-token";
const TW_TOKEN: &str = "tw-secret-bearer";
const PNG: &[u8] = include_bytes!("../../tests/fixtures/photo.png");

/// Ann with linked Facebook and Twitter accounts (tokens sealed in the vault)
/// and a post targeting both, relayed.
async fn world_with_a_post(store: &EventStore, vault: &TokenVault) {
    world_with_posts(store, vault, &[("p1", Vec::new(), vec![Provider::Facebook, Provider::Twitter])]).await;
}

/// Ann with linked accounts and `posts` (id, photos, providers).
async fn world_with_posts(store: &EventStore, vault: &TokenVault, posts: &[(&str, Vec<domain::Photo>, Vec<Provider>)]) {
    world(store, &["ann"]).await;
    for (provider, account, token) in
        [(Provider::Facebook, "ann-page", FB_TOKEN), (Provider::Twitter, "@ann", TW_TOKEN)]
    {
        let link = MemberCommand::LinkSocialAccount {
            provider,
            external_id: ExternalRef::parse(account).expect("a ref"),
            instance: None,
            link: None,
        };
        store.execute::<Member>("ann", link, CommandContext::default()).await.expect("links");
        vault
            .store(store.db(), "ann", &provider.to_string(), &TokenSet::access(token), 0)
            .await
            .expect("stores the token");
    }
    for (id, photos, providers) in posts {
        let create = PostCommand::Create {
            post: PostId::parse(*id).expect("id"),
            author: MemberId::parse("ann").expect("id"),
            store: StoreId::parse("cafe").expect("id"),
            body: PostBody::parse("Best flat white in town").expect("body"),
            photos: photos.clone(),
            providers: providers.clone(),
        };
        store.execute::<Post>(id, create, CommandContext::default()).await.expect("posts");
    }
    projections::catch_up(store, 1_000).await.expect("projects");
}

fn worker(
    store: &EventStore,
    redis: fred::prelude::Client,
    vault: &TokenVault,
    base: &str,
    config: SocialConfig,
) -> SocialWorker {
    worker_with_photos(store, redis, vault, base, config, media::scratch::scratch_fs("http://127.0.0.1"))
}

fn worker_with_photos(
    store: &EventStore,
    redis: fred::prelude::Client,
    vault: &TokenVault,
    base: &str,
    config: SocialConfig,
    photos: media::MediaStore,
) -> SocialWorker {
    let networks = clients(base, &[Provider::Facebook, Provider::Twitter]);
    SocialWorker::new(store.clone(), Some(redis), Some(vault.clone()), photos, networks, config)
}

/// Clients of `which` networks at the fake networks' `base`.
fn clients(base: &str, which: &[Provider]) -> BTreeMap<Provider, Arc<dyn SocialNetwork>> {
    let http = http_client(Duration::from_secs(2));
    let client = |provider: &Provider| -> Arc<dyn SocialNetwork> {
        match provider {
            Provider::Facebook => Arc::new(Facebook::new(http.clone(), format!("{base}/fb"))),
            Provider::Twitter => Arc::new(Twitter::new(http.clone(), base.to_string(), None)),
            Provider::Mastodon => Arc::new(Mastodon::new(http.clone())),
            Provider::Bluesky => Arc::new(Bluesky::new(http.clone())),
        }
    };
    which.iter().map(|provider| (*provider, client(provider))).collect()
}

/// `worker` following the log itself (no Redis) until the sender says stop.
fn start_embedded(worker: SocialWorker) -> (watch::Sender<bool>, tokio::task::JoinHandle<Result<(), WorkerError>>) {
    let (stop, shutdown) = watch::channel(false);
    (stop, tokio::spawn(async move { worker.run_local(shutdown).await }))
}

/// `bytes` stored as an upload would be, and added to post `post`.
async fn add_photo(store: &EventStore, photos: &media::MediaStore, post: &str, bytes: &[u8]) -> domain::Photo {
    let photo = stored_photo(photos, bytes).await;
    let command = PostCommand::AddPhoto { photo: photo.clone() };
    store.execute::<Post>(post, command, CommandContext::default()).await.expect("adds a photo");
    photo
}

/// A private Redis holding the log relayed into `{t}:events` (alive while the server is).
async fn relayed(store: &EventStore) -> (RedisServer, fred::prelude::Client) {
    let server = RedisServer::start();
    let redis = workers::redis::connect(&server.url()).await.expect("connects");
    relay::step(store, &redis, &RelayConfig::new("t")).await.expect("relays");
    (server, redis)
}

async fn statuses(store: &EventStore) -> BTreeMap<Provider, SocialStatus> {
    store.load::<Post>("p1").await.expect("loads").state.social().clone()
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_publish_a_post_once_per_network_and_record_the_external_ids() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    world_with_a_post(&store, &vault).await;
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let (_redis_server, redis) = relayed(&store).await;

    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    for name in ["w1", "w2"] {
        let config = SocialConfig { public_url: Some("https://app.example".into()), ..SocialConfig::new("t", name) };
        let worker = worker(&store, redis.clone(), &vault, &base, config);
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    eventually("both networks published", || async {
        statuses(&store).await.values().all(|s| matches!(s, SocialStatus::Published { .. }))
    })
    .await;
    let social = statuses(&store).await;
    assert!(
        matches!(&social[&Provider::Facebook], SocialStatus::Published { external_id, .. } if external_id.as_str().starts_with("fb-"))
    );
    assert!(
        matches!(&social[&Provider::Twitter], SocialStatus::Published { external_id, .. } if external_id.as_str().starts_with("tw-"))
    );
    let (fb, tw) = (fake.calls("facebook"), fake.calls("twitter"));
    assert_eq!((fb.len(), tw.len()), (1, 1), "one call per network: {fb:?} {tw:?}");
    assert!(fb[0].body.contains("access_token=EAAB-fb-secret-token") && fb[0].body.contains("Best+flat+white"));
    assert_eq!(tw[0].auth, format!("Bearer {TW_TOKEN}"));
    assert!(fb[0].body.contains("link=https%3A%2F%2Fapp.example%2Fposts%2Fp1"), "{}", fb[0].body);
    assert!(tw[0].body.contains("https://app.example/posts/p1"), "{}", tw[0].body);

    // The tokens are nowhere in the log.
    let log = store.read_from(0, 1_000).await.expect("reads");
    for event in &log {
        for secret in [FB_TOKEN, TW_TOKEN] {
            assert!(!event.payload.contains(secret) && !event.metadata.contains(secret), "{event:?}");
        }
    }
    stop.send_replace(true);
    for task in tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
    // Nothing left pending in the group.
    let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
        fred::prelude::StreamsInterface::xpending(&redis, "{t}:events", "social", ()).await.expect("pending");
    assert_eq!(pending.0, 0);
}

/// What a Redis failover can do (a promoted replica that had not seen a
/// delivery hands the entry out again, the relay appends lost entries
/// again): two workers holding the same entries at once. Here each is in a
/// consumer group of its own, so both are handed every entry at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_handed_the_same_entries_at_once_publish_each_post_once_per_network() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let ids: Vec<String> = (1..=12).map(|n| format!("p{n}")).collect();
    let posts: Vec<(&str, Vec<domain::Photo>, Vec<Provider>)> =
        ids.iter().map(|id| (id.as_str(), Vec::new(), vec![Provider::Facebook, Provider::Twitter])).collect();
    world_with_posts(&store, &vault, &posts).await;
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let (_redis_server, redis) = relayed(&store).await;

    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let config = SocialConfig { group: format!("social-{name}"), ..SocialConfig::new("t", name) };
        let worker = worker(&store, redis.clone(), &vault, &base, config);
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    eventually("every post published on both networks", || async {
        let mut all = true;
        for id in &ids {
            all &= published(&store, id).await;
        }
        all
    })
    .await;
    // Both workers finish with every entry (the second finds each outcome recorded).
    for group in ["social-a", "social-b"] {
        eventually("both groups done", || async {
            let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
                fred::prelude::StreamsInterface::xpending(&redis, "{t}:events", group, ()).await.expect("pending");
            let info: Vec<std::collections::HashMap<String, fred::prelude::Value>> =
                fred::prelude::StreamsInterface::xinfo_groups(&redis, "{t}:events").await.expect("groups");
            let lag = info
                .iter()
                .find(|g| g.get("name").and_then(|n| n.as_string()).as_deref() == Some(group))
                .and_then(|g| g.get("lag").and_then(|l| l.as_u64()));
            pending.0 == 0 && lag == Some(0)
        })
        .await;
    }
    for network in ["facebook", "twitter"] {
        let calls = fake.calls(network);
        assert_eq!(calls.len(), ids.len(), "{network}: one call per post, not one per worker");
    }
    stop.send_replace(true);
    for task in tasks {
        task.await.expect("stops").expect("ran cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_retry_after_and_a_refusal_ends_in_the_dead_letters_until_requeued() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    world_with_a_post(&store, &vault).await;
    let fake = Arc::new(Fake::default());
    fake.script("facebook", &[(429, Some(1)), (200, None)]);
    fake.script("twitter", &[(400, None), (400, None), (400, None)]);
    let base = fake_networks(fake.clone()).await;
    let (_redis_server, redis) = relayed(&store).await;
    let config = SocialConfig { max_attempts: 3, backoff: Duration::from_millis(20), ..SocialConfig::new("t", "w1") };

    let (stop, shutdown) = watch::channel(false);
    let task = {
        let worker = worker(&store, redis.clone(), &vault, &base, config.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown).await })
    };
    eventually("twitter dead-lettered", || async {
        workers::dlq::list(&redis, &config).await.expect("lists").len() == 1
    })
    .await;
    let fb = fake.calls("facebook");
    assert_eq!(fb.len(), 2, "{fb:?}");
    assert!(
        fb[1].at - fb[0].at >= Duration::from_secs(1),
        "the retry waited for Retry-After: {:?}",
        fb[1].at - fb[0].at
    );
    assert_eq!(fake.calls("twitter").len(), 3, "three attempts, then the dead letters");
    let social = statuses(&store).await;
    assert!(matches!(social[&Provider::Facebook], SocialStatus::Published { .. }));
    assert!(matches!(social[&Provider::Twitter], SocialStatus::Failed { attempts: 3, .. }), "{social:?}");
    let letters = workers::dlq::list(&redis, &config).await.expect("lists");
    assert_eq!(letters[0].1.get("provider").map(String::as_str), Some("twitter"));
    assert_eq!(letters[0].1.get("attempts").map(String::as_str), Some("3"));

    // Requeued, the entry gets a fresh budget; twitter now answers. Two
    // requeues at once (both listed the letter) move it once.
    let (first, second) =
        tokio::join!(workers::dlq::retry(&redis, &config, &[]), workers::dlq::retry(&redis, &config, &[]));
    assert_eq!(first.expect("requeues") + second.expect("requeues"), 1, "the letter is requeued once");
    let retries: Vec<(String, Vec<(String, String)>)> =
        redis.xrange(&config.retries, "-", "+", None).await.expect("the retries read");
    assert_eq!(retries.len(), 1, "one retry entry");
    eventually("twitter published after the requeue", || async {
        matches!(statuses(&store).await[&Provider::Twitter], SocialStatus::Published { .. })
    })
    .await;
    assert!(workers::dlq::list(&redis, &config).await.expect("lists").is_empty());
    assert_eq!(fake.calls("facebook").len(), 2, "facebook was not called again");
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");
}

/// A worker without Redis whose networks only log, as `pointstream serve` runs it.
fn embedded_logging_worker(store: &EventStore) -> SocialWorker {
    use workers::providers::LoggingNetwork;
    let mut networks: BTreeMap<Provider, Arc<dyn SocialNetwork>> = BTreeMap::new();
    networks.insert(Provider::Facebook, Arc::new(LoggingNetwork { name: "facebook" }));
    networks.insert(Provider::Twitter, Arc::new(LoggingNetwork { name: "twitter" }));
    SocialWorker::new(
        store.clone(),
        None,
        None,
        media::scratch::scratch_fs("http://127.0.0.1"),
        networks,
        SocialConfig::new("t", "embedded"),
    )
}

/// Whether post `id` is published on every network it targets.
async fn published(store: &EventStore, id: &str) -> bool {
    let post = store.load::<Post>(id).await.expect("loads");
    let social = post.state.social();
    !social.is_empty() && social.values().all(|s| matches!(s, SocialStatus::Published { .. }))
}

/// An embedded worker (logging networks) started on a scratch SQLite store
/// holding Ann's post `p1`, once `p1` is published everywhere.
struct Embedded {
    _db: eventstore::scratch::ScratchDatabase,
    store: EventStore,
    /// Statements run on the worker's checkpoint table (`social_checkpoint`).
    checkpoint_statements: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

async fn embedded_with_p1_published() -> Option<Embedded> {
    let db = scratch(Backend::Sqlite).await?;
    let (store, checkpoint_statements) = support::open_counting_with(&db, quiet(), |sql| {
        sql.contains("social_checkpoint") && !sql.contains("social_checkpoint_away")
    })
    .await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    world_with_a_post(&store, &vault).await;
    let (stop, task) = start_embedded(embedded_logging_worker(&store));
    eventually("both networks published p1", || published(&store, "p1")).await;
    Some(Embedded { _db: db, store, checkpoint_statements, stop, task })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_same_worker_follows_the_log_and_the_logging_networks_publish() {
    let Some(Embedded { _db, store, stop, task, .. }) = embedded_with_p1_published().await else { return };
    assert!(
        matches!(&statuses(&store).await[&Provider::Twitter], SocialStatus::Published { external_id, .. } if external_id.as_str() == "logged-p1")
    );
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_worker_outlives_a_database_failure_and_publishes_what_came_meanwhile() {
    use sea_orm::ConnectionTrait;
    let Some(Embedded { _db, store, checkpoint_statements, stop, task }) = embedded_with_p1_published().await else {
        return;
    };

    // The worker's checkpoint table goes away: moving it past the next post fails.
    store
        .db()
        .execute_unprepared("ALTER TABLE social_checkpoint RENAME TO social_checkpoint_away")
        .await
        .expect("renames");
    let post = |id: &str| PostCommand::Create {
        post: PostId::parse(id).expect("id"),
        author: MemberId::parse("ann").expect("id"),
        store: StoreId::parse("cafe").expect("id"),
        body: PostBody::parse("Fresh croissants").expect("body"),
        photos: Vec::new(),
        providers: vec![Provider::Facebook, Provider::Twitter],
    };
    store.execute::<Post>("p2", post("p2"), CommandContext::default()).await.expect("posts");
    let away = checkpoint_statements.load(std::sync::atomic::Ordering::SeqCst);
    eventually("p2 published before its checkpoint could move", || published(&store, "p2")).await;
    // Every statement on the table fails while it is away: the failed move
    // and two retries after it (each one reads the checkpoint first), so the
    // worker went on after a failure, twice.
    eventually("two retries of the failed batch", || {
        let statements = checkpoint_statements.load(std::sync::atomic::Ordering::SeqCst);
        async move { statements >= away + 3 }
    })
    .await;
    assert!(!task.is_finished(), "the worker stopped on a database failure: {:?}", task.await);

    store
        .db()
        .execute_unprepared("ALTER TABLE social_checkpoint_away RENAME TO social_checkpoint")
        .await
        .expect("renames");
    store.execute::<Post>("p3", post("p3"), CommandContext::default()).await.expect("posts");
    eventually("p3 published once the table is back", || published(&store, "p3")).await;
    let head = store.read_head().await.expect("a head");
    eventually("the checkpoint past p3", || async {
        projections::checkpoint::read(store.db(), "social", &projections::Names::LIVE).await.expect("reads") >= head
    })
    .await;
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");
}

/// Stores `bytes` as an upload would be stored.
async fn stored_photo(media: &media::MediaStore, bytes: &[u8]) -> domain::Photo {
    use std::io::Write;
    let path = media::scratch::scratch_dir();
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("a file");
    std::fs::remove_file(&path).expect("unlinked");
    file.write_all(bytes).expect("written");
    let checked = media::photo::check(file, 1 << 20).await.expect("a photo");
    media.put(&media::photo::new_key(checked.kind), checked).await.expect("stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photo_posts_send_the_stored_photo_bytes_to_both_networks() {
    const JPEG: &[u8] = include_bytes!("../../tests/fixtures/photo.jpg");
    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let media = media::scratch::scratch_fs("http://127.0.0.1");
    let (jpeg, png) = (stored_photo(&media, JPEG).await, stored_photo(&media, PNG).await);
    let both = vec![Provider::Facebook, Provider::Twitter];
    let posts = [("p1", vec![jpeg.clone(), png.clone()], both), ("p2", vec![jpeg.clone()], vec![Provider::Facebook])];
    world_with_posts(&store, &vault, &posts).await;
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let networks = clients(&base, &[Provider::Facebook, Provider::Twitter]);
    let config = SocialConfig::new("t", "embedded");
    let (stop, task) =
        start_embedded(SocialWorker::new(store.clone(), None, Some(vault.clone()), media, networks, config));
    eventually("every post published", || async {
        let mut all = Vec::new();
        for id in ["p1", "p2"] {
            all.extend(store.load::<Post>(id).await.expect("loads").state.social().values().cloned());
        }
        all.len() == 3 && all.iter().all(|s| matches!(s, SocialStatus::Published { .. }))
    })
    .await;
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");

    let fb = fake.calls("facebook");
    let paths: Vec<&str> = fb.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/fb/ann-page/photos", "/fb/ann-page/photos", "/fb/ann-page/feed", "/fb/ann-page/photos"],
        "p1: two unpublished photos then a feed post attaching them; p2: one photo post"
    );
    assert!(fb[0].carries(JPEG) && fb[0].body.contains("published"), "the JPEG, unpublished");
    assert!(fb[1].carries(PNG), "the PNG");
    assert!(
        fb[2].body.contains("attached_media%5B0%5D") && fb[2].body.contains("attached_media%5B1%5D"),
        "{}",
        fb[2].body
    );
    assert!(fb[3].carries(JPEG) && fb[3].body.contains("Best flat white"), "p2's photo with its caption");
    assert!(fb.iter().all(|c| c.body.contains(FB_TOKEN)), "every call carries the page token");

    let tw = fake.calls("twitter");
    let paths: Vec<&str> = tw.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/2/media/upload", "/2/media/upload", "/2/tweets"]);
    assert!(tw[0].carries(JPEG) && tw[1].carries(PNG), "the photos' bytes, from the store");
    let tweet: serde_json::Value = serde_json::from_slice(&tw[2].bytes).expect("JSON");
    let ids: Vec<&str> =
        tweet["media"]["media_ids"].as_array().expect("media ids").iter().filter_map(|v| v.as_str()).collect();
    assert!(
        ids.len() == 2 && ids[0] != ids[1] && ids.iter().all(|id| id.starts_with("tw-")),
        "the uploads' ids: {tweet}"
    );
    assert!(tw.iter().all(|c| c.auth == format!("Bearer {TW_TOKEN}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_added_later_follows_its_post_as_a_reply_tweet_and_a_facebook_photo() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let photos = media::scratch::scratch_fs("http://127.0.0.1");
    world_with_a_post(&store, &vault).await;
    let later = add_photo(&store, &photos, "p1", PNG).await;
    let fake = Arc::new(Fake::default());
    // The post's tweet is refused once with a 429 (Retry-After: 1 s), so the
    // photo's worker finds the post unpublished there and waits for it.
    fake.script("twitter", &[(429, Some(1))]);
    let base = fake_networks(fake.clone()).await;
    let (_redis_server, redis) = relayed(&store).await;

    // One entry at a time: the post and its photo go to different workers.
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    for name in ["w1", "w2"] {
        let config = SocialConfig { batch: 1, backoff: Duration::from_millis(50), ..SocialConfig::new("t", name) };
        let worker = worker_with_photos(&store, redis.clone(), &vault, &base, config, photos.clone());
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
    }
    let photo_statuses = || async {
        store.load::<Post>("p1").await.expect("loads").state.photo_social(&later.key).cloned().unwrap_or_default()
    };
    eventually("the post and its later photo published on both networks", || async {
        let photo = photo_statuses().await;
        photo.len() == 2
            && photo
                .values()
                .chain(statuses(&store).await.values())
                .all(|s| matches!(s, SocialStatus::Published { .. }))
    })
    .await;
    stop.send_replace(true);
    for task in tasks {
        task.await.expect("stops").expect("ran cleanly");
    }

    let tweet_of = |status: &SocialStatus| match status {
        SocialStatus::Published { external_id, .. } => external_id.as_str().to_string(),
        other => panic!("not published: {other:?}"),
    };
    let post_tweet = tweet_of(&statuses(&store).await[&Provider::Twitter]);
    let photo_tweet = tweet_of(&photo_statuses().await[&Provider::Twitter]);
    assert_ne!(post_tweet, photo_tweet);
    let tw = fake.calls("twitter");
    let uploads: Vec<&services::Call> = tw.iter().filter(|c| c.path == "/2/media/upload").collect();
    assert!(uploads.len() == 1 && uploads[0].carries(PNG), "the photo's bytes, from the store, once: {tw:?}");
    let tweets: Vec<serde_json::Value> = tw
        .iter()
        .filter(|c| c.path == "/2/tweets" && c.status == 200)
        .map(|c| serde_json::from_slice(&c.bytes).expect("JSON"))
        .collect();
    assert_eq!(tweets.len(), 2, "the post's tweet and the photo's reply: {tweets:?}");
    assert!(tweets[0].get("reply").is_none() && tweets[0]["text"] == "Best flat white in town", "{}", tweets[0]);
    assert_eq!(tweets[1]["reply"]["in_reply_to_tweet_id"], post_tweet.as_str(), "a reply to the post's tweet");
    assert_eq!(tweets[1]["text"], "Best flat white in town (photo 1)");
    assert_eq!(tweets[1]["media"]["media_ids"].as_array().map(Vec::len), Some(1));

    let fb = fake.calls("facebook");
    let posted: Vec<&services::Call> = fb.iter().filter(|c| c.status == 200).collect();
    let paths: Vec<&str> = posted.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/fb/ann-page/feed", "/fb/ann-page/photos"], "the post, then the photo on its own");
    assert!(posted[1].carries(PNG) && posted[1].body.contains("Best flat white in town (photo 1)"));

    // The log shows the photo's attempts after the post's own publication.
    let log = store.read_stream("Post", "p1").await.expect("reads");
    let kinds: Vec<&str> = log.iter().map(|e| e.event_type.as_str()).collect();
    let at = |kind: &str| kinds.iter().rposition(|k| *k == kind).expect(kind);
    assert!(at("SocialPhotoPublished") > at("SocialPostPublished"), "{kinds:?}");
    assert!(kinds.contains(&"SocialPostFailed"), "the post's failed tweet is recorded: {kinds:?}");
    assert!(
        !kinds.contains(&"SocialPhotoFailed"),
        "waiting for the post spends none of the photo's attempts: {kinds:?}"
    );
    let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
        fred::prelude::StreamsInterface::xpending(&redis, "{t}:events", "social", ()).await.expect("pending");
    assert_eq!(pending.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_added_to_a_deleted_post_is_not_published() {
    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let photos = media::scratch::scratch_fs("http://127.0.0.1");
    world_with_posts(
        &store,
        &vault,
        &[("p1", Vec::new(), vec![Provider::Twitter]), ("p2", Vec::new(), vec![Provider::Twitter])],
    )
    .await;
    add_photo(&store, &photos, "p1", PNG).await;
    store.execute::<Post>("p1", PostCommand::Delete, CommandContext::default()).await.expect("deletes");
    let fake = Arc::new(Fake::default());
    let base = fake_networks(fake.clone()).await;
    let networks = clients(&base, &[Provider::Twitter]);
    let config = SocialConfig::new("t", "embedded");
    let (stop, task) =
        start_embedded(SocialWorker::new(store.clone(), None, Some(vault.clone()), photos, networks, config));
    // p2 comes after p1 in the log: once it is published, p1 was passed over.
    eventually("p2 published", || async {
        let p2 = store.load::<Post>("p2").await.expect("loads");
        matches!(p2.state.social().get(&Provider::Twitter), Some(SocialStatus::Published { .. }))
    })
    .await;
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");
    let tweets = fake.calls("twitter");
    assert_eq!(tweets.len(), 1, "only p2's tweet: {tweets:?}");
    let p1 = store.load::<Post>("p1").await.expect("loads");
    assert_eq!(p1.state.social().get(&Provider::Twitter), Some(&SocialStatus::Pending));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_photo_of_a_post_given_up_on_is_given_up_on_too() {
    let Some(db) = scratch(Backend::Sqlite).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    let photos = media::scratch::scratch_fs("http://127.0.0.1");
    world_with_posts(&store, &vault, &[("p1", Vec::new(), vec![Provider::Twitter])]).await;
    let later = add_photo(&store, &photos, "p1", PNG).await;
    let fake = Arc::new(Fake::default());
    fake.script("twitter", &[(400, None)]);
    let base = fake_networks(fake.clone()).await;
    let networks = clients(&base, &[Provider::Twitter]);
    let config = SocialConfig { max_attempts: 1, ..SocialConfig::new("t", "embedded") };
    let (stop, task) =
        start_embedded(SocialWorker::new(store.clone(), None, Some(vault.clone()), photos, networks, config));
    let photo_status = || async {
        let post = store.load::<Post>("p1").await.expect("loads");
        post.state.photo_social(&later.key).and_then(|s| s.get(&Provider::Twitter).cloned())
    };
    eventually("the photo given up on", || async { matches!(photo_status().await, Some(SocialStatus::Failed { .. })) })
        .await;
    stop.send_replace(true);
    task.await.expect("stops").expect("ran cleanly");
    assert!(
        matches!(&photo_status().await, Some(SocialStatus::Failed { reason, attempts: 1 }) if reason.as_str() == "the post is not published there")
    );
    let calls = fake.calls("twitter");
    assert_eq!(calls.len(), 1, "only the post's refused tweet; nothing for the photo: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_finishes_its_call_in_flight_and_hands_the_rest_back_to_another_at_once() {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    let vault = TokenVault::from_hex(KEY).expect("a key");
    world_with_a_post(&store, &vault).await;
    let fake = Arc::new(Fake::default());
    fake.delay("facebook", Duration::from_millis(1_500));
    let base = fake_networks(fake.clone()).await;
    let (_redis_server, redis) = relayed(&store).await;
    // Reclaimed only after a minute: within this test, only a hand-back gives the entry to another worker.
    let config = |name: &str| SocialConfig { claim_idle: Duration::from_secs(60), ..SocialConfig::new("t", name) };

    let (stop_a, shutdown_a) = watch::channel(false);
    let a = worker(&store, redis.clone(), &vault, &base, config("a"));
    let a = tokio::spawn(async move { a.run(shutdown_a).await });
    eventually("worker a calls Facebook", || async { fake.arrived("facebook") == 1 }).await;
    let (stop_b, shutdown_b) = watch::channel(false);
    let b = worker(&store, redis.clone(), &vault, &base, config("b"));
    let b = tokio::spawn(async move { b.run(shutdown_b).await });

    let stopping = Instant::now();
    stop_a.send_replace(true);
    a.await.expect("stops").expect("stops cleanly");
    assert!(stopping.elapsed() >= Duration::from_millis(500), "a waited for its call in flight");
    assert!(
        matches!(statuses(&store).await[&Provider::Facebook], SocialStatus::Published { .. }),
        "the call in flight finished and its outcome is recorded"
    );
    eventually("worker b publishes to Twitter", || async {
        matches!(statuses(&store).await.get(&Provider::Twitter), Some(SocialStatus::Published { .. }))
    })
    .await;
    assert!(stopping.elapsed() < Duration::from_secs(15), "taken over at once, not after the idle time");
    assert_eq!((fake.calls("facebook").len(), fake.calls("twitter").len()), (1, 1), "each network called once");
    // Who published where: a finished Facebook, b did Twitter.
    let log = store.read_from(0, 1_000).await.expect("reads");
    let published_by = |network: &str| {
        log.iter()
            .find(|e| e.event_type == "SocialPostPublished" && e.payload.to_lowercase().contains(network))
            .map(|e| e.metadata().expect("metadata").actor.unwrap_or_default())
    };
    assert_eq!(published_by("facebook").as_deref(), Some("social-worker/a"));
    assert_eq!(published_by("twitter").as_deref(), Some("social-worker/b"));

    stop_b.send_replace(true);
    b.await.expect("stops").expect("stops cleanly");
    for stream in ["{t}:events", "{t}:retry:social"] {
        let pending: (i64, fred::prelude::Value, fred::prelude::Value, fred::prelude::Value) =
            fred::prelude::StreamsInterface::xpending(&redis, stream, "social", ()).await.expect("pending");
        assert_eq!(pending.0, 0, "nothing left pending in {stream}");
    }
}
