//! Specification of the Post aggregate: writing a post about a store,
//! recording each social provider's answer, deleting.

mod support;

use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use pointstream_domain::post::MAX_PHOTOS;
use pointstream_domain::values::{PhotoKey, Provider, ValueError};
use pointstream_domain::{DomainError, Photo, Post, PostCommand, PostEvent, SocialOutcome, SocialStatus};
use support::{body, cast, external, member, post_id, reason, store};

fn framework() -> TestFramework<Post> {
    TestFramework::with(cast().services())
}

fn photos(count: usize) -> Vec<Photo> {
    (0..count)
        .map(|i| Photo {
            key: PhotoKey::parse(format!("posts/p1/{i}.jpg")).expect("photo key is valid"),
            content_type: "image/jpeg".to_string(),
            size: 1_000 + i as u64,
            sha256: format!("{i:064x}"),
        })
        .collect()
}

fn create(author: &str, about: &str, photo_count: usize, providers: Vec<Provider>) -> PostCommand {
    PostCommand::Create {
        post: post_id("p1"),
        author: member(author),
        store: store(about),
        body: body("Great flat white"),
        photos: photos(photo_count),
        providers,
    }
}

fn created(providers: Vec<Provider>) -> PostEvent {
    PostEvent::PostCreated {
        post: post_id("p1"),
        author: member("ann"),
        store: store("cafe"),
        body: body("Great flat white"),
        photos: photos(1),
        providers,
    }
}

fn published() -> SocialOutcome {
    SocialOutcome::Published { external_id: external("ext-1"), url: external("https://example.com/ext-1") }
}

fn failed(attempt: u32) -> SocialOutcome {
    SocialOutcome::Failed { reason: reason("rate limited"), attempt }
}

fn record(provider: Provider, outcome: SocialOutcome) -> PostCommand {
    PostCommand::RecordSocialResult { provider, outcome }
}

#[test]
fn an_active_member_writes_a_post_about_a_registered_store() {
    framework()
        .given_no_previous_events()
        .when(create("ann", "cafe", 1, vec![Provider::Facebook]))
        .then_expect_events(vec![created(vec![Provider::Facebook])]);
}

#[test]
fn the_providers_of_a_new_post_are_sorted_and_listed_once() {
    framework()
        .given_no_previous_events()
        .when(create("ann", "cafe", 1, vec![Provider::Twitter, Provider::Facebook, Provider::Twitter]))
        .then_expect_events(vec![created(vec![Provider::Facebook, Provider::Twitter])]);
}

#[test]
fn a_post_may_carry_the_largest_number_of_photos() {
    let events = framework()
        .given_no_previous_events()
        .when(create("ann", "cafe", MAX_PHOTOS, vec![]))
        .inspect_result()
        .expect("a post with MAX_PHOTOS photos is accepted");

    assert!(matches!(&events[..], [PostEvent::PostCreated { photos, .. }] if photos.len() == MAX_PHOTOS));
}

#[test]
fn a_post_with_too_many_photos_is_refused() {
    framework().given_no_previous_events().when(create("ann", "cafe", MAX_PHOTOS + 1, vec![])).then_expect_error(
        DomainError::Invalid(ValueError { field: "photos", reason: format!("at most {MAX_PHOTOS} photos per post") }),
    );
}

#[test]
fn creating_a_post_twice_is_refused() {
    framework()
        .given(vec![created(vec![])])
        .when(create("ann", "cafe", 1, vec![]))
        .then_expect_error(DomainError::AlreadyRegistered("post p1".to_string()));
}

#[test]
fn a_post_by_an_unknown_member_is_refused() {
    framework()
        .given_no_previous_events()
        .when(create("zed", "cafe", 1, vec![]))
        .then_expect_error(DomainError::UnknownMember(member("zed")));
}

#[test]
fn a_post_by_a_deactivated_member_is_refused() {
    framework()
        .given_no_previous_events()
        .when(create("dan", "cafe", 1, vec![]))
        .then_expect_error(DomainError::MemberInactive(member("dan")));
}

#[test]
fn a_post_about_an_unknown_store_is_refused() {
    framework()
        .given_no_previous_events()
        .when(create("ann", "nowhere", 1, vec![]))
        .then_expect_error(DomainError::UnknownStore(store("nowhere")));
}

