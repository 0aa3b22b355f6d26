//! Photos in a directory: the embedded default. Objects are written to a
//! hidden part file and renamed into place, so a reader never sees half a
//! photo and a crash leaves only part files, which `media gc` sweeps. They
//! are served by the API at `/media/{key}` behind URLs signed with
//! [`UrlSigner`] that expire like S3's presigned ones.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::photo::{CheckedPhoto, PhotoKind};
use crate::{Blob, MediaError, StoredObject};

/// The directory photos are kept under, inside the store's root.
const PHOTOS: &str = "photos";

/// Signs and checks the filesystem store's photo URLs (HMAC-SHA256 of the
/// key and the expiry).
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

/// Why a photo URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Its expiry has passed.
    #[error("the URL has expired")]
    Expired,
    /// The signature does not match.
    #[error("the URL's signature is not valid")]
    BadSignature,
}

impl UrlSigner {
    /// A signer keyed by `secret` (derived, so the same secret can sign other things).
    pub fn new(secret: &[u8]) -> UrlSigner {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(b"pointstream photo urls");
        UrlSigner { key: mac.finalize().into_bytes().to_vec() }
    }

    fn mac(&self, key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// Seconds from `now` until `expires` (0 once passed).
    pub fn remaining(expires: u64, now: SystemTime) -> u64 {
        expires.saturating_sub(unix_seconds(now))
    }

    /// The query string that grants access to `key` until `expires` (Unix seconds).
    pub fn sign(&self, key: &str, expires: u64) -> String {
        format!("expires={expires}&signature={}", hex::encode(self.mac(key, expires).finalize().into_bytes()))
    }

    /// Whether `signature` grants access to `key` at `now`.
    pub fn verify(&self, key: &str, expires: u64, signature: &str, now: SystemTime) -> Result<(), UrlRefusal> {
        let signature = hex::decode(signature).map_err(|_| UrlRefusal::BadSignature)?;
        self.mac(key, expires).verify_slice(&signature).map_err(|_| UrlRefusal::BadSignature)?;
        if unix_seconds(now) >= expires {
            return Err(UrlRefusal::Expired);
        }
        Ok(())
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Photos in a directory.
#[derive(Clone)]
pub struct FsStore {
    root: PathBuf,
    signer: UrlSigner,
    base_url: String,
}

/// A photo opened for serving.
pub struct Opened {
    /// The file.
    pub file: tokio::fs::File,
    /// Its size.
    pub size: u64,
    /// Its content type.
    pub content_type: &'static str,
    /// Seconds its URL stays good: how long it may be cached.
    pub fresh_for: u64,
}

impl FsStore {
    /// Photos under `root`, served at `{base_url}/media/{key}`.
    pub fn new(root: impl Into<PathBuf>, signer: UrlSigner, base_url: impl Into<String>) -> FsStore {
        FsStore { root: root.into(), signer, base_url: base_url.into().trim_end_matches('/').to_string() }
    }

    /// The same store, its URLs pointing at `base_url`.
    pub fn serving_at(&self, base_url: impl Into<String>) -> FsStore {
        FsStore::new(self.root.clone(), self.signer.clone(), base_url)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, refusing anything outside the photos directory.
    fn path(&self, key: &str) -> Result<PathBuf, MediaError> {
        let valid = domain::values::PhotoKey::parse(key).is_ok() && key.starts_with("photos/");
        if !valid {
            return Err(MediaError::NotFound(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    pub(crate) async fn put(&self, key: &str, photo: CheckedPhoto) -> Result<(), MediaError> {
        let target = self.path(key)?;
        let part = self.root.join(PHOTOS).join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // From the start: one upload may stand at two places of a
            // request, as clones of one file sharing its position.
            let mut source = photo.file;
            std::io::Seek::rewind(&mut source)?;
            let written = std::fs::File::create(&part).and_then(|mut out| {
                std::io::copy(&mut source, &mut out)?;
                out.sync_all()
            });
            match written.and_then(|()| std::fs::rename(&part, &target)) {
                Err(err) => {
                    let _ = std::fs::remove_file(&part);
                    Err(err)
                }
                ok => ok,
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Blob, MediaError> {
        let path = self.path(key)?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| not_found_or(key, e))?;
        Ok(Blob { content_type: content_type_of(key).to_string(), bytes: bytes.into() })
    }

    /// Opens `key` for serving, if the URL's `expires` and `signature` grant it.
    pub async fn open(&self, key: &str, expires: u64, signature: &str) -> Result<Opened, OpenError> {
        self.signer.verify(key, expires, signature, SystemTime::now())?;
        let path = self.path(key).map_err(|_| OpenError::NotFound)?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| OpenError::NotFound)?;
        let size = file.metadata().await.map_err(|_| OpenError::NotFound)?.len();
        let fresh_for = UrlSigner::remaining(expires, SystemTime::now());
        Ok(Opened { file, size, content_type: content_type_of(key), fresh_for })
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), MediaError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<StoredObject>, MediaError> {
        let dir = self.root.join(PHOTOS);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut objects = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let metadata = entry.metadata().await?;
            if !metadata.is_file() {
                continue;
            }
            objects.push(StoredObject {
                key: format!("{PHOTOS}/{}", entry.file_name().to_string_lossy()),
                size: metadata.len(),
                modified: metadata.modified()?,
            });
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    pub(crate) fn url(&self, key: &str, ttl: Duration) -> String {
        let expires = unix_seconds(SystemTime::now() + ttl);
        format!("{}/media/{key}?{}", self.base_url, self.signer.sign(key, expires))
    }

    pub(crate) async fn check(&self) -> Result<(), MediaError> {
        tokio::fs::create_dir_all(self.root.join(PHOTOS)).await?;
        Ok(())
    }
}

/// Why a photo is not served.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is expired or forged.
    #[error(transparent)]
    Refused(#[from] UrlRefusal),
    /// No such photo.
    #[error("no such photo")]
    NotFound,
}

fn content_type_of(key: &str) -> &'static str {
    PhotoKind::of_key(key).map(PhotoKind::content_type).unwrap_or("application/octet-stream")
}

fn not_found_or(key: &str, err: std::io::Error) -> MediaError {
    if err.kind() == std::io::ErrorKind::NotFound { MediaError::NotFound(key.to_string()) } else { err.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_url_is_good_until_it_expires_and_only_for_its_key() {
        let signer = UrlSigner::new(b"secret");
        let now = SystemTime::now();
        let expires = unix_seconds(now) + 60;
        let query = signer.sign("photos/a.jpg", expires);
        let signature = query.rsplit_once('=').unwrap().1;
        assert_eq!(signer.verify("photos/a.jpg", expires, signature, now), Ok(()));
        assert_eq!(
            signer.verify("photos/a.jpg", expires, signature, now + Duration::from_secs(61)),
            Err(UrlRefusal::Expired)
        );
        assert_eq!(signer.verify("photos/b.jpg", expires, signature, now), Err(UrlRefusal::BadSignature));
        assert_eq!(signer.verify("photos/a.jpg", expires + 1, signature, now), Err(UrlRefusal::BadSignature));
        assert_eq!(
            UrlSigner::new(b"other").verify("photos/a.jpg", expires, signature, now),
            Err(UrlRefusal::BadSignature)
        );
    }
}
