//! `pointstream demo`: enough data to page through, so a newcomer sees a
//! lively service at once: seven stores (one closed, one that changed its
//! policy), a hundred members, two thousand purchases, a hundred shares,
//! redemptions, admin adjustments and thirty posts, many with photos,
//! cross-posted to Facebook and Twitter. `docs/demo.md` describes it.
//!
//! What is written is planned first ([`plan`]), deterministically; every
//! command carries a fixed command id (`demo/...`) and every photo a fixed
//! key, so running the demo again writes nothing new. Independent commands
//! run concurrently, so the event store's group commit batches them: a
//! phase's commands do not depend on each other, and a phase starts once
//! the one before it is written.

mod plan;

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use domain::values::PhotoKey;
use domain::{Member, Photo, Post, PostCommand, Store, Wallet};
use eventstore::{CommandContext, EventStore, Model};
use futures_util::{StreamExt, TryStreamExt, stream};
use media::{MediaError, MediaStore, Scan};

pub use plan::Summary;
use plan::{DemoPhoto, Job, LaterPhoto, PlannedPost};

/// Commands in flight at once: enough for the group commit to batch many
/// in one transaction.
const CONCURRENCY: usize = 32;

/// The largest photo the demo stores (its own are far smaller).
const MAX_PHOTO_BYTES: u64 = 10 << 20;

fn keyed(key: &str) -> CommandContext {
    CommandContext {
        command_id: Some(format!("demo/{key}")),
        actor: Some("demo".into()),
        role: Some("admin".into()),
        ..CommandContext::default()
    }
}

