//! The `reads` mode's dataset, written through pointstream's own commands
//! with every projection inline, so the read models are the rows the real
//! system produces: members, stores, a ledger (one row per earn) with a few
//! members' long histories, and posts with photos and social status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use domain::values::{
    Amount, DisplayName, ExternalRef, Handle, PhotoKey, PostBody, PostId, Provider, PurchaseRef, StoreId, StoreName,
};
use domain::{
    Member, MemberCommand, Photo, Post, PostCommand, SocialOutcome, Store, StoreCommand, Wallet, WalletCommand,
};
use eventstore::{CommandContext, EventStore};

use crate::pointstream::{member, policy};

/// How big the dataset is.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Size {
    /// Members registered.
    #[arg(long, default_value_t = 100_000)]
    pub members: u64,
    /// Stores registered.
    #[arg(long, default_value_t = 1_000)]
    pub stores: u64,
    /// Ledger rows (earns), the long histories included.
    #[arg(long, default_value_t = 1_000_000)]
    pub ledger_rows: u64,
    /// Posts, each with 1–3 photos.
    #[arg(long, default_value_t = 50_000)]
    pub posts: u64,
    /// Members with a long history (the screens' members; one variant of each screen per member).
    #[arg(long, default_value_t = 16)]
    pub variants: u64,
    /// Ledger rows of each long history, over four stores.
    #[arg(long, default_value_t = 20_000)]
    pub history: u64,
}

/// Commands in flight while the dataset is written.
pub const WRITERS: usize = 64;
/// Stores each long history is spread over.
const HISTORY_STORES: u64 = 4;

/// Member `i`'s id.
pub fn member_id(i: u64) -> String {
    format!("m{i:06}")
}

/// Store `i`'s id.
pub fn store_id(i: u64) -> String {
    format!("s{i:04}")
}

impl Size {
    /// The home store of variant `v`'s member (the first of its four).
    pub fn variant_store(&self, v: u64) -> u64 {
        (v * 61) % self.stores.max(1)
    }
}

/// Writes the whole dataset into `store` (projections inline), printing progress to stderr.
pub async fn write(store: &EventStore, size: &Size) -> anyhow::Result<()> {
    anyhow::ensure!(size.members > size.variants && size.stores >= HISTORY_STORES, "too few members or stores");
    let started = Instant::now();
    run(store, "members", size.members, |store, i| async move {
        let command = MemberCommand::Register {
            member: member(&member_id(i))?,
            handle: Handle::parse(format!("member_{i}"))?,
            display_name: DisplayName::parse(format!("Member {i}"))?,
        };
        store.execute::<Member>(&member_id(i), command, CommandContext::default()).await?;
        Ok(())
    })
    .await?;
    run(store, "stores", size.stores, |store, i| async move {
        let command = StoreCommand::Register {
            store: StoreId::parse(store_id(i))?,
            name: StoreName::parse(format!("Store {i}"))?,
            owner: member(&member_id(i % 1000 + 1000))?,
            policy: policy()?,
        };
        store.execute::<Store>(&store_id(i), command, CommandContext::default()).await?;
        Ok(())
    })
    .await?;
    let size = *size;
    // Earn i: the first variants × history go to the long histories, taking
    // turns between them (and their four stores); the rest are spread over
    // every other member, each at a store of its own choosing.
    run(store, "ledger rows", size.ledger_rows, move |store, i| async move {
        let long = size.variants * size.history;
        let (who, at) = if i < long {
            let v = i % size.variants;
            (v, (size.variant_store(v) + (i / size.variants) % HISTORY_STORES) % size.stores)
        } else {
            let j = i - long;
            let others = size.members - size.variants;
            let who = size.variants + j % others;
            (who, (who * 7 + j / others) % size.stores)
        };
        let command = WalletCommand::Earn {
            member: member(&member_id(who))?,
            store: StoreId::parse(store_id(at))?,
            purchase_ref: PurchaseRef::parse(format!("r{i}"))?,
            amount: Amount::new(1_000 + (i % 7) * 100)?,
        };
        store.execute::<Wallet>(&member_id(who), command, CommandContext::default()).await?;
        Ok(())
    })
    .await?;
    // Post j: by a member spread over all, about store j mod stores (so every
    // store has posts), 1–3 photos, cross-posted to both networks every other
    // post, and published on Facebook every fourth.
    run(store, "posts", size.posts, move |store, j| async move {
        let id = format!("p{j:06}");
        let photos = (0..1 + j % 3)
            .map(|k| {
                Ok(Photo {
                    key: PhotoKey::parse(format!("photos/{id}-{k}.jpg"))?,
                    content_type: "image/jpeg".into(),
                    size: 180_000 + k * 1_000,
                    sha256: format!("{:064x}", j * 4 + k),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let providers = if j % 2 == 0 { vec![Provider::Facebook, Provider::Twitter] } else { Vec::new() };
        let command = PostCommand::Create {
            post: PostId::parse(id.as_str())?,
            author: member(&member_id((j * 7919) % size.members))?,
            store: StoreId::parse(store_id(j % size.stores))?,
            body: PostBody::parse(format!("Post number {j}: a flat white and a croissant, as every morning."))?,
            photos,
            providers,
        };
        store.execute::<Post>(&id, command, CommandContext::default()).await?;
        if j % 4 == 0 {
            let outcome = SocialOutcome::Published {
                external_id: ExternalRef::parse(format!("fb-{j}"))?,
                url: ExternalRef::parse(format!("https://facebook.example/posts/fb-{j}"))?,
            };
            let command = PostCommand::RecordSocialResult { provider: Provider::Facebook, outcome };
            store.execute::<Post>(&id, command, CommandContext::default()).await?;
        }
        Ok(())
    })
    .await?;
    eprintln!("(dataset written in {:.1?}: head {})", started.elapsed(), store.head());
    Ok(())
}

/// Runs `command(store, i)` for i in 0..`count`, [`WRITERS`] at a time.
async fn run<F, Fut>(store: &EventStore, what: &str, count: u64, command: F) -> anyhow::Result<()>
where
    F: Fn(EventStore, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let command = Arc::new(command);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, next, command) = (store.clone(), next.clone(), command.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    command(store.clone(), i).await?;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let took = started.elapsed();
    eprintln!("({count} {what} in {took:.1?}: {:.0}/s)", count as f64 / took.as_secs_f64().max(f64::MIN_POSITIVE));
    Ok(())
}
