//! Publishing signed log digests, on a real S3-protocol server and in a
//! directory: each digest is written once as `{prefix}{size:020}.json`;
//! publishing it again succeeds, and another digest of the same size is
//! refused with an error naming where the first one is.

use pointstream_media as media;

use eventstore::merkle::{Digest, Publish, Signer};
use media::digests::{DigestPublisher, digest_document};
use media::scratch::ScratchBucket;

/// Two digests of the same size with different roots, as a server showing
/// two histories would sign them.
fn two_of_one_size(size: u64) -> (Digest, Digest) {
    let (signer, _seed) = Signer::generate();
    let now = eventstore::now_us();
    (signer.sign(size, &[7; 32], now), signer.sign(size, &[8; 32], now + 1))
}

#[tokio::test]
async fn s3_publishes_a_digest_once_and_refuses_another_of_its_size() {
    let Some(bucket) = ScratchBucket::create().await.unwrap_or_else(|e| panic!("{e}")) else { return };
    let publisher = DigestPublisher::S3 { store: bucket.store.clone(), prefix: "digests/".to_string(), retain: None };
    let (digest, other) = two_of_one_size(42);
    let key = "digests/00000000000000000042.json";
    let place = format!("s3://{}/{key}", bucket.config.bucket);

    assert_eq!(publisher.publish(&digest).await, Ok(place.clone()));
    assert_eq!(bucket.keys().await, vec![key.to_string()]);
    let document = digest_document(&digest).expect("a document");
    let stored = bucket.media().get(key).await.expect("the digest reads");
    assert_eq!(stored.bytes.as_ref(), document.as_slice());
    let parsed: Digest = serde_json::from_slice(&stored.bytes).expect("the document is a digest");
    assert_eq!(parsed, digest);

    // Again (a previous attempt's answer was lost): the same document is there.
    assert_eq!(publisher.publish(&digest).await, Ok(place));

    // Another digest of that size never replaces the first.
    let refused = publisher.publish(&other).await.expect_err("another digest of that size is refused");
    assert!(refused.contains(key) && refused.contains("holds another digest"), "the error names the object: {refused}");
    let kept = bucket.media().get(key).await.expect("the digest reads");
    assert_eq!(kept.bytes.as_ref(), document.as_slice(), "the first digest stays");
    assert_eq!(bucket.keys().await, vec![key.to_string()]);
}

#[tokio::test]
async fn a_directory_publishes_a_digest_once_and_refuses_another_of_its_size() {
    let dir = media::scratch::scratch_dir();
    let publisher = DigestPublisher::Dir(dir.clone());
    let (digest, other) = two_of_one_size(7);
    let path = dir.join("00000000000000000007.json");
    let place = path.display().to_string();

    assert_eq!(publisher.publish(&digest).await, Ok(place.clone()));
    let document = digest_document(&digest).expect("a document");
    assert_eq!(std::fs::read(&path).expect("reads"), document);
    assert!(std::fs::metadata(&path).expect("a file").permissions().readonly(), "read-only once written");
    assert_eq!(publisher.publish(&digest).await, Ok(place.clone()));
    let refused = publisher.publish(&other).await.expect_err("another digest of that size is refused");
    assert!(
        refused.contains(&place) && refused.contains("holds another digest"),
        "the error names the file: {refused}"
    );
    assert_eq!(std::fs::read(&path).expect("reads"), document, "the first digest stays");
    assert_eq!(media::digests::read_dir(&dir), Ok(vec![digest]));
    let names: Vec<_> = std::fs::read_dir(&dir).expect("lists").map(|e| e.expect("an entry").file_name()).collect();
    assert_eq!(names.len(), 1, "no partial file left: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