/// Loads the demo data, its photos into `media`, and brings the read models
/// up to date. Returns what the demo holds (the same on every run).
pub async fn load(store: &EventStore, media: &MediaStore) -> anyhow::Result<Summary> {
    let plan::Plan {
        members,
        stores,
        early_purchases,
        store_changes,
        late_purchases,
        spending,
        posts,
        later_photos,
        summary,
    } = plan::plan()?;
    run::<Member>(store, members).await?;
    run::<Store>(store, stores).await?;
    run::<Wallet>(store, early_purchases).await?;
    run::<Store>(store, store_changes).await?;
    run::<Wallet>(store, late_purchases).await?;
    run::<Wallet>(store, spending).await?;

    let stored = store_photos(store, media, &posts, &later_photos).await?;
    let photos_of = |post: &str, index: usize| {
        stored.get(&(post.to_string(), index)).cloned().with_context(|| format!("photo {index} of {post} not stored"))
    };
    let posts = posts
        .iter()
        .map(|post| {
            let photos = (0..post.photos.len()).map(|i| photos_of(post.id.as_str(), i)).collect::<Result<_, _>>()?;
            let command = PostCommand::Create {
                post: post.id.clone(),
                author: post.author.clone(),
                store: post.store.clone(),
                body: post.body.clone(),
                photos,
                providers: post.providers.clone(),
            };
            Ok(Job { id: post.id.to_string(), command, key: post.key.clone() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // One after the other, so that the feed shows them in their order.
    run_in::<Post>(store, posts, 1).await?;
    let later = later_photos
        .iter()
        .map(|later| {
            let photo = photos_of(later.post.as_str(), later.index)?;
            Ok(Job { id: later.post.to_string(), command: PostCommand::AddPhoto { photo }, key: later.key.clone() })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    run::<Post>(store, later).await?;

    // The shares reach their recipients through the share distribution.
    projections::catch_up(store, 1_000).await.context("bringing the read models up to date")?;
    Ok(summary)
}

/// Runs one phase's commands, [`CONCURRENCY`] at a time.
async fn run<A: Model>(store: &EventStore, jobs: Vec<Job<A::Command>>) -> anyhow::Result<()> {
    run_in::<A>(store, jobs, CONCURRENCY).await
}

/// Runs commands, `in_flight` at a time (1: in their order).
async fn run_in<A: Model>(store: &EventStore, jobs: Vec<Job<A::Command>>, in_flight: usize) -> anyhow::Result<()> {
    stream::iter(jobs)
        .map(|job| async move {
            store
                .execute::<A>(&job.id, job.command, keyed(&job.key))
                .await
                .with_context(|| format!("demo command demo/{} on {} {}", job.key, A::TYPE, job.id))
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Stores every photo the posts carry, each under a key of its own (post
/// and position: no two posts share an object, so deleting one post's
/// photos never touches another's), as an upload would be stored; returns
/// what the commands record about them. A photo whose command is recorded
/// already is stored again only if its post is live and the store lacks it
/// (the demo was loaded with another photo store): a deleted post's photo
/// stored now would be an orphan.
async fn store_photos(
    store: &EventStore,
    media: &MediaStore,
    posts: &[PlannedPost],
    later: &[LaterPhoto],
) -> anyhow::Result<BTreeMap<(String, usize), Photo>> {
    let created = posts
        .iter()
        .flat_map(|p| p.photos.iter().enumerate().map(move |(i, photo)| (p.id.as_str(), i, photo, p.key.as_str())));
    let later = later.iter().map(|l| (l.post.as_str(), l.index, &l.photo, l.key.as_str()));
    let wanted: Vec<(&str, usize, &DemoPhoto, &str)> = created.chain(later).collect();
    let live = &media::gc::live_photos(store).await?;
    let stored = stream::iter(wanted)
        .map(|(post, index, photo, command)| async move {
            let recorded = store.command_recorded(&format!("demo/{command}")).await?;
            let record = store_photo(media, post, index, photo, recorded.then_some(live))
                .await
                .with_context(|| format!("storing demo photo {} of post {post}", photo.name))?;
            anyhow::Ok(((post.to_string(), index), record))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<BTreeMap<_, _>>()
        .await?;
    Ok(stored)
}

/// Checks `photo` as an upload is checked (kind by content, size, SHA-256),
/// and puts it under `photos/{post}-{index}.{ext}`; if its command is
/// recorded already (`live`: the photos of posts not deleted), only when
/// its post is live and the store does not hold it as it is.
async fn store_photo(
    media: &MediaStore,
    post: &str,
    index: usize,
    photo: &DemoPhoto,
    recorded: Option<&HashSet<String>>,
) -> anyhow::Result<Photo> {
    let bytes = photo.bytes;
    let checked = tokio::task::spawn_blocking(move || -> anyhow::Result<media::CheckedPhoto> {
        // Stores take a file, as uploads arrive in one: an anonymous one.
        let mut file = tempfile::tempfile()?;
        std::io::Write::write_all(&mut file, bytes)?;
        let mut scan = Scan::default();
        scan.update(bytes);
        Ok(scan.finish(file, MAX_PHOTO_BYTES)?)
    })
    .await??;
    let key = PhotoKey::parse(format!("photos/{post}-{index}.{}", checked.kind.extension()))?;
    let record = Photo {
        key: key.clone(),
        content_type: checked.kind.content_type().to_string(),
        size: checked.size,
        sha256: checked.sha256.clone(),
    };
    if let Some(live) = recorded {
        if !live.contains(key.as_str()) {
            return Ok(record);
        }
        match media.get(key.as_str()).await {
            Ok(blob) if blob.bytes.as_ref() == bytes => return Ok(record),
            Ok(_) | Err(MediaError::NotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(media.put(&key, checked).await?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use domain::values::Provider;
    use domain::{MemberCommand, WalletCommand};

    use super::plan::{PHOTOS, plan};

    #[test]
    fn the_plan_is_the_same_every_time() {
        let (a, b) = (plan().expect("a plan"), plan().expect("a plan"));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn the_plan_has_the_announced_size() {
        let plan = plan().expect("a plan");
        let summary = plan.summary;
        assert_eq!(summary.members, plan.members.len());
        assert_eq!(summary.members, 100);
        assert_eq!(summary.stores, 7);
        assert_eq!(plan.early_purchases.len() + plan.late_purchases.len(), 2_000);
        assert_eq!(summary.purchases, 2_000);
        let shares = plan.spending.iter().filter(|j| matches!(j.command, WalletCommand::Share { .. })).count();
        assert_eq!((summary.shares, shares), (100, 100));
        let several = plan
            .spending
            .iter()
            .filter(|j| matches!(&j.command, WalletCommand::Share { recipients, .. } if recipients.len() > 1))
            .count();
        assert!(several >= 20, "{several} shares have several recipients");
        let redemptions = plan.spending.iter().filter(|j| matches!(j.command, WalletCommand::Redeem { .. })).count();
        assert_eq!(summary.redemptions, redemptions);
        let adjustments = plan.spending.iter().filter(|j| matches!(j.command, WalletCommand::Adjust { .. })).count();
        assert_eq!(summary.adjustments, adjustments);
        assert_eq!(summary.posts, 30);
        let with_photos = plan.posts.iter().filter(|p| !p.photos.is_empty()).count();
        assert!(with_photos >= 15, "{with_photos} posts have photos");
        assert!(plan.posts.iter().any(|p| p.providers == [Provider::Facebook, Provider::Twitter]));
        let photos: usize = plan.posts.iter().map(|p| p.photos.len()).sum::<usize>() + plan.later_photos.len();
        assert_eq!(summary.photos, photos);
    }

    #[test]
    fn handles_ids_and_command_ids_are_unique() {
        let plan = plan().expect("a plan");
        let handles: BTreeSet<_> = plan
            .members
            .iter()
            .map(|j| match &j.command {
                MemberCommand::Register { handle, .. } => handle.to_string(),
                other => panic!("not a registration: {other:?}"),
            })
            .collect();
        assert_eq!(handles.len(), plan.members.len());
        let keys: Vec<&str> = plan
            .members
            .iter()
            .map(|j| j.key.as_str())
            .chain(plan.stores.iter().map(|j| j.key.as_str()))
            .chain(plan.store_changes.iter().map(|j| j.key.as_str()))
            .chain(
                plan.early_purchases.iter().chain(&plan.late_purchases).chain(&plan.spending).map(|j| j.key.as_str()),
            )
            .chain(plan.posts.iter().map(|p| p.key.as_str()))
            .chain(plan.later_photos.iter().map(|p| p.key.as_str()))
            .collect();
        assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), keys.len());
    }

    /// The entities the README and the docs name are there as they always were.
    #[test]
    fn the_named_entities_are_kept() {
        let plan = plan().expect("a plan");
        for (id, handle) in [("ann", "ann_demo"), ("bob", "bob_demo"), ("cat", "cat_demo"), ("dan", "dan_demo")] {
            let job = plan.members.iter().find(|j| j.id == id).expect("a named member");
            assert!(
                matches!(&job.command, MemberCommand::Register { handle: h, .. } if h.as_str() == handle),
                "{job:?}"
            );
            assert_eq!(job.key, format!("member/{id}"));
        }
        let share = plan.spending.iter().find(|j| j.key == "share/1").expect("demo-share-1");
        assert_eq!(share.id, "bob");
        let WalletCommand::Share { share: id, store, recipients, .. } = &share.command else { panic!("{share:?}") };
        assert_eq!((id.as_str(), store.as_str()), ("demo-share-1", "cafe"));
        let parts: Vec<_> = recipients.iter().map(|p| (p.member.as_str(), p.points.get())).collect();
        assert_eq!(parts, [("cat", 100), ("dan", 50)]);
        let post = &plan.posts[0];
        assert_eq!((post.id.as_str(), post.author.as_str(), post.store.as_str()), ("demo-post-1", "bob", "cafe"));
        assert_eq!(plan.later_photos[0].post.as_str(), "demo-post-1");
        for receipt in ["earn/cafe/r-1001", "earn/cafe/r-1002", "earn/bakery/b-77"] {
            assert!(plan.early_purchases.iter().any(|j| j.key == receipt), "{receipt}");
        }
    }

    /// Every debit fits in what its wallet earned, so no command is refused
    /// whatever the order; bob keeps a few hundred points at the cafe.
    #[test]
    fn no_wallet_is_overspent_and_bob_keeps_his_cafe_points() {
        let plan = plan().expect("a plan");
        let stores: std::collections::BTreeMap<String, domain::values::EarnPolicy> = plan
            .stores
            .iter()
            .map(|j| match &j.command {
                domain::StoreCommand::Register { store, policy, .. } => (store.to_string(), *policy),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut balances: std::collections::BTreeMap<(String, String), i64> = Default::default();
        let mut policies = stores.clone();
        for (phase, jobs) in [(0, &plan.early_purchases), (1, &plan.late_purchases)] {
            if phase == 1 {
                for change in &plan.store_changes {
                    if let domain::StoreCommand::UpdateEarnPolicy { policy } = &change.command {
                        policies.insert(change.id.clone(), *policy);
                    }
                }
            }
            for job in jobs {
                let WalletCommand::Earn { store, amount, .. } = &job.command else { panic!("{job:?}") };
                let points = policies[store.as_str()].points_for(*amount).expect("every purchase earns").get();
                *balances.entry((job.id.clone(), store.to_string())).or_default() += points as i64;
            }
        }
        for job in &plan.spending {
            let (store, change) = match &job.command {
                WalletCommand::Share { store, recipients, .. } => {
                    (store, -(recipients.iter().map(|p| p.points.get()).sum::<u64>() as i64))
                }
                WalletCommand::Redeem { store, points, .. } => (store, -(points.get() as i64)),
                WalletCommand::Adjust { store, adjustment, .. } => (store, adjustment.get()),
                other => panic!("{other:?}"),
            };
            *balances.entry((job.id.clone(), store.to_string())).or_default() += change;
        }
        assert!(balances.values().all(|b| *b >= 0), "{balances:?}");
        let bob = balances[&("bob".to_string(), "cafe".to_string())];
        assert!(bob >= 300, "bob has {bob} points at the cafe");
    }

    #[test]
    fn the_photos_are_real_jpegs_and_pngs_of_a_modest_size() {
        for photo in PHOTOS {
            let kind = media::PhotoKind::sniff(&photo.bytes[..64]).expect("a photo");
            assert!(photo.name.ends_with(kind.extension()), "{}", photo.name);
            assert!((10_000..=80_000).contains(&photo.bytes.len()), "{}: {} bytes", photo.name, photo.bytes.len());
        }
        let plan = plan().expect("a plan");
        for post in &plan.posts {
            assert!(post.photos.len() <= domain::post::MAX_PHOTOS, "{}", post.id);
        }
    }
}
