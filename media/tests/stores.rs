//! The photo store contract, run against a real S3-protocol server and the
//! filesystem: what is put is read back byte for byte with its content type,
//! listed, swept when orphaned, and deleted; presigned URLs serve the bytes
//! to a plain HTTP client until they expire.

use std::collections::HashSet;

use pointstream_media as media;
use std::io::Write;
use std::time::Duration;

use media::scratch::{ScratchBucket, scratch_fs};
use media::{MediaStore, photo};

const JPEG: &[u8] = include_bytes!("../../tests/fixtures/photo.jpg");
const PNG: &[u8] = include_bytes!("../../tests/fixtures/photo.png");

fn upload(bytes: &[u8]) -> std::fs::File {
    let path = media::scratch::scratch_dir();
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).expect("a file");
    std::fs::remove_file(&path).expect("unlinked");
    file.write_all(bytes).expect("written");
    file
}

async fn bucket() -> Option<ScratchBucket> {
    ScratchBucket::create().await.unwrap_or_else(|e| panic!("{e}"))
}

async fn put(store: &MediaStore, bytes: &[u8]) -> domain::Photo {
    let checked = photo::check(upload(bytes), 1 << 20).await.expect("a photo");
    let key = photo::new_key(checked.kind);
    store.put(&key, checked).await.expect("stored")
}

async fn stores_round_trip_list_and_delete(store: MediaStore) {
    store.check().await.expect("reachable");
    assert_eq!(store.list().await.expect("lists"), vec![], "starts empty");
    let jpeg = put(&store, JPEG).await;
    let png = put(&store, PNG).await;
    assert_eq!((jpeg.content_type.as_str(), jpeg.size), ("image/jpeg", JPEG.len() as u64));
    assert_eq!(png.content_type, "image/png");
    let blob = store.get(jpeg.key.as_str()).await.expect("reads");
    assert_eq!((blob.bytes.as_ref(), blob.content_type.as_str()), (JPEG, "image/jpeg"));
    let mut listed: Vec<(String, u64)> =
        store.list().await.expect("lists").into_iter().map(|o| (o.key, o.size)).collect();
    listed.sort();
    let mut expected =
        vec![(jpeg.key.as_str().to_string(), JPEG.len() as u64), (png.key.as_str().to_string(), PNG.len() as u64)];
    expected.sort();
    assert_eq!(listed, expected);

    store.delete(&[jpeg.key.as_str().to_string()]).await.expect("deletes");
    store.delete(&[jpeg.key.as_str().to_string()]).await.expect("deleting twice is fine");
    assert!(matches!(store.get(jpeg.key.as_str()).await, Err(media::MediaError::NotFound(_))));
    assert_eq!(store.list().await.expect("lists").len(), 1);
}

async fn orphans_are_swept_after_the_grace_period_and_live_photos_never(store: MediaStore) {
    let live = put(&store, JPEG).await;
    let orphan = put(&store, PNG).await;
    let keep: HashSet<String> = [live.key.as_str().to_string()].into();
    let young = media::gc::sweep(&store, &keep, Duration::from_secs(3_600), false).await.expect("sweeps");
    assert_eq!((young.removed.len(), young.young), (0, 1), "a fresh orphan may belong to a command in flight");
    let dry = media::gc::sweep(&store, &keep, Duration::ZERO, true).await.expect("sweeps");
    assert_eq!(dry.removed, vec![orphan.key.as_str().to_string()]);
    assert_eq!(store.list().await.expect("lists").len(), 2, "a dry run removes nothing");
    let swept = media::gc::sweep(&store, &keep, Duration::ZERO, false).await.expect("sweeps");
    assert_eq!(swept.removed, vec![orphan.key.as_str().to_string()]);
    let left: Vec<String> = store.list().await.expect("lists").into_iter().map(|o| o.key).collect();
    assert_eq!(left, vec![live.key.as_str().to_string()]);
}

#[tokio::test]
async fn s3_stores_reads_lists_and_deletes() {
    let Some(bucket) = bucket().await else { return };
    stores_round_trip_list_and_delete(bucket.media()).await;
}

#[tokio::test]
async fn filesystem_stores_reads_lists_and_deletes() {
    stores_round_trip_list_and_delete(scratch_fs("http://127.0.0.1")).await;
}

#[tokio::test]
async fn s3_orphans_are_swept() {
    let Some(bucket) = bucket().await else { return };
    orphans_are_swept_after_the_grace_period_and_live_photos_never(bucket.media()).await;
}

#[tokio::test]
async fn filesystem_orphans_are_swept() {
    orphans_are_swept_after_the_grace_period_and_live_photos_never(scratch_fs("http://127.0.0.1")).await;
}

