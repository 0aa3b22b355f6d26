//! GraphQL multipart requests (the upload spec: an `operations` part, a `map`
//! part, then the files), read within the limits as the bytes arrive.
//!
//! async-graphql has a reader of its own, but it takes the body 2 KiB at a
//! time, copying each piece and writing it to the file with its own system
//! call; here the body's chunks go to multer as they come off the socket and
//! each file is written through a 256 KiB buffer. Every limit is checked
//! before the part that breaks it is stored: a part beyond the file count is
//! refused on its headers, before a file exists for it.
//!
//! A file is held in memory (an anonymous memory file) while it is within
//! `upload_memory_bytes` and the server-wide [`UploadMemory`] budget grants
//! its bytes; from the first byte that does not fit it goes to a temporary
//! file on disk. Small photos so never touch the disk, and memory stays
//! within the budget however many uploads arrive at once. A request that
//! declares a body longer than that bound writes its files to disk
//! from their first byte instead of spilling part way.
//!
//! A request's only file goes on to S3 while it arrives ([`StreamingPut`])
//! when the request declares its length: if the file is the body's last
//! part, as clients send it, that length less the bytes before the file's
//! data and the closing delimiter is the file's own, which S3 needs before
//! the first byte. The put is only completed, by the mutation that records
//! the photo, once the file has arrived at exactly that length and passed
//! its checks; otherwise it is abandoned and S3 stores nothing. The file is
//! still kept as above, so a put that could not be completed is made again
//! from it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::{BatchRequest, Request, Upload, UploadValue};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use media::{MediaStore, Scan, StreamingPut};
use multer::{Constraints, Multipart, SizeLimit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::schema::Limits;

/// Bytes buffered before a file's bytes are written out.
const WRITE_BUFFER: usize = 256 << 10;

/// Why a multipart request was refused.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    /// A file is over `max_upload_bytes`.
    #[error("a file is over the limit of {0} bytes")]
    FileTooLarge(usize),
    /// The `operations` or `map` part is over `max_body_bytes`.
    #[error("the {part} part is over the limit of {limit} bytes")]
    PartTooLarge {
        /// Which part.
        part: String,
        /// The limit.
        limit: usize,
    },
    /// The whole body is over what the limits allow together.
    #[error("the request body is over the limit of {0} bytes")]
    BodyTooLarge(u64),
    /// More files (mapped or not) than `max_uploads`.
    #[error("at most {0} files per request")]
    TooManyFiles(usize),
    /// Not a well-formed multipart body, or a part missing or unreadable.
    #[error("the multipart body could not be read: {0}")]
    Malformed(String),
}

impl MultipartError {
    /// Whether the refusal is about size (HTTP 413) rather than form (400).
    pub fn is_size(&self) -> bool {
        matches!(
            self,
            MultipartError::FileTooLarge(_) | MultipartError::PartTooLarge { .. } | MultipartError::BodyTooLarge(_)
        )
    }
}

fn malformed(err: impl std::fmt::Display) -> MultipartError {
    MultipartError::Malformed(err.to_string())
}

/// The boundary a `multipart/form-data` content type names.
pub fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// The largest body the limits allow: every file with its part headers, and
/// the operations and map beside them.
pub fn max_body(limits: &Limits) -> u64 {
    (limits.max_upload_bytes as u64).saturating_add(4 << 10).saturating_mul(limits.max_uploads as u64)
        + limits.max_body_bytes as u64
}

/// The memory that uploads held in memory may take together, across every
/// request of the server, and the bound on one request's or one file's.
#[derive(Clone)]
pub struct UploadMemory {
    budget: Arc<Semaphore>,
    bound: usize,
}

impl UploadMemory {
    /// The budget `limits` set: `upload_memory_total` in all, and
    /// `upload_memory_bytes` for a request or a file (0: none is held).
    pub fn new(limits: &Limits) -> UploadMemory {
        let total = limits.upload_memory_total.min(Semaphore::MAX_PERMITS);
        UploadMemory { budget: Arc::new(Semaphore::new(total)), bound: limits.upload_memory_bytes }
    }

