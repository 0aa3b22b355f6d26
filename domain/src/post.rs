//! The Post aggregate: a member's post about a store, with photos, cross-posted
//! to social providers. Each provider's outcome is recorded here, so the log
//! shows every attempt. A photo added after the post was created is
//! cross-posted on its own, to the same providers, with outcomes of its own.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::{Claims, Services};
use crate::error::DomainError;
use crate::values::{ExternalRef, MemberId, PhotoKey, PostBody, PostId, Provider, Reason, StoreId};

/// The most photos one post may carry.
pub const MAX_PHOTOS: usize = 10;

/// A photo as stored: its key, content type, size and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Photo {
    /// Storage key.
    pub key: PhotoKey,
    /// MIME type found from the content.
    pub content_type: String,
    /// Size in bytes (0 in events written before sizes were recorded).
    #[serde(default)]
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// What a provider answered to one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocialOutcome {
    /// Published; final.
    Published { external_id: ExternalRef, url: ExternalRef },
    /// This attempt failed; a later attempt may still publish.
    Failed { reason: Reason, attempt: u32 },
    /// The author's account there needs linking again: the post waits,
    /// spending no attempt, until it is.
    NeedsRelink { reason: Reason },
}

/// What can be asked of a post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PostCommand {
    /// Write a post.
    Create {
        post: PostId,
        author: MemberId,
        store: StoreId,
        body: PostBody,
        photos: Vec<Photo>,
        providers: Vec<Provider>,
    },
    /// Add a photo to the post.
    AddPhoto { photo: Photo },
    /// Record what a provider answered.
    RecordSocialResult { provider: Provider, outcome: SocialOutcome },
    /// Record what a provider answered for a photo added after the post was created.
    RecordPhotoResult { photo: PhotoKey, provider: Provider, outcome: SocialOutcome },
    /// Delete the post.
    Delete,
}

impl Claims for PostCommand {
    /// Photos count by content: each attempt stores its upload under a key of
    /// its own, so a retry differs from the first attempt only in the keys.
    fn retry_identity(&self) -> Self {
        let by_content = |photos: &[Photo]| -> Vec<Photo> {
            photos
                .iter()
                .map(|photo| Photo {
                    key: PhotoKey::parse(format!("sha256/{}", photo.sha256)).unwrap_or_else(|_| photo.key.clone()),
                    ..photo.clone()
                })
                .collect()
        };
        match self {
            PostCommand::Create { post, author, store, body, photos, providers } => PostCommand::Create {
                post: post.clone(),
                author: author.clone(),
                store: store.clone(),
                body: body.clone(),
                photos: by_content(photos),
                providers: providers.clone(),
            },
            PostCommand::AddPhoto { photo } => {
                PostCommand::AddPhoto { photo: by_content(std::slice::from_ref(photo)).remove(0) }
            }
            other => other.clone(),
        }
    }
}

/// What happened to a post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PostEvent {
    /// The post was written.
    PostCreated {
        post: PostId,
        author: MemberId,
        store: StoreId,
        body: PostBody,
        photos: Vec<Photo>,
        providers: Vec<Provider>,
    },
    /// A photo was added.
    PhotoAdded {
        photo: Photo,
        /// Whether the photo is cross-posted on its own to the post's
        /// providers. Absent, and so false, in events written before photos
        /// added later were cross-posted: replaying the log, or re-reading it
        /// after Redis lost its streams, never publishes an old photo.
        #[serde(default)]
        cross_post: bool,
    },
    /// A provider published it.
    SocialPostPublished { provider: Provider, external_id: ExternalRef, url: ExternalRef },
    /// An attempt at a provider failed.
    SocialPostFailed { provider: Provider, reason: Reason, attempt: u32 },
    /// A provider published a photo added after the post was created.
    SocialPhotoPublished { photo: PhotoKey, provider: Provider, external_id: ExternalRef, url: ExternalRef },
    /// An attempt to publish such a photo at a provider failed.
    SocialPhotoFailed { photo: PhotoKey, provider: Provider, reason: Reason, attempt: u32 },
    /// The post waits for its author to link their account at a provider again.
    SocialPostNeedsRelink { provider: Provider, reason: Reason },
    /// Such a photo waits for its author to link their account at a provider again.
    SocialPhotoNeedsRelink { photo: PhotoKey, provider: Provider, reason: Reason },
    /// The post was deleted.
    PostDeleted,
}

