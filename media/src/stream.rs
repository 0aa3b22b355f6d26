//! A photo put into the bucket while it is still arriving.
//!
//! S3's `PutObject` needs the object's length before its first byte. When a
//! request tells it in advance (see the API's multipart reader), the put
//! starts at once and each piece of the upload goes on to S3 as it arrives,
//! instead of after the whole file is in. The last byte is held back until
//! [`StreamingPut::complete`]: S3 stores an object only once its declared
//! length has arrived, so until then nothing is stored, and a put dropped
//! before it (the upload refused, the request gone, the length guessed
//! wrong) is abandoned with nothing stored.

use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use domain::values::PhotoKey;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::photo::{CheckedPhoto, PhotoKind};
use crate::s3::{S3Store, failed};
use crate::{MediaError, MediaStore};

/// Pieces of an upload queued for the put: beyond them, the upload waits
/// for S3 to take what it has.
const QUEUED_PIECES: usize = 2;

/// An upload on its way into the bucket; see the module's documentation.
pub struct StreamingPut {
    key: PhotoKey,
    kind: PhotoKind,
    length: u64,
    /// Bytes handed to the put so far, the held-back last one included.
    taken: u64,
    feed: Option<mpsc::Sender<Bytes>>,
    last: Option<Bytes>,
    put: Option<JoinHandle<Result<(), MediaError>>>,
    /// How the put ended, if S3 answered before it was completed.
    ended: Option<Result<(), MediaError>>,
    /// Whether its outcome is counted (`pointstream_uploads_streamed_total`).
    counted: bool,
}

impl MediaStore {
    /// Whether this store takes a photo's bytes before it knows them all (S3).
    pub fn streams(&self) -> bool {
        matches!(self, MediaStore::S3(_))
    }

    /// Starts putting a `kind` photo of exactly `length` bytes under a fresh
    /// key, where the store can take bytes before it knows them all (S3).
    pub fn stream(&self, kind: PhotoKind, length: u64) -> Option<StreamingPut> {
        match self {
            MediaStore::S3(store) if length > 0 => Some(StreamingPut::start(store, kind, length)),
            _ => None,
        }
    }
}

impl StreamingPut {
    fn start(store: &S3Store, kind: PhotoKind, length: u64) -> StreamingPut {
        let key = crate::photo::new_key(kind);
        let (feed, pieces) = mpsc::channel(QUEUED_PIECES);
        let request = store
            .client()
            .put_object()
            .bucket(store.bucket())
            .key(key.as_str())
            .content_type(kind.content_type())
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .body(ByteStream::from_body_1_x(Pieces { pieces, left: length }))
            .customize()
            // A body that waits (for the client's next piece, for the
            // mutation's checks) is no stalled server: the put ends when it
            // is dropped, or when S3 gives up on the idle connection.
            .config_override(
                aws_sdk_s3::config::Builder::new().stalled_stream_protection(StalledStreamProtectionConfig::disabled()),
            )
            // Unsigned, as every put of an upload: its SHA-256 is taken as it arrives.
            .disable_payload_signing();
        let name = key.as_str().to_string();
        let put = tokio::spawn(async move {
            request.send().await.map_err(|e| failed("put", &name, e))?;
            Ok(())
        });
        StreamingPut {
            key,
            kind,
            length,
            taken: 0,
            feed: Some(feed),
            last: None,
            put: Some(put),
            ended: None,
            counted: false,
        }
    }

    /// The key the photo goes under.
    pub fn key(&self) -> &PhotoKey {
        &self.key
    }

    /// Passes the next piece of the upload on; waits while S3 is behind.
    /// `false`: the put cannot take it (the upload runs past its length, or
    /// S3 answered already) and is to be dropped.
    pub async fn send(&mut self, piece: Bytes) -> bool {
        let taken = self.taken + piece.len() as u64;
        if taken > self.length || self.last.is_some() {
            return false;
        }
        self.taken = taken;
        let piece = if taken == self.length {
            let mut piece = piece;
            self.last = Some(piece.split_off(piece.len() - 1));
            piece
        } else {
            piece
        };
        self.pass(piece).await
    }

    /// Queues `piece` for the put, unless the put ends first (S3 answered
    /// before taking every byte, or stopped reading and then answered).
    async fn pass(&mut self, piece: Bytes) -> bool {
        let (Some(feed), Some(put)) = (&self.feed, &mut self.put) else { return false };
        if piece.is_empty() {
            return !put.is_finished();
        }
        let outcome = tokio::select! {
            sent = feed.send(piece) => Ok(sent.is_ok()),
            ended = put => Err(joined(ended)),
        };
        match outcome {
            Ok(sent) => sent,
            Err(ended) => {
                self.put = None;
                self.ended = Some(ended);
                false
            }
        }
    }

    /// Whether every byte of the upload has been passed on.
    pub fn is_whole(&self) -> bool {
        self.last.is_some()
    }

    /// Sends the held-back byte and waits for S3 to store the object: what
    /// the event records about `photo`, the checked upload whose bytes these
    /// were.
    pub async fn complete(mut self, photo: &CheckedPhoto) -> Result<domain::Photo, MediaError> {
        let stored = self.finish(photo).await;
        self.count(if stored.is_ok() { "stored" } else { "failed" });
        stored
    }

    async fn finish(&mut self, photo: &CheckedPhoto) -> Result<domain::Photo, MediaError> {
        let refused = |key: &PhotoKey, reason: &str| MediaError::Storage {
            operation: "put",
            key: key.as_str().to_string(),
            reason: reason.to_string(),
        };
        if photo.size != self.length || photo.kind != self.kind {
            return Err(refused(&self.key, "the upload is not the one this put was started for"));
        }
        let Some(last) = self.last.take() else {
            return Err(refused(&self.key, "the upload did not arrive whole"));
        };
        let sent = self.pass(last).await;
        // The body ends here: after its last byte, or short of it.
        self.feed = None;
        let ended = match (self.ended.take(), self.put.take()) {
            (Some(ended), _) => ended,
            (None, Some(put)) => joined(put.await),
            (None, None) => Err(refused(&self.key, "the put had ended")),
        };
        ended?;
        if !sent {
            return Err(refused(&self.key, "S3 answered before the last byte"));
        }
        Ok(domain::Photo {
            key: self.key.clone(),
            content_type: self.kind.content_type().to_string(),
            size: self.length,
            sha256: photo.sha256.clone(),
        })
    }

    /// Counts the put's outcome, once.
    fn count(&mut self, outcome: &'static str) {
        if !std::mem::replace(&mut self.counted, true) {
            metrics::counter!("pointstream_uploads_streamed_total", "outcome" => outcome).increment(1);
        }
    }
}

fn joined(put: Result<Result<(), MediaError>, tokio::task::JoinError>) -> Result<(), MediaError> {
    put.map_err(|e| MediaError::Io(std::io::Error::other(format!("the put's task: {e}"))))?
}

impl Drop for StreamingPut {
    fn drop(&mut self) {
        if let Some(put) = self.put.take() {
            // Short of its length, the body ends in an error: S3 stores nothing.
            self.feed = None;
            put.abort();
        }
        self.count("abandoned");
    }
}

/// The put's body: the pieces as they come, an error if they stop short.
struct Pieces {
    pieces: mpsc::Receiver<Bytes>,
    left: u64,
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(piece)) => {
                self.left = self.left.saturating_sub(piece.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the upload was abandoned before its last byte",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