    /// `bytes` more of the budget, if it has them now.
    fn grant(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).ok()?;
        self.budget.clone().try_acquire_many_owned(bytes).ok()
    }

    /// Whether the files of a request that declares `declared` bytes may be
    /// held in memory at all.
    fn admits(&self, declared: Option<u64>) -> bool {
        self.bound > 0 && declared.is_none_or(|length| length <= self.bound as u64)
    }

    /// The bytes of the budget no upload holds.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.budget.available_permits()
    }
}

/// How one upload arrived: its scan, while it is held in memory the share
/// of the budget its bytes take, and the put that took its bytes on the way
/// in, if one did.
#[derive(Clone)]
pub struct Arrival {
    scan: Scan,
    held: Option<Arc<OwnedSemaphorePermit>>,
    streamed: Arc<Mutex<Option<StreamingPut>>>,
}

impl Arrival {
    /// The verdict on the upload's `file`, whose bytes the scan took in
    /// ([`Scan::finish`]), knowing where the file is.
    pub fn finish(self, file: File, max_bytes: u64) -> Result<media::CheckedPhoto, media::Rejection> {
        let in_memory = self.in_memory();
        self.scan.finish(file, max_bytes).map(|photo| media::CheckedPhoto { in_memory, ..photo })
    }

    /// Whether the upload's file is held in memory rather than on disk.
    pub fn in_memory(&self) -> bool {
        self.held.is_some()
    }

    /// The put that took every byte of the upload as it arrived, waiting to
    /// be completed; the first use of an upload mapped to several takes it.
    pub fn streamed(&self) -> Option<StreamingPut> {
        self.streamed.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The opening bytes of a body, recorded as they go to the parser until the
/// first file's headers are read: where its data starts is read off them.
#[derive(Clone)]
struct Opening(Arc<Mutex<Option<Vec<u8>>>>);

impl Opening {
    /// Bytes beyond which nothing is recorded: the operations and map parts
    /// at their limits, and headers.
    fn bound(limits: &Limits) -> usize {
        limits.max_body_bytes.saturating_mul(2).saturating_add(16 << 10)
    }

    fn record(&self, chunk: &[u8], bound: usize) {
        if let Some(bytes) = self.0.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            let room = bound.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
    }

    /// What was recorded; nothing more is.
    fn close(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default()
    }
}

/// Where the data of part `part` (counted from 0) starts in a multipart body
/// that opens with `opening`: after the part's delimiter line and headers.
fn data_start(opening: &[u8], boundary: &str, part: usize) -> Option<usize> {
    let delimiter = format!("--{boundary}");
    let find = |from: usize, needle: &[u8]| {
        opening.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|at| from + at)
    };
    let (mut seen, mut from) = (0, 0);
    loop {
        let at = find(from, delimiter.as_bytes())?;
        // A delimiter opens the body or a line; no part holds CRLF and a delimiter.
        if at == 0 || opening[..at].ends_with(b"\r\n") {
            if seen == part {
                return find(at, b"\r\n\r\n").map(|end| end + 4);
            }
            seen += 1;
        }
        from = at + delimiter.len();
    }
}

/// The length of a file whose data starts at `start` if it is the last part
/// of a body of `declared` bytes: what is left before the closing delimiter
/// (`CRLF--boundary--CRLF`).
fn last_part_length(declared: u64, start: usize, boundary: &str) -> Option<u64> {
    declared.checked_sub(start as u64 + boundary.len() as u64 + 8).filter(|length| *length > 0)
}

/// Whether a file goes on to the store while it arrives.
enum Onward<'a> {
    /// It does not.
    Off,
    /// It may, once its first bytes show a photo: the store, the expected
    /// length, and the pieces that came until then.
    Waiting { media: &'a MediaStore, length: u64, pieces: Vec<Bytes> },
    /// It does.
    Going(StreamingPut),
}

impl Onward<'_> {
    /// Passes the file's next piece on (or keeps it until the kind is known).
    async fn take(&mut self, piece: &Bytes, scan: &Scan) {
        match self {
            Onward::Off => {}
            Onward::Waiting { media, length, pieces } => {
                pieces.push(piece.clone());
                let started = match scan.kind() {
                    Some(kind) => media.stream(kind, *length),
                    None if scan.size() < media::photo::HEAD as u64 => return,
                    // No photo: it will be refused.
                    None => None,
                };
                let pieces = std::mem::take(pieces);
                *self = Onward::Off;
                if let Some(mut put) = started {
                    for piece in pieces {
                        if !put.send(piece).await {
                            return;
                        }
                    }
                    *self = Onward::Going(put);
                }
            }
            Onward::Going(put) => {
                if !put.send(piece.clone()).await {
                    // Longer than expected, or the put failed: abandoned.
                    *self = Onward::Off;
                }
            }
        }
    }

