//! Upload checks: what a file is, judged by its first bytes (never by the
//! client's filename or content type), how big it is and its SHA-256, all in
//! one pass over the file.

use std::io::{Read, Seek};

use domain::values::PhotoKey;
use sha2::{Digest, Sha256};

/// The photo formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoKind {
    /// `image/jpeg`
    Jpeg,
    /// `image/png`
    Png,
    /// `image/webp`
    Webp,
    /// `image/gif`
    Gif,
}

impl PhotoKind {
    const ALL: [PhotoKind; 4] = [PhotoKind::Jpeg, PhotoKind::Png, PhotoKind::Webp, PhotoKind::Gif];

    /// The MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            PhotoKind::Jpeg => "image/jpeg",
            PhotoKind::Png => "image/png",
            PhotoKind::Webp => "image/webp",
            PhotoKind::Gif => "image/gif",
        }
    }

    /// The file extension keys end with.
    pub fn extension(self) -> &'static str {
        match self {
            PhotoKind::Jpeg => "jpg",
            PhotoKind::Png => "png",
            PhotoKind::Webp => "webp",
            PhotoKind::Gif => "gif",
        }
    }

    /// What the content starting with `head` is, if it is an accepted photo.
    pub fn sniff(head: &[u8]) -> Option<PhotoKind> {
        let found = infer::get(head)?;
        PhotoKind::ALL.into_iter().find(|kind| kind.content_type() == found.mime_type())
    }

    /// The kind a generated key names by its extension.
    pub fn of_key(key: &str) -> Option<PhotoKind> {
        let extension = key.rsplit_once('.')?.1;
        PhotoKind::ALL.into_iter().find(|kind| kind.extension() == extension)
    }
}

/// Why an upload was refused; nothing is stored for it.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Zero bytes.
    #[error("the file is empty")]
    Empty,
    /// Over the configured limit.
    #[error("the file has {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not a JPEG, PNG, WebP or GIF by its content.
    #[error("the file is not a JPEG, PNG, WebP or GIF image{}", found.as_deref().map(|f| format!(" (it looks like {f})")).unwrap_or_default())]
    NotAPhoto {
        /// What it looks like instead, when recognisable.
        found: Option<String>,
    },
    /// The uploaded file could not be read.
    #[error("the upload could not be read: {0}")]
    Unreadable(#[from] std::io::Error),
}

/// An upload that passed the checks, ready to store.
#[derive(Debug)]
pub struct CheckedPhoto {
    /// Its format.
    pub kind: PhotoKind,
    /// Its size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its content.
    pub sha256: String,
    /// The content, rewound to its start.
    pub file: std::fs::File,
    /// Whether `file` is held in memory (stores then read it whole, without
    /// waiting on a disk) rather than on disk (stores stream it).
    pub in_memory: bool,
}

/// What one pass over an upload's bytes learns: its size, its SHA-256 and
/// its first bytes. Fed while the upload arrives, or by [`check`] reading the
/// file afterwards.
#[derive(Clone, Default)]
pub struct Scan {
    size: u64,
    hasher: Sha256,
    head: Vec<u8>,
}

/// The bytes looked at to tell the format.
pub const HEAD: usize = 64;

