//! Where signed log digests are published: objects under a prefix of an S3
//! bucket (written only if absent, and under S3 Object Lock in compliance
//! mode when a retention is configured: then not even the bucket's owner can
//! change or delete them until it ends), or files in a directory (written
//! once, read-only) for the embedded default. Each digest is
//! `{prefix}{tree size, 20 digits}.json`, the document verifiers take.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use eventstore::merkle::{Digest, Publish};

use crate::s3::S3Store;

/// Where digests go.
#[derive(Clone)]
pub enum DigestPublisher {
    /// A prefix of an S3 bucket.
    S3 {
        store: S3Store,
        prefix: String,
        /// Object Lock retention (compliance mode); `None`: no lock asked for.
        retain: Option<Duration>,
    },
    /// A directory.
    Dir(PathBuf),
}

/// The name of a digest's document.
pub fn digest_name(digest: &Digest) -> String {
    format!("{:020}.json", digest.tree_size)
}

/// A digest's document: its JSON and a newline.
pub fn digest_document(digest: &Digest) -> Result<Vec<u8>, String> {
    let mut json = serde_json::to_vec(digest).map_err(|err| err.to_string())?;
    json.push(b'\n');
    Ok(json)
}

#[async_trait::async_trait]
impl Publish for DigestPublisher {
    async fn publish(&self, digest: &Digest) -> Result<String, String> {
        let document = digest_document(digest)?;
        match self {
            DigestPublisher::S3 { store, prefix, retain } => {
                let key = format!("{prefix}{}", digest_name(digest));
                let mut put = store
                    .client()
                    .put_object()
                    .bucket(store.bucket())
                    .key(&key)
                    .content_type("application/json")
                    // Never replaces what is there: a published digest stays.
                    .if_none_match("*")
                    .body(ByteStream::from(document.clone()));
                if let Some(retain) = retain {
                    let until = eventstore::now_us() / 1_000 + retain.as_millis() as i64;
                    put = put
                        .object_lock_mode(ObjectLockMode::Compliance)
                        .object_lock_retain_until_date(DateTime::from_millis(until))
                        .checksum_algorithm(ChecksumAlgorithm::Sha256);
                }
                match put.send().await {
                    Ok(_) => Ok(format!("s3://{}/{key}", store.bucket())),
                    // Already there (a previous attempt's answer was lost):
                    // published if it is this very document.
                    Err(err) if err.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                        let existing =
                            crate::MediaStore::S3(store.clone()).get(&key).await.map_err(|e| e.to_string())?;
                        if existing.bytes.as_ref() == document.as_slice() {
                            Ok(format!("s3://{}/{key}", store.bucket()))
                        } else {
                            Err(format!("s3://{}/{key} holds another digest of that size", store.bucket()))
                        }
                    }
                    Err(err) => Err(aws_sdk_s3::error::DisplayErrorContext(err).to_string()),
                }
            }
            DigestPublisher::Dir(dir) => {
                let path = dir.join(digest_name(digest));
                let document_for_write = document.clone();
                let shown = path.display().to_string();
                tokio::task::spawn_blocking(move || write_once(&path, &document_for_write))
                    .await
                    .map_err(|err| err.to_string())??;
                Ok(shown)
            }
        }
    }
}

/// Writes `bytes` to `path` unless it exists; read-only once written. The
/// file appears whole (a hard link of a finished temporary file), and a link
/// never replaces: of two writers of one name, the second is told.
fn write_once(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().ok_or("a digest path has a directory")?;
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let same_or_refused = |path: &std::path::Path| match std::fs::read(path) {
        Ok(existing) if existing == bytes => Ok(()),
        Ok(_) => Err(format!("{} holds another digest of that size", path.display())),
        Err(err) => Err(format!("{}: {err}", path.display())),
    };
    if path.exists() {
        return same_or_refused(path);
    }
    let temporary = dir.join(format!(".{}.{}.partial", uuid::Uuid::new_v4().simple(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        let mut permissions = file.metadata()?.permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&temporary, permissions)?;
        std::fs::hard_link(&temporary, path)
    })();
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => same_or_refused(path),
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// Every digest published in `dir`, smallest first (for auditors and tests).
pub fn read_dir(dir: &std::path::Path) -> Result<Vec<Digest>, String> {
    let mut digests = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|err| format!("{}: {err}", dir.display()))? {
        let path = entry.map_err(|err| err.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path).map_err(|err| format!("{}: {err}", path.display()))?;
            digests.push(serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?);
        }
    }
    digests.sort_by_key(|digest: &Digest| digest.tree_size);
    Ok(digests)
}