    /// The put, if it took the whole file.
    fn finish(self) -> Option<StreamingPut> {
        match self {
            Onward::Going(put) if put.is_whole() => Some(put),
            _ => None,
        }
    }
}

/// How each upload of a request was scanned as it arrived (its size,
/// SHA-256 and first bytes), by upload index: its check needs no second read.
/// Request data of every multipart request; the memory its uploads hold goes
/// back to the budget when the request ends.
pub struct Scanned(Vec<Arrival>);

impl Scanned {
    /// How `upload` arrived, if it came through this reader.
    pub fn of(&self, upload: &Upload) -> Option<Arrival> {
        self.0.get(upload.0).cloned()
    }
}

/// An anonymous file in memory: no disk, gone with its last handle.
#[cfg(target_os = "linux")]
fn memory_file() -> std::io::Result<File> {
    Ok(File::from(rustix::fs::memfd_create("pointstream-upload", rustix::fs::MemfdFlags::CLOEXEC)?))
}

/// An anonymous file: where memory files are not to be had, a temporary one.
#[cfg(not(target_os = "linux"))]
fn memory_file() -> std::io::Result<File> {
    tempfile::tempfile()
}

/// Where a file's bytes go as they arrive: memory while the file fits the
/// bound and the budget grants its bytes, else the disk.
struct Spool<'a> {
    memory: &'a UploadMemory,
    writer: BufWriter<File>,
    /// The budget this file's bytes hold, one permit a byte; `None` once it
    /// is on disk.
    held: Option<OwnedSemaphorePermit>,
}

