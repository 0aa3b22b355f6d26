//! GraphQL multipart requests (the upload spec: an `operations` part, a `map`
//! part, then the files), read within the limits as the bytes arrive.
//!
//! async-graphql has a reader of its own, but it takes the body 2 KiB at a
//! time, copying each piece and writing it to the file with its own system
//! call; here the body's chunks go to multer as they come off the socket and
//! each file is written through a 256 KiB buffer. Every limit is checked
//! before the part that breaks it is stored: a part beyond the file count is
//! refused on its headers, before a temporary file exists for it.

use std::collections::HashMap;
use std::io::{Seek, Write};

use async_graphql::{BatchRequest, Request, Upload, UploadValue};
use futures_util::Stream;
use media::Scan;
use multer::{Constraints, Multipart, SizeLimit};

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

/// How each upload of a request was scanned as it arrived (its size,
/// SHA-256 and first bytes), by upload index: its check needs no second read.
/// Request data of every multipart request.
pub struct Scanned(Vec<Scan>);

impl Scanned {
    /// The scan of `upload`, if it came through this reader.
    pub fn of(&self, upload: &Upload) -> Option<Scan> {
        self.0.get(upload.0).cloned()
    }
}

/// Reads the multipart `body` into a GraphQL request (one operation) whose
/// uploads are temporary files, scanned as they arrive ([`Scanned`]).
pub async fn receive<S, E>(body: S, boundary: String, limits: &Limits) -> Result<Request, MultipartError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(max_body(limits))
            .per_field(limits.max_upload_bytes as u64)
            .for_field("operations", limits.max_body_bytes as u64)
            .for_field("map", limits.max_body_bytes as u64),
    );
    let mut multipart = Multipart::with_constraints(body, boundary, constraints);
    let (mut request, mut map, mut files) = (None, None, Vec::new());
    while let Some(mut field) = multipart.next_field().await.map_err(refusal(limits))? {
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
                // Every file costs a temporary file, whether the map names it or not.
                if files.len() == limits.max_uploads {
                    return Err(MultipartError::TooManyFiles(limits.max_uploads));
                }
                let upload = UploadValue {
                    filename: field.file_name().unwrap_or_default().to_string(),
                    content_type: field.content_type().map(ToString::to_string),
                    content: tempfile::tempfile().map_err(malformed)?,
                };
                let name = name.to_string();
                let mut writer =
                    std::io::BufWriter::with_capacity(WRITE_BUFFER, upload.content.try_clone().map_err(malformed)?);
                let mut scan = Scan::default();
                while let Some(chunk) = field.chunk().await.map_err(refusal(limits))? {
                    scan.update(&chunk);
                    writer.write_all(&chunk).map_err(malformed)?;
                }
                writer.into_inner().map_err(malformed)?.rewind().map_err(malformed)?;
                files.push((name, upload, scan));
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
    let mut scans = Vec::new();
    for (name, upload, scan) in files {
        for path in map.remove(&name).unwrap_or_default() {
            // `set_upload` appends when the path names a variable: the
            // upload's index is then the scan's.
            request.set_upload(&path, upload.try_clone().map_err(malformed)?);
            scans.resize(request.uploads.len(), scan.clone());
        }
    }
    if let Some(missing) = map.keys().next() {
        return Err(malformed(format!("the map names a file that was not sent: {missing}")));
    }
    Ok(request.data(Scanned(scans)))
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
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            raw.chunks(chunk).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(chunks)
    }

    fn limits() -> Limits {
        Limits { max_upload_bytes: 100, max_uploads: 2, max_body_bytes: 200, ..Limits::default() }
    }

    const OPERATIONS: &[u8] = br#"{"query":"mutation($f: Upload!) { a(f: $f) }","variables":{"f":null}}"#;
    const MAP: &[u8] = br#"{"0":["variables.f"]}"#;

    #[tokio::test]
    async fn a_file_arrives_as_the_upload_its_map_names_however_the_body_is_split() {
        for chunk in [1, 7, 64, 4096] {
            let parts =
                [("operations", None, OPERATIONS), ("map", None, MAP), ("0", Some("a.png"), b"photo bytes".as_slice())];
            let request = receive(body(&parts, chunk), BOUNDARY.into(), &limits()).await.expect("a request");
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
            let refused = receive(body(&parts, 16), BOUNDARY.into(), &limits()).await.expect_err(what);
            assert!(expected(&refused), "{what}: {refused}");
        }
    }
}