#[test]
fn a_targeted_provider_publishes_the_post() {
    framework()
        .given(vec![created(vec![Provider::Facebook])])
        .when(record(Provider::Facebook, published()))
        .then_expect_events(vec![PostEvent::SocialPostPublished {
            provider: Provider::Facebook,
            external_id: external("ext-1"),
            url: external("https://example.com/ext-1"),
        }]);
}

#[test]
fn a_failed_attempt_is_recorded_with_its_number() {
    framework()
        .given(vec![created(vec![Provider::Twitter])])
        .when(record(Provider::Twitter, failed(1)))
        .then_expect_events(vec![PostEvent::SocialPostFailed {
            provider: Provider::Twitter,
            reason: reason("rate limited"),
            attempt: 1,
        }]);
}

#[test]
fn a_provider_may_publish_after_failed_attempts() {
    framework()
        .given(vec![
            created(vec![Provider::Twitter]),
            PostEvent::SocialPostFailed { provider: Provider::Twitter, reason: reason("rate limited"), attempt: 1 },
        ])
        .when(record(Provider::Twitter, published()))
        .then_expect_events(vec![PostEvent::SocialPostPublished {
            provider: Provider::Twitter,
            external_id: external("ext-1"),
            url: external("https://example.com/ext-1"),
        }]);
}

#[test]
fn a_result_from_a_provider_the_post_does_not_target_is_refused() {
    framework()
        .given(vec![created(vec![Provider::Facebook])])
        .when(record(Provider::Twitter, published()))
        .then_expect_error(DomainError::ProviderNotTargeted(Provider::Twitter));
}

#[test]
fn a_result_after_the_provider_published_is_refused() {
    framework()
        .given(vec![
            created(vec![Provider::Facebook]),
            PostEvent::SocialPostPublished {
                provider: Provider::Facebook,
                external_id: external("ext-1"),
                url: external("https://example.com/ext-1"),
            },
        ])
        .when(record(Provider::Facebook, failed(2)))
        .then_expect_error(DomainError::AlreadyPublished(Provider::Facebook));
}

#[test]
fn a_result_for_a_deleted_post_is_refused() {
    framework()
        .given(vec![created(vec![Provider::Facebook]), PostEvent::PostDeleted])
        .when(record(Provider::Facebook, published()))
        .then_expect_error(DomainError::PostDeleted(post_id("p1")));
}

#[test]
fn a_result_for_a_post_never_written_is_refused() {
    framework()
        .given_no_previous_events()
        .when(record(Provider::Facebook, published()))
        .then_expect_error(DomainError::NotFound("post"));
}

#[test]
fn a_post_is_deleted() {
    framework().given(vec![created(vec![])]).when(PostCommand::Delete).then_expect_events(vec![PostEvent::PostDeleted]);
}

#[test]
fn deleting_a_deleted_post_is_refused() {
    framework()
        .given(vec![created(vec![]), PostEvent::PostDeleted])
        .when(PostCommand::Delete)
        .then_expect_error(DomainError::PostDeleted(post_id("p1")));
}

#[test]
fn deleting_a_post_never_written_is_refused() {
    framework().given_no_previous_events().when(PostCommand::Delete).then_expect_error(DomainError::NotFound("post"));
}

#[test]
fn the_social_status_follows_each_provider_answer() {
    let mut post = Post::default();

    post.apply(created(vec![Provider::Facebook, Provider::Twitter]));
    post.apply(PostEvent::SocialPostFailed { provider: Provider::Twitter, reason: reason("rate limited"), attempt: 2 });
    post.apply(PostEvent::SocialPostPublished {
        provider: Provider::Facebook,
        external_id: external("ext-1"),
        url: external("https://example.com/ext-1"),
    });

    assert_eq!(
        post.social().get(&Provider::Facebook),
        Some(&SocialStatus::Published { external_id: external("ext-1"), url: external("https://example.com/ext-1") })
    );
    assert_eq!(
        post.social().get(&Provider::Twitter),
        Some(&SocialStatus::Failed { reason: reason("rate limited"), attempts: 2 })
    );
}