impl Scan {
    /// Takes in the next bytes of the upload.
    pub fn update(&mut self, bytes: &[u8]) {
        if self.head.len() < HEAD {
            let take = Ord::min(HEAD - self.head.len(), bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// The format the upload's first bytes show, once [`HEAD`] of them are
    /// in (as many as [`Scan::finish`] looks at); `None` before, and for
    /// content that is no photo.
    pub fn kind(&self) -> Option<PhotoKind> {
        (self.head.len() == HEAD).then(|| PhotoKind::sniff(&self.head)).flatten()
    }

    /// The bytes taken in so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The verdict on `file`, whose bytes this scan took in: not empty, at
    /// most `max_bytes`, a photo by its content.
    pub fn finish(self, file: std::fs::File, max_bytes: u64) -> Result<CheckedPhoto, Rejection> {
        let size = self.size;
        if size == 0 {
            return Err(Rejection::Empty);
        }
        if size > max_bytes {
            return Err(Rejection::TooLarge { size, limit: max_bytes });
        }
        let kind = PhotoKind::sniff(&self.head)
            .ok_or_else(|| Rejection::NotAPhoto { found: infer::get(&self.head).map(|t| t.mime_type().to_string()) })?;
        Ok(CheckedPhoto { kind, size, sha256: hex::encode(self.hasher.finalize()), file, in_memory: false })
    }
}

/// Checks an uploaded file: not empty, at most `max_bytes`, a photo by its
/// content. Reads the file once (on a blocking thread) to hash it; an upload
/// scanned as it arrived needs only [`Scan::finish`].
pub async fn check(file: std::fs::File, max_bytes: u64) -> Result<CheckedPhoto, Rejection> {
    tokio::task::spawn_blocking(move || check_blocking(file, max_bytes))
        .await
        .map_err(|e| Rejection::Unreadable(std::io::Error::other(e)))?
}

fn check_blocking(mut file: std::fs::File, max_bytes: u64) -> Result<CheckedPhoto, Rejection> {
    let size = file.metadata()?.len();
    if size > max_bytes {
        return Err(Rejection::TooLarge { size, limit: max_bytes });
    }
    file.rewind()?;
    let mut scan = Scan::default();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        scan.update(&buffer[..read]);
    }
    file.rewind()?;
    scan.finish(file, max_bytes)
}

/// A fresh key for a photo: `photos/<random>.<ext>`. Each upload gets its
/// own, so removing one post's photo never touches another's.
pub fn new_key(kind: PhotoKind) -> PhotoKey {
    let raw = format!("photos/{}.{}", uuid::Uuid::new_v4().simple(), kind.extension());
    PhotoKey::parse(raw.as_str()).unwrap_or_else(|_| unreachable!("generated keys are valid: {raw}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff\xd9";

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let mut file = tempfile();
        file.write_all(bytes).unwrap();
        file
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("pointstream-photo-{}", uuid::Uuid::new_v4()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[tokio::test]
    async fn photos_are_known_by_their_first_bytes() {
        let png = check(file_of(PNG), 1 << 20).await.unwrap();
        assert_eq!(png.kind, PhotoKind::Png);
        assert_eq!(png.size, PNG.len() as u64);
        assert_eq!(png.sha256, hex::encode(Sha256::digest(PNG)));
        assert_eq!(check(file_of(JPEG), 1 << 20).await.unwrap().kind, PhotoKind::Jpeg);
        assert_eq!(PhotoKind::sniff(b"GIF89a\x01\0\x01\0"), Some(PhotoKind::Gif));
        assert_eq!(PhotoKind::sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some(PhotoKind::Webp));
    }

    #[tokio::test]
    async fn text_empty_and_oversized_files_are_refused() {
        let text = check(file_of(b"just some text, named photo.jpg"), 1 << 20).await;
        assert!(matches!(text, Err(Rejection::NotAPhoto { .. })), "{text:?}");
        let pdf = check(file_of(b"%PDF-1.7\n..."), 1 << 20).await;
        assert!(matches!(pdf, Err(Rejection::NotAPhoto { found: Some(_) })), "{pdf:?}");
        assert!(matches!(check(file_of(b""), 1 << 20).await, Err(Rejection::Empty)));
        let big = check(file_of(PNG), 10).await;
        assert!(matches!(big, Err(Rejection::TooLarge { limit: 10, .. })), "{big:?}");
    }

    #[test]
    fn generated_keys_are_valid_unique_and_name_their_kind() {
        let (a, b) = (new_key(PhotoKind::Webp), new_key(PhotoKind::Webp));
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("photos/") && a.as_str().ends_with(".webp"));
        assert_eq!(PhotoKind::of_key(a.as_str()), Some(PhotoKind::Webp));
    }
}
