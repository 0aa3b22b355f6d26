//! `bench streams`: the relay's throughput from the log into Redis next to a
//! raw pipelined `XADD` loop through fred of the same entries, and the social
//! workers' throughput against a fake network with 1, 2 and 4 workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::values::{ExternalRef, MemberId, PostBody, PostId, Provider, StoreId};
use domain::{Member, MemberCommand, Post, PostCommand, SocialStatus};
use eventstore::{CommandContext, EventStore, EventStoreConfig};
use fred::prelude::*;
use fred::types::streams::XCap;
use poem::{Route, handler, post};
use tokio::sync::watch;
use workers::providers::{Facebook, SocialNetwork, Twitter, http_client};
use workers::relay::{self, RelayConfig};
use workers::social::{SocialConfig, SocialWorker};
use workers::tokens::{TokenSet, TokenVault};

use crate::pointstream::{earn, register};
use crate::run::Scratch;

/// What to measure.
pub struct Options {
    pub events: u64,
    pub posts: usize,
    pub redis: String,
}

const KEY: &str = "abababababababababababababababababababababababababababababababab";

pub async fn run(server: &str, options: &Options) -> anyhow::Result<()> {
    Scratch::around(server, "streams", |url| async move { measure(&url, options).await }).await
}

#[handler]
fn facebook_feed() -> &'static str {
    r#"{"id":"fb-1"}"#
}

#[handler]
fn tweets() -> &'static str {
    r#"{"data":{"id":"tw-1","text":"x"}}"#
}

/// A network that answers 200 at once; returns its base URL.
async fn fake_network() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    drop(listener);
    let app = Route::new().at("/fb/:account/feed", post(facebook_feed)).at("/2/tweets", post(tweets));
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind(address.to_string())).await?;
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    Ok(format!("http://{address}"))
}