fn photo(key: &str, sha: u8) -> Photo {
    Photo {
        key: PhotoKey::parse(key).expect("photo key is valid"),
        content_type: "image/png".to_string(),
        size: 68,
        sha256: format!("{sha:064x}"),
    }
}

#[test]
fn a_photo_can_be_added_to_a_live_post() {
    let added = photo("photos/extra.png", 7);
    framework()
        .given(vec![created(vec![])])
        .when(PostCommand::AddPhoto { photo: added.clone() })
        .then_expect_events(vec![PostEvent::PhotoAdded { photo: added, cross_post: true }]);
}

#[test]
fn no_photo_is_added_past_the_limit_or_to_a_deleted_or_missing_post() {
    let full: Vec<PostEvent> = std::iter::once(created(vec![]))
        .chain(
            (1..MAX_PHOTOS)
                .map(|i| PostEvent::PhotoAdded { photo: photo(&format!("photos/{i}.png"), i as u8), cross_post: true }),
        )
        .collect();
    let refused = framework().given(full).when(PostCommand::AddPhoto { photo: photo("photos/one-more.png", 99) });
    assert!(matches!(refused.inspect_result(), Err(DomainError::Invalid(ValueError { field: "photos", .. }))));
    framework()
        .given(vec![created(vec![]), PostEvent::PostDeleted])
        .when(PostCommand::AddPhoto { photo: photo("photos/late.png", 1) })
        .then_expect_error(DomainError::PostDeleted(post_id("p1")));
    framework()
        .given_no_previous_events()
        .when(PostCommand::AddPhoto { photo: photo("photos/lost.png", 1) })
        .then_expect_error(DomainError::NotFound("post"));
}

#[test]
fn a_retry_is_the_same_command_when_only_the_photo_keys_differ() {
    use pointstream_domain::Claims;
    let first = PostCommand::AddPhoto { photo: photo("photos/first-attempt.png", 3) };
    let retry = PostCommand::AddPhoto { photo: photo("photos/second-attempt.png", 3) };
    let other = PostCommand::AddPhoto { photo: photo("photos/first-attempt.png", 4) };
    assert_eq!(first.retry_identity(), retry.retry_identity());
    assert_ne!(first.retry_identity(), other.retry_identity());
    let create_with = |key: &str| PostCommand::Create {
        post: post_id("p1"),
        author: member("ann"),
        store: store("cafe"),
        body: body("Great flat white"),
        photos: vec![photo(key, 1)],
        providers: vec![],
    };
    assert_eq!(create_with("photos/a.png").retry_identity(), create_with("photos/b.png").retry_identity());
}

fn record_photo(key: &str, provider: Provider, outcome: SocialOutcome) -> PostCommand {
    PostCommand::RecordPhotoResult { photo: PhotoKey::parse(key).expect("photo key is valid"), provider, outcome }
}

#[test]
fn a_photo_added_later_is_published_at_each_provider_the_post_targets() {
    let later = photo("photos/later.png", 5);
    framework()
        .given(vec![created(vec![Provider::Twitter]), PostEvent::PhotoAdded { photo: later.clone(), cross_post: true }])
        .when(record_photo("photos/later.png", Provider::Twitter, published()))
        .then_expect_events(vec![PostEvent::SocialPhotoPublished {
            photo: later.key,
            provider: Provider::Twitter,
            external_id: external("ext-1"),
            url: external("https://example.com/ext-1"),
        }]);
}

#[test]
fn a_later_photos_failed_attempts_are_recorded_and_it_publishes_once() {
    let later = photo("photos/later.png", 5);
    let failed_once = PostEvent::SocialPhotoFailed {
        photo: later.key.clone(),
        provider: Provider::Facebook,
        reason: reason("rate limited"),
        attempt: 1,
    };
    framework()
        .given(vec![
            created(vec![Provider::Facebook]),
            PostEvent::PhotoAdded { photo: later.clone(), cross_post: true },
        ])
        .when(record_photo("photos/later.png", Provider::Facebook, failed(1)))
        .then_expect_events(vec![failed_once.clone()]);
    let published_once = PostEvent::SocialPhotoPublished {
        photo: later.key.clone(),
        provider: Provider::Facebook,
        external_id: external("ext-1"),
        url: external("https://example.com/ext-1"),
    };
    framework()
        .given(vec![
            created(vec![Provider::Facebook]),
            PostEvent::PhotoAdded { photo: later, cross_post: true },
            failed_once,
            published_once,
        ])
        .when(record_photo("photos/later.png", Provider::Facebook, published()))
        .then_expect_error(DomainError::AlreadyPublished(Provider::Facebook));
}