#[tokio::test]
async fn s3_leaves_other_objects_in_a_shared_bucket_alone() {
    let Some(bucket) = bucket().await else { return };
    let client = bucket.store.client();
    client
        .put_object()
        .bucket(&bucket.config.bucket)
        .key("backups/db.sql")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("puts");
    let store = bucket.media();
    assert_eq!(store.list().await.expect("lists"), vec![], "only photos/ is the store's");
    let swept = media::gc::sweep(&store, &HashSet::new(), Duration::ZERO, false).await.expect("sweeps");
    assert!(swept.removed.is_empty());
    assert_eq!(bucket.keys().await, vec!["backups/db.sql".to_string()]);
}

#[tokio::test]
async fn a_presigned_url_serves_the_bytes_until_it_expires() {
    let Some(bucket) = bucket().await else { return };
    let store = bucket.media();
    let stored = put(&store, PNG).await;
    let url = store.url(stored.key.as_str(), Duration::from_secs(1)).await.expect("presigns");
    let response = reqwest::get(&url).await.expect("fetches");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.bytes().await.expect("a body").as_ref(), PNG);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let expired = reqwest::get(&url).await.expect("fetches");
    assert_eq!(expired.status(), 403, "an expired URL is refused");
    let fresh = store.url(stored.key.as_str(), Duration::from_secs(60)).await.expect("presigns");
    let (signed, signature) = fresh.rsplit_once("X-Amz-Signature=").expect("a signature");
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let forged = format!("{signed}X-Amz-Signature={flipped}{}", &signature[1..]);
    assert_eq!(reqwest::get(&forged).await.expect("fetches").status(), 403, "a forged signature is refused");
}

/// `bytes` in pieces of `size`, as an upload arrives.
fn pieces(bytes: &[u8], size: usize) -> Vec<bytes::Bytes> {
    bytes.chunks(size).map(bytes::Bytes::copy_from_slice).collect()
}

#[tokio::test]
async fn a_photo_put_while_it_arrives_is_stored_only_once_completed() {
    let Some(bucket) = bucket().await else { return };
    let store = bucket.media();
    let checked = photo::check(upload(JPEG), 1 << 20).await.expect("a photo");

    // Every byte but the last goes out as it comes; nothing is stored before completion.
    let mut put = store.stream(checked.kind, JPEG.len() as u64).expect("S3 takes a put of known length");
    for piece in pieces(JPEG, 100) {
        assert!(put.send(piece).await, "within its length");
    }
    assert!(put.is_whole());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bucket.keys().await, Vec::<String>::new(), "the last byte is held back");
    let key = put.key().as_str().to_string();
    let stored = put.complete(&checked).await.expect("stored");
    assert_eq!(
        (stored.key.as_str(), stored.size, stored.sha256.as_str()),
        (key.as_str(), checked.size, checked.sha256.as_str())
    );
    let blob = store.get(&key).await.expect("reads");
    assert_eq!((blob.bytes.as_ref(), blob.content_type.as_str()), (JPEG, "image/jpeg"));

    // Abandoned whole, part way, or run past its length: nothing is stored.
    let whole = {
        let mut put = store.stream(checked.kind, JPEG.len() as u64).expect("a put");
        for piece in pieces(JPEG, 300) {
            assert!(put.send(piece).await);
        }
        put
    };
    drop(whole);
    let mut partway = store.stream(checked.kind, JPEG.len() as u64).expect("a put");
    assert!(partway.send(bytes::Bytes::copy_from_slice(&JPEG[..200])).await);
    drop(partway);
    let mut longer = store.stream(checked.kind, 100).expect("a put");
    assert!(!longer.send(bytes::Bytes::copy_from_slice(&JPEG[..200])).await, "over its length");
    assert!(!longer.is_whole());
    drop(longer);
    // A put completed for another upload than the one it carried is refused.
    let mut other = store.stream(checked.kind, 10).expect("a put");
    assert!(other.send(bytes::Bytes::copy_from_slice(&JPEG[..10])).await);
    assert!(other.complete(&checked).await.is_err(), "not the checked upload's length");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bucket.keys().await, vec![key], "only the completed put stored anything");

    // The filesystem store writes a file at once: it takes no such put.
    let fs = scratch_fs("http://127.0.0.1:8080");
    assert!(fs.stream(checked.kind, JPEG.len() as u64).is_none());
}

#[tokio::test]
async fn a_put_held_at_its_last_byte_longer_than_the_sdk_s_stall_grace_still_stores() {
    let Some(bucket) = bucket().await else { return };
    let store = bucket.media();
    let checked = photo::check(upload(PNG), 1 << 20).await.expect("a photo");
    let mut put = store.stream(checked.kind, PNG.len() as u64).expect("a put");
    let (first, rest) = PNG.split_at(PNG.len() / 2);
    assert!(put.send(bytes::Bytes::copy_from_slice(first)).await);
    // A client that pauses mid-upload, then a slow mutation: the SDK would
    // call either a stalled server after its 5 s grace period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(put.send(bytes::Bytes::copy_from_slice(rest)).await);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let stored = put.complete(&checked).await.expect("stored after the pauses");
    assert_eq!(store.get(stored.key.as_str()).await.expect("reads").bytes.as_ref(), PNG);
}