impl<'a> Spool<'a> {
    /// A spool for a file of a request that declares `declared` bytes.
    fn new(memory: &'a UploadMemory, declared: Option<u64>) -> std::io::Result<Spool<'a>> {
        let (file, held) = match memory.admits(declared).then(|| memory.grant(0)).flatten() {
            Some(held) => (memory_file()?, Some(held)),
            None => (tempfile::tempfile()?, None),
        };
        Ok(Spool { memory, writer: BufWriter::with_capacity(WRITE_BUFFER, file), held })
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if let Some(held) = &mut self.held {
            let fits = held.num_permits() + chunk.len() <= self.memory.bound
                && self.memory.grant(chunk.len()).map(|more| held.merge(more)).is_some();
            if !fits {
                self.spill()?;
            }
        }
        self.writer.write_all(chunk)
    }

    /// Moves what is in memory to a temporary file, which takes the rest,
    /// and gives the memory back.
    fn spill(&mut self) -> std::io::Result<()> {
        let mut disk = tempfile::tempfile()?;
        let memory = std::mem::replace(&mut self.writer, BufWriter::with_capacity(WRITE_BUFFER, disk.try_clone()?));
        let mut memory = memory.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        memory.rewind()?;
        std::io::copy(&mut memory, &mut disk)?;
        self.held = None;
        Ok(())
    }

    /// The file, rewound, and the budget it holds if it is in memory.
    fn finish(self) -> std::io::Result<(File, Option<OwnedSemaphorePermit>)> {
        let mut file = self.writer.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        file.rewind()?;
        metrics::counter!("pointstream_uploads_received_total", "held" => if self.held.is_some() { "memory" } else { "disk" })
            .increment(1);
        Ok((file, self.held))
    }
}

/// Reads the multipart `body` into a GraphQL request (one operation) whose
/// uploads are memory or temporary files, scanned as they arrive
/// ([`Scanned`]), and a request's only file also put into `media` on the way
/// where it can be. `declared` is the body's length, when the request
/// declares it.
pub async fn receive<S, E>(
    body: S,
    boundary: String,
    declared: Option<u64>,
    limits: &Limits,
    memory: &UploadMemory,
    media: Option<&MediaStore>,
) -> Result<Request, MultipartError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    // Recorded only where a file may go on to the store as it arrives.
    let media = media.filter(|media| media.streams());
    let recording = (media.is_some() && declared.is_some()).then(Vec::new);
    let opening = Opening(Arc::new(Mutex::new(recording)));
    let (recorder, bound) = (opening.clone(), Opening::bound(limits));
    let body = body.map(move |chunk| {
        if let Ok(chunk) = &chunk {
            recorder.record(chunk, bound);
        }
        chunk
    });
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(max_body(limits))
            .per_field(limits.max_upload_bytes as u64)
            .for_field("operations", limits.max_body_bytes as u64)
            .for_field("map", limits.max_body_bytes as u64),
    );
    let mut multipart = Multipart::with_constraints(body, boundary.clone(), constraints);
    let (mut request, mut map, mut files) = (None, None, Vec::new());
    let mut parts = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(refusal(limits))? {
        parts += 1;
        match field.name() {
            Some("operations") => {
                let bytes = field.bytes().await.map_err(refusal(limits))?;
                request = Some(serde_json::from_slice::<BatchRequest>(&bytes).map_err(malformed)?);
            }
            Some("map") => {
                let bytes = field.bytes().await.map_err(refusal(limits))?;
                map = Some(serde_json::from_slice::<HashMap<String, Vec<String>>>(&bytes).map_err(malformed)?);
            }
            Some(name) if field.file_name().is_some() => {
                // Every file costs a file, whether the map names it or not.
                if files.len() == limits.max_uploads {
                    return Err(MultipartError::TooManyFiles(limits.max_uploads));
                }
                let name = name.to_string();
                let (filename, content_type) =
                    (field.file_name().unwrap_or_default().to_string(), field.content_type().map(ToString::to_string));
                let opened = opening.close();
                let only = files.is_empty() && map.as_ref().is_some_and(|map: &HashMap<_, _>| map.len() == 1);
                let mut onward = match (media, declared) {
                    (Some(media), Some(declared)) if only => data_start(&opened, &boundary, parts - 1)
                        .and_then(|start| last_part_length(declared, start, &boundary))
                        .filter(|length| *length <= limits.max_upload_bytes as u64)
                        .map_or(Onward::Off, |length| Onward::Waiting { media, length, pieces: Vec::new() }),
                    _ => Onward::Off,
                };
                let mut spool = Spool::new(memory, declared).map_err(malformed)?;
                let mut scan = Scan::default();
                while let Some(chunk) = field.chunk().await.map_err(refusal(limits))? {
                    scan.update(&chunk);
                    spool.write(&chunk).map_err(malformed)?;
                    onward.take(&chunk, &scan).await;
                }
                let (content, held) = spool.finish().map_err(malformed)?;
                let upload = UploadValue { filename, content_type, content };
                let streamed = Arc::new(Mutex::new(onward.finish()));
                files.push((name, upload, Arrival { scan, held: held.map(Arc::new), streamed }));
            }
            other => {
                return Err(malformed(format!(
                    "unexpected part {:?}: not operations, map or a file",
                    other.unwrap_or("")
                )));
            }
        }
    }
    let batch = request.ok_or_else(|| malformed("no operations part"))?;
    let mut request = batch.into_single().map_err(malformed)?;
    let mut map = map.ok_or_else(|| malformed("no map part"))?;
    let mut arrivals = Vec::new();
    for (name, upload, arrival) in files {
        for path in map.remove(&name).unwrap_or_default() {
            // `set_upload` appends when the path names a variable: the
            // upload's index is then the arrival's.
            request.set_upload(&path, upload.try_clone().map_err(malformed)?);
            arrivals.resize(request.uploads.len(), arrival.clone());
        }
    }
    if let Some(missing) = map.keys().next() {
        return Err(malformed(format!("the map names a file that was not sent: {missing}")));
    }
    Ok(request.data(Scanned(arrivals)))
}