async fn measure(url: &str, options: &Options) -> anyhow::Result<()> {
    let store = EventStore::open(url, EventStoreConfig { max_connections: 36, ..EventStoreConfig::default() }).await?;
    let members: Vec<String> = (0..1_000).map(|n| format!("m{n}")).collect();
    register(&store, &members).await?;
    // The log: earns from 32 writers.
    let per_writer = options.events / 32;
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let (store, members) = (store.clone(), members.clone());
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let who = &members[(w * 31 + i as usize) % members.len()];
                    store
                        .execute::<domain::Wallet>(who, earn(who, &format!("s{w}-{i}"))?, CommandContext::default())
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let head = store.read_head().await?;
    let redis = workers::redis::connect(&options.redis).await.context("Redis")?;
    let prefix = format!("bench{}", std::process::id());

    // (a) raw: the same entries, pipelined XADD through fred, 1,000 per pipeline.
    let log = store.read_from(0, head).await?;
    let raw_stream = format!("{prefix}:raw");
    let started = Instant::now();
    for chunk in log.chunks(1_000) {
        let pipeline = redis.pipeline();
        for event in chunk {
            let fields = relay::fields(event);
            let cap = XCap::try_from(("MAXLEN", "~", 1_000_000i64))?;
            let () = pipeline.xadd(&raw_stream, false, cap, format!("{}-0", event.position), fields).await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
    }
    let raw = head as f64 / started.elapsed().as_secs_f64();

    // (b) the relay: read the log, pipeline, from position 0 to the head.
    let config = RelayConfig::new(&prefix);
    let started = Instant::now();
    loop {
        let (at, _) = relay::step(&store, &redis, &config).await?;
        if at >= head {
            break;
        }
    }
    let relayed = head as f64 / started.elapsed().as_secs_f64();
    // What the stream costs Redis per entry (every entry sampled), for capacity plans.
    let args: Vec<Value> = vec!["USAGE".into(), config.stream.as_str().into(), "SAMPLES".into(), 0i64.into()];
    let stream_bytes: i64 = redis.custom(fred::cmd!("MEMORY"), args).await?;

    println!("## streams benchmark (MySQL and Redis on this machine, one run)\n");
    println!("Log: {head} events (earns, 32 writers). Entries carry the whole stored event (payload and metadata).\n");
    println!("| | events/s |");
    println!("|---|---|");
    println!("| (a) raw pipelined `XADD` through fred (1,000 per pipeline), events already in memory | {raw:.0} |");
    println!("| (b) the relay: read the log from MySQL, pipelined `XADD` (1,000 per batch) | {relayed:.0} |");
    println!(
        "\nb/a = {:.2} (target ≥ 0.5); relay ≥ 50,000 events/s: {}\n",
        relayed / raw,
        if relayed >= 50_000.0 { "met" } else { "not met" }
    );
    println!(
        "Redis memory of the relayed stream: {:.1} MiB for {head} entries, {:.0} bytes per entry (`MEMORY USAGE`).\n",
        stream_bytes as f64 / (1 << 20) as f64,
        stream_bytes as f64 / head.max(1) as f64
    );

    // Workers: posts by members with linked accounts, against a network that answers at once.
    let base = fake_network().await?;
    let vault = TokenVault::from_hex(KEY)?;
    let authors: Vec<String> = members.iter().take(50).cloned().collect();
    for author in &authors {
        for (provider, account) in [(Provider::Facebook, "page"), (Provider::Twitter, "@x")] {
            let link = MemberCommand::LinkSocialAccount {
                provider,
                external_id: ExternalRef::parse(account)?,
                instance: None,
                link: None,
            };
            store.execute::<Member>(author, link, CommandContext::default()).await?;
            vault.store(store.db(), author, &provider.to_string(), &TokenSet::access("token"), 0).await?;
        }
    }
    projections::catch_up(&store, 5_000).await?;
    println!("| workers | posts | posts/s (2 networks each) |");
    println!("|---|---|---|");
    for workers in [1usize, 2, 4] {
        let first = store.read_head().await? + 1;
        let ids: Vec<String> = (0..options.posts).map(|n| format!("w{workers}-p{n}")).collect();
        for (n, id) in ids.iter().enumerate() {
            let create = PostCommand::Create {
                post: PostId::parse(id.as_str())?,
                author: MemberId::parse(authors[n % authors.len()].as_str())?,
                store: StoreId::parse("cafe")?,
                body: PostBody::parse(format!("post {id}"))?,
                photos: Vec::new(),
                providers: vec![Provider::Facebook, Provider::Twitter],
            };
            store.execute::<Post>(id, create, CommandContext::default()).await?;
        }
        loop {
            let (at, _) = relay::step(&store, &redis, &config).await?;
            if at >= store.read_head().await? {
                break;
            }
        }
        let group = format!("social-{workers}");
        // The group starts at this round's posts.
        let _: Value = redis.xgroup_create(&config.stream, &group, format!("{}-0", first - 1), false).await?;
        let (stop, shutdown) = watch::channel(false);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let http = http_client(Duration::from_secs(5));
            let mut networks: BTreeMap<Provider, Arc<dyn SocialNetwork>> = BTreeMap::new();
            networks.insert(Provider::Facebook, Arc::new(Facebook::new(http.clone(), format!("{base}/fb"))));
            networks.insert(Provider::Twitter, Arc::new(Twitter::new(http, base.clone(), None)));
            let social = SocialConfig { group: group.clone(), ..SocialConfig::new(&prefix, &format!("w{w}")) };
            let worker = SocialWorker::new(
                store.clone(),
                Some(redis.clone()),
                Some(vault.clone()),
                media::scratch::scratch_fs("http://127.0.0.1"),
                networks,
                social,
            );
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move { worker.run(shutdown).await }));
        }
        // Done when the last post of the round is published on both networks and every entry acknowledged.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut done = true;
            for id in ids.iter().rev().take(20) {
                let post = store.load::<Post>(id).await?;
                if !post.state.social().values().all(|s| matches!(s, SocialStatus::Published { .. })) {
                    done = false;
                    break;
                }
            }
            if done {
                let pending: (i64, Value, Value, Value) = redis.xpending(&config.stream, &group, ()).await?;
                if pending.0 == 0 {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the workers did not finish in 10 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = options.posts as f64 / started.elapsed().as_secs_f64();
        stop.send_replace(true);
        for task in tasks {
            task.await??;
        }
        println!("| {workers} | {} | {rate:.0} |", options.posts);
    }
    let _: i64 = redis.del(vec![raw_stream, config.stream.clone()]).await?;
    Ok(())
}