impl DomainEvent for PostEvent {
    fn event_type(&self) -> String {
        match self {
            PostEvent::PostCreated { .. } => "PostCreated",
            PostEvent::PhotoAdded { .. } => "PhotoAdded",
            PostEvent::SocialPostPublished { .. } => "SocialPostPublished",
            PostEvent::SocialPostFailed { .. } => "SocialPostFailed",
            PostEvent::SocialPhotoPublished { .. } => "SocialPhotoPublished",
            PostEvent::SocialPhotoFailed { .. } => "SocialPhotoFailed",
            PostEvent::SocialPostNeedsRelink { .. } => "SocialPostNeedsRelink",
            PostEvent::SocialPhotoNeedsRelink { .. } => "SocialPhotoNeedsRelink",
            PostEvent::PostDeleted => "PostDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Where a post stands at one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocialStatus {
    /// No outcome yet.
    Pending,
    /// Published.
    Published { external_id: ExternalRef, url: ExternalRef },
    /// Last attempt failed.
    Failed { reason: Reason, attempts: u32 },
    /// Waiting for the author to link their account there again.
    NeedsRelink { reason: Reason },
}

/// A post's current state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Post {
    id: Option<PostId>,
    deleted: bool,
    #[serde(default)]
    photos: usize,
    social: BTreeMap<Provider, SocialStatus>,
    /// Photos added after the post was created, each with its own status at
    /// each targeted provider. Required (no serde default): a snapshot written
    /// before photos had statuses does not deserialize, so the post is
    /// replayed from its log instead of being read without them.
    later_photos: BTreeMap<PhotoKey, BTreeMap<Provider, SocialStatus>>,
}

impl Post {
    /// The status at each targeted provider.
    pub fn social(&self) -> &BTreeMap<Provider, SocialStatus> {
        &self.social
    }

    /// The status at each targeted provider of a photo added after the post
    /// was created; `None` for any other photo (the post's first photos are
    /// published with it).
    pub fn photo_social(&self, photo: &PhotoKey) -> Option<&BTreeMap<Provider, SocialStatus>> {
        self.later_photos.get(photo)
    }

    /// Whether the post was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    fn require_live(&self) -> Result<(), DomainError> {
        match &self.id {
            None => Err(DomainError::NotFound("post")),
            Some(id) if self.deleted => Err(DomainError::PostDeleted(id.clone())),
            Some(_) => Ok(()),
        }
    }
}