/// Maps multer's errors: sizes to their limits, the rest to a malformed body.
fn refusal(limits: &Limits) -> impl Fn(multer::Error) -> MultipartError + '_ {
    move |err| match err {
        multer::Error::FieldSizeExceeded { field_name, .. } => match field_name.as_deref() {
            Some(part @ ("operations" | "map")) => {
                MultipartError::PartTooLarge { part: part.to_string(), limit: limits.max_body_bytes }
            }
            _ => MultipartError::FileTooLarge(limits.max_upload_bytes),
        },
        multer::Error::StreamSizeExceeded { limit } => MultipartError::BodyTooLarge(limit),
        other => malformed(other),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const BOUNDARY: &str = "pointstream-test";

    /// A part: its name, its filename (a file) or none, its bytes.
    type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);
    /// A case: what it is, its parts, and whether an error is the one expected.
    type Case<'a> = (&'a str, Vec<Part<'a>>, fn(&MultipartError) -> bool);

    /// A multipart body of `(name, filename, bytes)` parts, in chunks of `chunk` bytes.
    fn body(parts: &[Part<'_>], chunk: usize) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + use<> {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            raw(parts).chunks(chunk).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(chunks)
    }

    /// The bytes of a multipart body of `(name, filename, bytes)` parts, as clients write it.
    fn raw(parts: &[Part<'_>]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (name, filename, bytes) in parts {
            raw.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(filename) = filename {
                raw.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
            }
            raw.extend_from_slice(b"\r\n\r\n");
            raw.extend_from_slice(bytes);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        raw
    }

    fn limits() -> Limits {
        Limits { max_upload_bytes: 100, max_uploads: 2, max_body_bytes: 200, ..Limits::default() }
    }

    fn memory() -> UploadMemory {
        UploadMemory::new(&limits())
    }

    /// The request's upload `index`: its bytes, and whether it is held in memory.
    fn upload_of(request: &Request, index: usize) -> (Vec<u8>, bool) {
        let scanned = request.data.get(&std::any::TypeId::of::<Scanned>()).and_then(|d| d.downcast_ref::<Scanned>());
        let in_memory = scanned.and_then(|scanned| scanned.of(&Upload(index))).expect("arrived").in_memory();
        let mut file = request.uploads[index].content.try_clone().expect("a file");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).expect("reads");
        // What the file is, as the kernel names it: a memory file or not.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
        assert_eq!(
            link.expect("the file's name").to_string_lossy().starts_with("/memfd:"),
            in_memory,
            "upload {index} is where it says it is"
        );
        (bytes, in_memory)
    }

    const OPERATIONS: &[u8] = br#"{"query":"mutation($f: Upload!) { a(f: $f) }","variables":{"f":null}}"#;
    const MAP: &[u8] = br#"{"0":["variables.f"]}"#;

    #[tokio::test]
    async fn a_file_arrives_as_the_upload_its_map_names_however_the_body_is_split() {
        for chunk in [1, 7, 64, 4096] {
            let parts =
                [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a.png"), b"photo bytes".as_slice())];
            let request = receive(body(&parts, chunk), BOUNDARY.into(), None, &limits(), &memory(), None)
                .await
                .expect("a request");
            assert_eq!(request.uploads.len(), 1, "{chunk} bytes at a time");
            // Scanned on the way in: the check needs no second read.
            let scan = request.data.get(&std::any::TypeId::of::<Scanned>()).and_then(|d| d.downcast_ref::<Scanned>());
            let scan = scan.and_then(|scanned| scanned.of(&Upload(0))).expect("the upload was scanned");
            let file = request.uploads[0].content.try_clone().expect("a file");
            assert!(matches!(scan.finish(file, 100), Err(media::Rejection::NotAPhoto { .. })), "text is no photo");
            let mut content = String::new();
            request.uploads[0].content.try_clone().expect("a file").read_to_string(&mut content).expect("reads");
            assert_eq!(content, "photo bytes");
            assert_eq!(request.uploads[0].filename, "a.png");
        }
    }

    #[tokio::test]
    async fn each_limit_is_refused_with_its_own_error() {
        let big = vec![b'x'; 101];
        let padded = [OPERATIONS, &[b' '; 200][..]].concat();
        let file = b"photo".as_slice();
        let cases: Vec<Case<'_>> = vec![
            (
                "a file over the limit",
                vec![("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a"), &big)],
                |e| matches!(e, MultipartError::FileTooLarge(100)),
            ),
            ("operations over the limit", vec![("operations", None, &padded), ("map", None, MAP)], |e| {
                matches!(e, MultipartError::PartTooLarge { limit: 200, .. })
            }),
            (
                "a third file, unmapped",
                vec![
                    ("operations", None, OPERATIONS),
                    ("map", None, MAP),
                    ("0", Some("a"), file),
                    ("1", Some("b"), file),
                    ("2", Some("c"), file),
                ],
                |e| matches!(e, MultipartError::TooManyFiles(2)),
            ),
            (
                "a part that is not a file",
                vec![("operations", None, OPERATIONS), ("map", None, MAP), ("0", None, file)],
                |e| matches!(e, MultipartError::Malformed(_)),
            ),
            ("a mapped file that never came", vec![("operations", None, OPERATIONS), ("map", None, MAP)], |e| {
                matches!(e, MultipartError::Malformed(_))
            }),
        ];
        for (what, parts, expected) in cases {
            let refused =
                receive(body(&parts, 16), BOUNDARY.into(), None, &limits(), &memory(), None).await.expect_err(what);
            assert!(expected(&refused), "{what}: {refused}");
        }
    }

    #[tokio::test]
    async fn small_files_stay_in_memory_within_the_budget_and_the_rest_go_to_disk() {
        // 10 bytes per file, 16 in all: the first file is over the per-file
        // bound, the second fits, the third finds the budget short.
        let tight = Limits { upload_memory_bytes: 10, upload_memory_total: 16, max_uploads: 3, ..limits() };
        let memory = UploadMemory::new(&tight);
        let operations = br#"{"query":"mutation($f: [Upload!]!) { a(f: $f) }","variables":{"f":[null,null,null]}}"#;
        let map = br#"{"0":["variables.f.0"],"1":["variables.f.1"],"2":["variables.f.2"]}"#;
        let (big, fits, short) = (b"eleven bytes".as_slice(), b"0123456789".as_slice(), b"abcdefghij".as_slice());
        let parts = [
            ("operations", None, operations.as_slice()),
            ("map", None, map.as_slice()),
            ("0", Some("a"), big),
            ("1", Some("b"), fits),
            ("2", Some("c"), short),
        ];
        let request = receive(body(&parts, 3), BOUNDARY.into(), None, &tight, &memory, None).await.expect("a request");
        assert_eq!(upload_of(&request, 0), (big.to_vec(), false), "over the per-file bound");
        assert_eq!(upload_of(&request, 1), (fits.to_vec(), true));
        assert_eq!(upload_of(&request, 2), (short.to_vec(), false), "the budget had 6 bytes left");
        assert_eq!(memory.available(), 6, "the file in memory holds its 10 bytes");
        drop(request);
        assert_eq!(memory.available(), 16, "the request's end gives them back");
        // Refused or not, a request gives back what its files held.
        let over = [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a"), &[b'x'; 101][..])];
        receive(body(&over, 7), BOUNDARY.into(), None, &tight, &memory, None).await.expect_err("over max_upload_bytes");
        assert_eq!(memory.available(), 16);
        // A body declared longer than the per-file bound goes to disk from the start.
        let small = [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a"), b"tiny".as_slice())];
        let request =
            receive(body(&small, 7), BOUNDARY.into(), Some(11), &tight, &memory, None).await.expect("a request");
        assert_eq!(upload_of(&request, 0), (b"tiny".to_vec(), false));
        let request =
            receive(body(&small, 7), BOUNDARY.into(), Some(10), &tight, &memory, None).await.expect("a request");
        assert_eq!(upload_of(&request, 0), (b"tiny".to_vec(), true));
    }

    #[test]
    fn the_last_file_s_length_is_read_off_the_declared_length() {
        let photo = b"\x89PNG and the rest of the photo".as_slice();
        let one = [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a.png"), photo)];
        let body = raw(&one);
        let start = data_start(&body, BOUNDARY, 2).expect("the file part");
        assert_eq!(&body[start..start + photo.len()], photo);
        assert_eq!(last_part_length(body.len() as u64, start, BOUNDARY), Some(photo.len() as u64));
        assert_eq!(data_start(&body[..start - 1], BOUNDARY, 2), None, "its headers not all in yet");
        assert_eq!(data_start(&body, BOUNDARY, 3), None, "no fourth part");
        // A body with a preamble, parts without headers: still found.
        let odd = [b"preamble\r\n".as_slice(), &body].concat();
        let start = data_start(&odd, BOUNDARY, 2).expect("after the preamble");
        assert_eq!(&odd[start..start + photo.len()], photo);
        // Not the last part: the guess is the rest of the body, and wrong;
        // the put it would start is abandoned when the file ends short of it.
        let two =
            [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a"), photo), ("1", Some("b"), photo)];
        let body = raw(&two);
        let start = data_start(&body, BOUNDARY, 2).expect("the first file");
        assert_ne!(last_part_length(body.len() as u64, start, BOUNDARY), Some(photo.len() as u64));
        assert_eq!(last_part_length(10, start, BOUNDARY), None, "a declared length too short for the file");
    }

    #[tokio::test]
    async fn without_a_store_that_takes_bytes_as_they_come_nothing_is_put_on_the_way() {
        let photo = [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 80]].concat();
        let parts = [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a.png"), photo.as_slice())];
        let declared = raw(&parts).len() as u64;
        let directory = media::MediaStore::Fs(media::FsStore::new(
            std::env::temp_dir().join("pointstream-unused"),
            media::UrlSigner::new(b"k"),
            "http://127.0.0.1:8080",
        ));
        let request =
            receive(body(&parts, 16), BOUNDARY.into(), Some(declared), &limits(), &memory(), Some(&directory))
                .await
                .expect("a request");
        let scanned = request.data.get(&std::any::TypeId::of::<Scanned>()).and_then(|d| d.downcast_ref::<Scanned>());
        let arrival = scanned.and_then(|scanned| scanned.of(&Upload(0))).expect("arrived");
        assert!(arrival.streamed().is_none(), "the filesystem store is written once the file is in");
        assert_eq!(upload_of(&request, 0).0, photo);
    }
}