#[test]
fn a_photo_result_needs_a_later_photo_a_targeted_provider_and_a_live_post() {
    let later = photo("photos/later.png", 5);
    let given =
        || vec![created(vec![Provider::Facebook]), PostEvent::PhotoAdded { photo: later.clone(), cross_post: true }];
    // The post's first photos go out with the post: they have no results of their own.
    framework()
        .given(given())
        .when(record_photo("posts/p1/0.jpg", Provider::Facebook, published()))
        .then_expect_error(DomainError::NotFound("photo added later"));
    framework()
        .given(given())
        .when(record_photo("photos/later.png", Provider::Twitter, published()))
        .then_expect_error(DomainError::ProviderNotTargeted(Provider::Twitter));
    framework()
        .given(given().into_iter().chain([PostEvent::PostDeleted]).collect())
        .when(record_photo("photos/later.png", Provider::Facebook, published()))
        .then_expect_error(DomainError::PostDeleted(post_id("p1")));
}

#[test]
fn a_later_photo_starts_pending_at_the_posts_providers_and_follows_its_own_answers() {
    let mut post = Post::default();
    let later = photo("photos/later.png", 5);

    post.apply(created(vec![Provider::Facebook, Provider::Twitter]));
    post.apply(PostEvent::PhotoAdded { photo: later.clone(), cross_post: true });
    let pending = post.photo_social(&later.key).expect("a later photo has statuses").clone();
    post.apply(PostEvent::SocialPhotoFailed {
        photo: later.key.clone(),
        provider: Provider::Twitter,
        reason: reason("rate limited"),
        attempt: 1,
    });

    assert!(pending.values().all(|s| *s == SocialStatus::Pending) && pending.len() == 2, "{pending:?}");
    let statuses = post.photo_social(&later.key).expect("statuses");
    assert_eq!(statuses.get(&Provider::Facebook), Some(&SocialStatus::Pending));
    assert_eq!(
        statuses.get(&Provider::Twitter),
        Some(&SocialStatus::Failed { reason: reason("rate limited"), attempts: 1 })
    );
    assert_eq!(post.social().get(&Provider::Twitter), Some(&SocialStatus::Pending), "the post's own status is apart");
    assert!(post.photo_social(&photos(1)[0].key).is_none(), "a first photo goes out with the post");
}

#[test]
fn a_snapshot_from_before_photo_statuses_is_not_read() {
    // Such a snapshot would hide the statuses of photos it had seen added: it
    // must not deserialize, so the post is replayed from its log.
    let old = r#"{"id":"p1","deleted":false,"photos":2,"social":{"Facebook":"Pending"}}"#;
    assert!(serde_json::from_str::<Post>(old).is_err());
    let now = serde_json::to_string(&Post::default()).expect("serializes");
    assert!(serde_json::from_str::<Post>(&now).is_ok());
}

#[test]
fn a_photo_added_before_later_photos_were_cross_posted_stays_in_the_app() {
    // An event as stored before `cross_post` existed.
    let old = format!(
        r#"{{"PhotoAdded":{{"photo":{{"key":"photos/old.png","content_type":"image/png","size":68,"sha256":"{}"}}}}}}"#,
        "ab".repeat(32)
    );
    let event: PostEvent = serde_json::from_str(&old).expect("an old PhotoAdded reads");
    assert!(matches!(event, PostEvent::PhotoAdded { cross_post: false, .. }), "{event:?}");
    let mut post = Post::default();
    post.apply(created(vec![Provider::Twitter]));
    post.apply(event);
    let key = PhotoKey::parse("photos/old.png").expect("photo key is valid");
    assert!(post.photo_social(&key).is_none(), "no status, so no worker publishes it");
    framework()
        .given(vec![created(vec![Provider::Twitter]), serde_json::from_str(&old).expect("reads")])
        .when(record_photo("photos/old.png", Provider::Twitter, published()))
        .then_expect_error(DomainError::NotFound("photo added later"));
}
