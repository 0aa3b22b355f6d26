//! The photo store contract, run against a real S3-protocol server and the
//! filesystem: what is put is read back byte for byte with its content type,
//! listed, swept when orphaned, and deleted; presigned URLs serve the bytes
//! to a plain HTTP client until they expire.

use std::collections::HashSet;

#[path = "../../eventstore/tests/support/tap.rs"]
#[allow(dead_code)]
mod tap;

use pointstream_media as media;
use std::io::Write;
use std::time::Duration;

use media::scratch::{ScratchBucket, scratch_fs};
use media::{MediaStore, photo};
use tap::Tap;

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

/// Seconds since 1970 at a UTC civil date and time.
fn unix_seconds(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hour * 3_600 + minute * 60 + second
}

/// When a presigned URL stops being valid: its `X-Amz-Date` plus `X-Amz-Expires`, in Unix seconds.
fn expiry_of(url: &str) -> i64 {
    let param = |name: &str| {
        url.split(['?', '&']).find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')).expect("a presign parameter")
    };
    let date = param("X-Amz-Date"); // 20240131T235959Z
    let number = |range: std::ops::Range<usize>| date[range].parse::<i64>().expect("a date field");
    let signed = unix_seconds(number(0..4), number(4..6), number(6..8), number(9..11), number(11..13), number(13..15));
    signed + param("X-Amz-Expires").parse::<i64>().expect("seconds")
}

/// The server's clock when it answered, from the `Date` header
/// (`Tue, 15 Nov 1994 08:12:31 GMT`), in Unix seconds: it was at least this.
fn server_time(response: &reqwest::Response) -> i64 {
    let date = response.headers()["date"].to_str().expect("a Date header");
    let fields: Vec<&str> = date.split([' ', ':']).collect();
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == fields[2])
        .expect("a month") as i64
        + 1;
    let number = |i: usize| fields[i].parse::<i64>().expect("a date field");
    unix_seconds(number(3), month, number(1), number(4), number(5), number(6))
}

