//! Photo storage: a blob store with two implementations behind one type,
//! [`MediaStore`]: S3 (any S3-protocol service, through aws-sdk-s3) and a
//! directory on the local filesystem (the embedded default).
//!
//! Uploads are checked by content before anything is stored ([`photo`]),
//! stored under a generated key with their real content type, and read back
//! through expiring URLs: presigned GET URLs for S3, URLs signed by the API's
//! own key for the filesystem ([`fs::UrlSigner`]). [`gc`] removes objects no
//! live post refers to.
//!
//! ```no_run
//! # async fn example(file: std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
//! use pointstream_media::{FsStore, MediaStore, UrlSigner, photo};
//! let store = MediaStore::Fs(FsStore::new("media", UrlSigner::new(b"secret"), "http://127.0.0.1:8080"));
//! let checked = photo::check(file, 10 << 20).await?;
//! let key = photo::new_key(checked.kind);
//! let stored = store.put(&key, checked).await?;
//! let url = store.url(stored.key.as_str(), std::time::Duration::from_secs(900)).await?;
//! # Ok(()) }
//! ```

pub mod digests;
pub mod fs;
pub mod gc;
pub mod photo;
pub mod s3;
pub mod scratch;
pub mod stream;

use std::time::{Duration, SystemTime};

use domain::values::PhotoKey;

pub use crate::fs::{FsStore, UrlSigner};
pub use crate::photo::{CheckedPhoto, PhotoKind, Rejection, Scan};
pub use crate::s3::{S3Config, S3Store};
pub use crate::stream::StreamingPut;

/// Where photos live.
#[derive(Clone)]
pub enum MediaStore {
    /// An S3 bucket.
    S3(S3Store),
    /// A directory.
    Fs(FsStore),
}

/// A stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// A photo as read back.
#[derive(Debug, Clone)]
pub struct Blob {
    /// The content type it was stored with.
    pub content_type: String,
    /// The bytes (cheap to clone).
    pub bytes: bytes::Bytes,
}

/// What the photo store failed at.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The storage service refused or failed.
    #[error("photo storage: {operation} {key}: {reason}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// On which key (or bucket).
        key: String,
        /// What the service said.
        reason: String,
    },
    /// The object does not exist.
    #[error("photo {0} not found")]
    NotFound(String),
    /// A local file operation failed.
    #[error("photo storage: {0}")]
    Io(#[from] std::io::Error),
    /// Reading the log failed (garbage collection).
    #[error("reading the log: {0}")]
    Log(#[from] eventstore::EventStoreError),
}

impl MediaStore {
    /// Which kind of store this is: `s3` or `filesystem`.
    pub fn kind(&self) -> &'static str {
        match self {
            MediaStore::S3(_) => "s3",
            MediaStore::Fs(_) => "filesystem",
        }
    }

    /// Stores a checked photo under `key` with its content type, and returns
    /// what the event records about it.
    pub async fn put(&self, key: &PhotoKey, photo: CheckedPhoto) -> Result<domain::Photo, MediaError> {
        let record = domain::Photo {
            key: key.clone(),
            content_type: photo.kind.content_type().to_string(),
            size: photo.size,
            sha256: photo.sha256.clone(),
        };
        match self {
            MediaStore::S3(store) => store.put(key.as_str(), photo).await?,
            MediaStore::Fs(store) => store.put(key.as_str(), photo).await?,
        }
        Ok(record)
    }

    /// Reads a photo back whole (photos are small: the upload limit bounds them).
    pub async fn get(&self, key: &str) -> Result<Blob, MediaError> {
        match self {
            MediaStore::S3(store) => store.get(key).await,
            MediaStore::Fs(store) => store.get(key).await,
        }
    }

    /// Removes the objects; a key that is already gone is not an error.
    pub async fn delete(&self, keys: &[String]) -> Result<(), MediaError> {
        for key in keys {
            match self {
                MediaStore::S3(store) => store.delete(key).await?,
                MediaStore::Fs(store) => store.delete(key).await?,
            }
        }
        Ok(())
    }

    /// Removes what a failed command left behind. Failures are logged, not
    /// returned: `pointstream media gc` sweeps whatever remains.
    pub async fn discard(&self, photos: &[domain::Photo]) {
        let keys: Vec<String> = photos.iter().map(|p| p.key.as_str().to_string()).collect();
        if let Err(err) = self.delete(&keys).await {
            tracing::warn!(error = %err, ?keys, "could not remove uploaded photos; `pointstream media gc` will");
        }
    }

    /// Every stored photo object (keys under `photos/`; nothing else in a
    /// shared bucket is touched).
    pub async fn list(&self) -> Result<Vec<StoredObject>, MediaError> {
        match self {
            MediaStore::S3(store) => store.list().await,
            MediaStore::Fs(store) => store.list().await,
        }
    }

    /// A URL that serves the photo to anyone holding it until `ttl` has passed.
    pub async fn url(&self, key: &str, ttl: Duration) -> Result<String, MediaError> {
        match self {
            MediaStore::S3(store) => store.presign(key, ttl).await,
            MediaStore::Fs(store) => Ok(store.url(key, ttl)),
        }
    }

    /// Whether the store can be reached (`/readyz`).
    pub async fn check(&self) -> Result<(), MediaError> {
        match self {
            MediaStore::S3(store) => store.check().await,
            MediaStore::Fs(store) => store.check().await,
        }
    }
}