impl Aggregate for Post {
    const TYPE: &'static str = "Post";
    type Command = PostCommand;
    type Event = PostEvent;
    type Error = DomainError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: PostCommand,
        directory: &Services,
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            PostCommand::Create { post, author, store, body, photos, mut providers } => {
                if let Some(id) = &self.id {
                    return Err(DomainError::AlreadyRegistered(format!("post {id}")));
                }
                if photos.len() > MAX_PHOTOS {
                    return Err(too_many_photos());
                }
                let status =
                    directory.member(&author).await?.ok_or_else(|| DomainError::UnknownMember(author.clone()))?;
                if !status.active {
                    return Err(DomainError::MemberInactive(author));
                }
                if directory.store(&store).await?.is_none() {
                    return Err(DomainError::UnknownStore(store));
                }
                providers.sort();
                providers.dedup();
                PostEvent::PostCreated { post, author, store, body, photos, providers }
            }
            PostCommand::AddPhoto { photo } => {
                self.require_live()?;
                if self.photos >= MAX_PHOTOS {
                    return Err(too_many_photos());
                }
                PostEvent::PhotoAdded { photo, cross_post: true }
            }
            PostCommand::RecordSocialResult { provider, outcome } => {
                self.require_live()?;
                require_open(self.social.get(&provider), provider)?;
                match outcome {
                    SocialOutcome::Published { external_id, url } => {
                        PostEvent::SocialPostPublished { provider, external_id, url }
                    }
                    SocialOutcome::Failed { reason, attempt } => {
                        PostEvent::SocialPostFailed { provider, reason, attempt }
                    }
                    SocialOutcome::NeedsRelink { reason } => PostEvent::SocialPostNeedsRelink { provider, reason },
                }
            }
            PostCommand::RecordPhotoResult { photo, provider, outcome } => {
                self.require_live()?;
                let statuses = self.later_photos.get(&photo).ok_or(DomainError::NotFound("photo added later"))?;
                require_open(statuses.get(&provider), provider)?;
                match outcome {
                    SocialOutcome::Published { external_id, url } => {
                        PostEvent::SocialPhotoPublished { photo, provider, external_id, url }
                    }
                    SocialOutcome::Failed { reason, attempt } => {
                        PostEvent::SocialPhotoFailed { photo, provider, reason, attempt }
                    }
                    SocialOutcome::NeedsRelink { reason } => {
                        PostEvent::SocialPhotoNeedsRelink { photo, provider, reason }
                    }
                }
            }
            PostCommand::Delete => {
                self.require_live()?;
                PostEvent::PostDeleted
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: PostEvent) {
        match event {
            PostEvent::PostCreated { post, providers, photos, .. } => {
                self.id = Some(post);
                self.photos = photos.len();
                self.social = providers.into_iter().map(|p| (p, SocialStatus::Pending)).collect();
            }
            PostEvent::SocialPostPublished { provider, external_id, url } => {
                self.social.insert(provider, SocialStatus::Published { external_id, url });
            }
            PostEvent::SocialPostFailed { provider, reason, attempt } => {
                self.social.insert(provider, SocialStatus::Failed { reason, attempts: attempt });
            }
            PostEvent::SocialPhotoPublished { photo, provider, external_id, url } => {
                self.later_photos
                    .entry(photo)
                    .or_default()
                    .insert(provider, SocialStatus::Published { external_id, url });
            }
            PostEvent::SocialPhotoFailed { photo, provider, reason, attempt } => {
                let status = SocialStatus::Failed { reason, attempts: attempt };
                self.later_photos.entry(photo).or_default().insert(provider, status);
            }
            PostEvent::SocialPostNeedsRelink { provider, reason } => {
                self.social.insert(provider, SocialStatus::NeedsRelink { reason });
            }
            PostEvent::SocialPhotoNeedsRelink { photo, provider, reason } => {
                self.later_photos.entry(photo).or_default().insert(provider, SocialStatus::NeedsRelink { reason });
            }
            PostEvent::PhotoAdded { photo, cross_post } => {
                self.photos += 1;
                if cross_post {
                    let pending = self.social.keys().map(|provider| (*provider, SocialStatus::Pending)).collect();
                    self.later_photos.insert(photo.key, pending);
                }
            }
            PostEvent::PostDeleted => self.deleted = true,
        }
    }
}

/// An outcome may be recorded where a provider is targeted and has not published.
fn require_open(status: Option<&SocialStatus>, provider: Provider) -> Result<(), DomainError> {
    match status {
        None => Err(DomainError::ProviderNotTargeted(provider)),
        Some(SocialStatus::Published { .. }) => Err(DomainError::AlreadyPublished(provider)),
        Some(_) => Ok(()),
    }
}

fn too_many_photos() -> DomainError {
    DomainError::Invalid(crate::values::ValueError {
        field: "photos",
        reason: format!("at most {MAX_PHOTOS} photos per post"),
    })
}