#[tokio::test]
async fn a_presigned_url_serves_the_bytes_until_it_expires() {
    let Some(bucket) = bucket().await else { return };
    let store = bucket.media();
    let stored = put(&store, PNG).await;
    let serves = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_eq!(response.bytes().await.expect("a body").as_ref(), PNG);
    };
    // Valid for as long as a client would take: served, however slow the fetch.
    let lasting = store.url(stored.key.as_str(), Duration::from_secs(900)).await.expect("presigns");
    serves(reqwest::get(&lasting).await.expect("fetches")).await;

    // Valid for 2 s. Served when the server checked it before it expired: it
    // checks before it answers, so while the time its answer is dated (to
    // the second) is a second short of the expiry.
    let url = store.url(stored.key.as_str(), Duration::from_secs(2)).await.expect("presigns");
    let expires = expiry_of(&url);
    let first = reqwest::get(&url).await.expect("fetches");
    if server_time(&first) < expires {
        serves(first).await;
    }
    // Refused once the expiry has passed by the server's clock: the URL is
    // fetched after an answer the server dated past it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let probe = reqwest::get(&lasting).await.expect("fetches");
        if server_time(&probe) > expires {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server's clock did not pass the URL's expiry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// A store on `bucket` whose every connection to S3 goes through a tap of
/// its own, so that what one put sent can be seen.
async fn tapped(bucket: &ScratchBucket) -> (MediaStore, Tap) {
    let endpoint = bucket.config.endpoint.clone().expect("the test server's endpoint");
    let tap = Tap::start(&tap::host_port(&endpoint));
    let config = media::S3Config { endpoint: Some(tap::through(&endpoint, &tap)), ..bucket.config.clone() };
    (MediaStore::S3(media::S3Store::connect(&config).await), tap)
}

/// The length a put declared and the bytes of its body that went out, from
/// the conversation it opened (the first request on its connection).
fn put_body(conversation: &tap::Conversation) -> (usize, usize) {
    let sent = &conversation.sent;
    assert!(sent.starts_with(b"PUT "), "a put: {}", String::from_utf8_lossy(&sent[..sent.len().min(200)]));
    let end = sent.windows(4).position(|w| w == b"\r\n\r\n").expect("the request's head went out") + 4;
    let head = String::from_utf8_lossy(&sent[..end]).to_ascii_lowercase();
    let declared = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .expect("a content length")
        .trim()
        .parse()
        .expect("a length");
    (declared, sent.len() - end)
}

/// Waits (30 s at most) until every connection through `tap` is over;
/// returns what each put on them declared and carried.
async fn puts_ended(tap: &Tap) -> Vec<(usize, usize)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let conversations = tap.conversations();
        if conversations.iter().all(|c| c.closed) {
            // A connection that ended before the request's head was out carried no body.
            return conversations
                .iter()
                .filter(|c| c.sent.windows(4).any(|w| w == b"\r\n\r\n"))
                .map(put_body)
                .collect();
        }
        assert!(std::time::Instant::now() < deadline, "an abandoned put's connection stayed open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_photo_put_while_it_arrives_is_stored_only_once_completed() {
    let Some(bucket) = bucket().await else { return };
    let checked = photo::check(upload(JPEG), 1 << 20).await.expect("a photo");

    // Every byte but the last goes out as it comes; nothing is stored before completion.
    let (store, tap) = tapped(&bucket).await;
    let mut put = store.stream(checked.kind, JPEG.len() as u64).expect("S3 takes a put of known length");
    for piece in pieces(JPEG, 100) {
        assert!(put.send(piece).await, "within its length");
    }
    assert!(put.is_whole());
    // S3 has been sent all of it but the last byte, and has not stored it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tap.conversations().first().is_none_or(|c| !c.sent.starts_with(b"PUT ") || put_body(c).1 < JPEG.len() - 1) {
        assert!(std::time::Instant::now() < deadline, "the bytes did not go out as they came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bucket.keys().await, Vec::<String>::new(), "nothing is stored before completion");
    assert_eq!(put_body(&tap.conversations()[0]), (JPEG.len(), JPEG.len() - 1), "the last byte is held back");
    let key = put.key().as_str().to_string();
    let stored = put.complete(&checked).await.expect("stored");
    assert_eq!(
        (stored.key.as_str(), stored.size, stored.sha256.as_str()),
        (key.as_str(), checked.size, checked.sha256.as_str())
    );
    let blob = store.get(&key).await.expect("reads");
    assert_eq!((blob.bytes.as_ref(), blob.content_type.as_str()), (JPEG, "image/jpeg"));

    // Abandoned whole, part way, or run past its length: nothing is stored.
    // Each goes through a tap of its own: once its connection is over, what
    // it carried is all S3 ever got of it.
    let (whole_store, whole_tap) = tapped(&bucket).await;
    let whole = {
        let mut put = whole_store.stream(checked.kind, JPEG.len() as u64).expect("a put");
        for piece in pieces(JPEG, 300) {
            assert!(put.send(piece).await);
        }
        put
    };
    drop(whole);
    let (partway_store, partway_tap) = tapped(&bucket).await;
    let mut partway = partway_store.stream(checked.kind, JPEG.len() as u64).expect("a put");
    assert!(partway.send(bytes::Bytes::copy_from_slice(&JPEG[..200])).await);
    drop(partway);
    let (longer_store, longer_tap) = tapped(&bucket).await;
    let mut longer = longer_store.stream(checked.kind, 100).expect("a put");
    assert!(!longer.send(bytes::Bytes::copy_from_slice(&JPEG[..200])).await, "over its length");
    assert!(!longer.is_whole());
    drop(longer);
    // A put completed for another upload than the one it carried is refused.
    let (other_store, other_tap) = tapped(&bucket).await;
    let mut other = other_store.stream(checked.kind, 10).expect("a put");
    assert!(other.send(bytes::Bytes::copy_from_slice(&JPEG[..10])).await);
    assert!(other.complete(&checked).await.is_err(), "not the checked upload's length");
    for (name, tap) in
        [("whole", &whole_tap), ("part way", &partway_tap), ("longer", &longer_tap), ("other", &other_tap)]
    {
        for (declared, carried) in puts_ended(tap).await {
            assert!(carried < declared, "the put abandoned {name} sent {carried} of its {declared} bytes");
        }
    }
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
