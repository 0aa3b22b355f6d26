//! Photos end to end: `pointstream serve` on a free port with its photos in a
//! real S3-protocol server (a bucket of the test's own) or in a directory;
//! uploads as GraphQL multipart requests over plain HTTP, photos fetched
//! from the URLs the API hands out with a plain HTTP client.

mod app;

use std::path::PathBuf;
use std::time::Duration;

use api::auth::Role;
use app::{App, FilePart, code, fetch, multipart, setup, token};
use eventstore::scratch::ScratchDatabase;
use media::scratch::{ScratchBucket, scratch_dir};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const JPEG: &[u8] = include_bytes!("fixtures/photo.jpg");
const PNG: &[u8] = include_bytes!("fixtures/photo.png");

const PHOTO_FIELDS: &str = "position replayed post { id photos { index key contentType size sha256 url } }";

/// Where the server under test keeps its photos.
enum Photos {
    S3(ScratchBucket),
    Fs(PathBuf),
}

impl Photos {
    async fn s3() -> Option<Photos> {
        ScratchBucket::create().await.unwrap_or_else(|e| panic!("{e}")).map(Photos::S3)
    }

    fn fs() -> Photos {
        Photos::Fs(scratch_dir())
    }

    fn args(&self) -> Vec<String> {
        match self {
            Photos::S3(bucket) => vec![
                "--s3-bucket".into(),
                bucket.config.bucket.clone(),
                "--s3-endpoint".into(),
                bucket.config.endpoint.clone().unwrap_or_default(),
                "--s3-region".into(),
                "us-east-1".into(),
                "--s3-path-style".into(),
            ],
            Photos::Fs(dir) => vec!["--media-dir".into(), dir.display().to_string()],
        }
    }

    /// Every object stored, photo or not.
    async fn keys(&self) -> Vec<String> {
        match self {
            Photos::S3(bucket) => bucket.keys().await,
            Photos::Fs(dir) => {
                let mut keys = Vec::new();
                for entry in std::fs::read_dir(dir.join("photos")).into_iter().flatten().flatten() {
                    keys.push(format!("photos/{}", entry.file_name().to_string_lossy()));
                }
                keys.sort();
                keys
            }
        }
    }

    fn spawn(&self, extra: &[&str]) -> App {
        let mut args: Vec<String> = self.args();
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let app = App::spawn(ScratchDatabase::sqlite(), &args);
        setup(&app, &["ann", "bob"], &[("cafe", "bob")]);
        app
    }
}

fn file<'a>(field: &'a str, filename: &'a str, content_type: &'a str, bytes: &'a [u8]) -> FilePart<'a> {
    FilePart { field, filename, content_type, bytes }
}

/// `createPost` by ann at cafe with `files` as its photos, cross-posted to Twitter.
fn create_post(app: &App, id: &str, key: Option<&str>, files: &[FilePart<'_>]) -> (u16, Value) {
    let query = format!(
        "mutation($photos: [Upload!]!, $key: String) {{ createPost(author: \"ann\", store: \"cafe\", body: \"Look\", \
         id: \"{id}\", photos: $photos, providers: [TWITTER], idempotencyKey: $key) {{ {PHOTO_FIELDS} }} }}"
    );
    let photos: Vec<Value> = files.iter().map(|_| Value::Null).collect();
    let map: serde_json::Map<String, Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.field.to_string(), json!([format!("variables.photos.{i}")])))
        .collect();
    let request = multipart(&query, json!({ "photos": photos, "key": key }), Value::Object(map), files);
    let (status, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

async fn photos_are_uploaded_served_retried_and_removed(photos: Photos) {
    // The first request (a JPEG of 775 bytes and a PNG of 107, over 1,000
    // bytes with its parts) writes its files to disk; the later ones, with a
    // PNG alone, hold it in memory: both ways into the store are taken.
    // URLs good for 5 s: every fetch below follows the answer that handed
    // its URL out by far less, on however loaded a machine.
    let app = photos.spawn(&["--photo-url-ttl-secs", "5", "--upload-memory-bytes", "1000"]);
    // The client's filenames and content types are wrong on purpose: the content decides.
    let files = [file("0", "holiday.bin", "application/octet-stream", JPEG), file("1", "logo.jpg", "image/jpeg", PNG)];
    let (status, created) = create_post(&app, "p-1", Some("k-1"), &files);
    // The URLs expire at most 5 s after this (plus the second they are rounded to).
    let handed_out = std::time::Instant::now();
    assert_eq!(status, 200, "{created}");
    let post = &created["data"]["createPost"]["post"];
    let listed = post["photos"].as_array().unwrap_or_else(|| panic!("photos: {created}"));
    assert_eq!(listed.len(), 2, "{created}");
    for (photo, (bytes, content_type)) in listed.iter().zip([(JPEG, "image/jpeg"), (PNG, "image/png")]) {
        assert_eq!(photo["contentType"], content_type, "{photo}");
        assert_eq!(photo["size"], bytes.len(), "{photo}");
        assert_eq!(photo["sha256"], hex::encode(Sha256::digest(bytes)), "{photo}");
        let (status, served_type, served) = fetch(photo["url"].as_str().expect("a url")).await;
        assert_eq!((status, served_type.as_str()), (200, content_type), "{photo}");
        assert!(served == bytes, "the same bytes come back");
    }
    let mut stored: Vec<String> = listed.iter().map(|p| p["key"].as_str().expect("a key").to_string()).collect();
    stored.sort();
    assert_eq!(photos.keys().await, stored);

    // A retry under the same key answers the first outcome and keeps nothing new.
    let (_, retried) = create_post(&app, "p-1", Some("k-1"), &files);
    assert_eq!(retried["data"]["createPost"]["replayed"], true, "{retried}");
    assert_eq!(retried["data"]["createPost"]["post"]["photos"][0]["key"], listed[0]["key"]);
    assert_eq!(photos.keys().await, stored, "the retry's uploads were removed");

    // One file at two places of the request is two photos with the same bytes.
    let query = format!(
        "mutation($photos: [Upload!]!) {{ createPost(author: \"ann\", store: \"cafe\", body: \"Twice\", \
         id: \"p-twice\", photos: $photos) {{ {PHOTO_FIELDS} }} }}"
    );
    let map = json!({ "0": ["variables.photos.0", "variables.photos.1"] });
    let request = multipart(&query, json!({ "photos": [null, null] }), map, &[file("0", "a.png", "image/png", PNG)]);
    let (_, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    let twice: Value = serde_json::from_str(&text).expect("JSON");
    let pair = twice["data"]["createPost"]["post"]["photos"].as_array().unwrap_or_else(|| panic!("{twice}"));
    assert_eq!(pair.len(), 2, "{twice}");
    for photo in pair {
        assert_eq!(photo["size"], PNG.len(), "{photo}");
        let (status, _, served) = fetch(photo["url"].as_str().expect("a url")).await;
        assert!(status == 200 && served == PNG, "both places hold the whole file: {photo}");
    }
    let deleted = app.graphql(
        Some(&token(Role::Admin, None, None)),
        "mutation { deletePost(id: \"p-twice\") { position } }",
        json!({}),
    );
    assert!(deleted.get("errors").is_none(), "{deleted}");
    assert_eq!(photos.keys().await, stored);

    // After expiry the URL is refused.
    let url = listed[0]["url"].as_str().expect("a url").to_string();
    tokio::time::sleep(
        (handed_out + Duration::from_millis(6_100)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    assert_eq!(fetch(&url).await.0, 403, "an expired URL is refused");

    // A photo added later, then the post deleted with all its photos.
    let query = format!("mutation($file: Upload!) {{ uploadPhoto(post: \"p-1\", file: $file) {{ {PHOTO_FIELDS} }} }}");
    let request = multipart(
        &query,
        json!({ "file": null }),
        json!({ "f": ["variables.file"] }),
        &[file("f", "x.png", "image/png", PNG)],
    );
    let (status, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    let added: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(status, 200, "{added}");
    let third = &added["data"]["uploadPhoto"]["post"]["photos"][2];
    assert_eq!((third["index"].as_i64(), third["contentType"].as_str()), (Some(2), Some("image/png")), "{added}");
    assert_eq!(photos.keys().await.len(), 3);
    let bob = token(Role::Member, Some("bob"), None);
    let (_, text) = app.post_multipart(Some(&bob), &request);
    assert_eq!(code(&serde_json::from_str(&text).expect("JSON")), "FORBIDDEN", "only the author adds photos");
    assert_eq!(photos.keys().await.len(), 3, "a refused upload stores nothing");

    // The photo added later is cross-posted on its own, after the post (by
    // the embedded social worker, whose networks log); the first photos went
    // out with the post.
    let ann = token(Role::Member, Some("ann"), None);
    let social = "{ post(id: \"p-1\") { social { provider status externalId } \
                  photos { social { photoKey provider status externalId } } } }";
    let shown = app
        .eventually(&ann, social, json!({}), |a| a["data"]["post"]["photos"][2]["social"][0]["status"] == "published");
    let post = &shown["data"]["post"];
    assert_eq!(post["social"][0]["status"], "published", "{shown}");
    assert_eq!((&post["photos"][0]["social"], &post["photos"][1]["social"]), (&json!([]), &json!([])), "{shown}");
    let later = &post["photos"][2]["social"][0];
    assert_eq!((&later["photoKey"], &later["provider"]), (&third["key"], &json!("twitter")), "{shown}");
    assert_ne!(later["externalId"], post["social"][0]["externalId"], "a reply of its own: {shown}");

    let deleted = app.graphql(
        Some(&token(Role::Member, Some("ann"), None)),
        "mutation { deletePost(id: \"p-1\") { post { deleted } } }",
        json!({}),
    );
    assert_eq!(deleted["data"]["deletePost"]["post"]["deleted"], true, "{deleted}");
    assert_eq!(photos.keys().await, Vec::<String>::new(), "deleting a post removes its photos");

    // Where an upload's time went: receiving it (in memory or on disk),
    // putting it in the store, waiting for the posts read model, the whole request.
    let (status, metrics) = app.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    let store = match photos {
        Photos::S3(_) => "s3",
        Photos::Fs(_) => "filesystem",
    };
    let counted = |name: &str, labels: &[&str]| app::counted(&metrics, name, labels);
    let store_label = format!("store=\"{store}\"");
    for (name, labels) in [
        ("pointstream_upload_receive_seconds_count", vec![]),
        ("pointstream_uploads_received_total", vec!["held=\"memory\""]),
        ("pointstream_uploads_received_total", vec!["held=\"disk\""]),
        ("pointstream_photo_put_seconds_count", vec![store_label.as_str(), "from=\"file\""]),
        ("pointstream_read_wait_seconds_count", vec!["projection=\"posts\""]),
        ("pointstream_graphql_request_seconds_count", vec![]),
    ] {
        assert!(counted(name, &labels) >= 1.0, "{name} {labels:?} counted nothing:\n{metrics}");
    }
    // In S3, a request's only photo is put while it arrives (the requests
    // with one file), and completed by the mutation that records it; bob's
    // refused upload abandoned its put. The filesystem is written once a file is in.
    let streamed = |outcome: &str| counted("pointstream_uploads_streamed_total", &[&format!("outcome=\"{outcome}\"")]);
    let completed = counted("pointstream_photo_put_seconds_count", &[store_label.as_str(), "from=\"arrival\""]);
    match photos {
        Photos::S3(_) => {
            assert!(streamed("stored") >= 2.0 && completed >= 2.0, "puts as uploads arrive:\n{metrics}");
            assert!(streamed("abandoned") >= 1.0, "the refused upload's put:\n{metrics}");
        }
        Photos::Fs(_) => assert_eq!((streamed("stored"), completed), (0.0, 0.0), "{metrics}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_in_s3_are_uploaded_served_retried_and_removed() {
    let Some(photos) = Photos::s3().await else { return };
    photos_are_uploaded_served_retried_and_removed(photos).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_on_the_filesystem_are_uploaded_served_retried_and_removed() {
    photos_are_uploaded_served_retried_and_removed(Photos::fs()).await;
}

/// A photo of many pieces arrives whole: in S3, put while it arrives.
async fn a_large_photo_is_stored_whole(photos: Photos) {
    let app = photos.spawn(&[]);
    let mut big = JPEG.to_vec();
    big.resize(600 << 10, 0x5a);
    let (status, created) = create_post(&app, "p-big", None, &[file("0", "big.jpg", "image/jpeg", &big)]);
    assert_eq!(status, 200, "{created}");
    let photo = &created["data"]["createPost"]["post"]["photos"][0];
    assert_eq!((photo["size"].as_u64(), photo["contentType"].as_str()), (Some(big.len() as u64), Some("image/jpeg")));
    assert_eq!(photo["sha256"], hex::encode(Sha256::digest(&big)), "{photo}");
    let (status, _, served) = fetch(photo["url"].as_str().expect("a url")).await;
    assert!(status == 200 && served == big, "the same {} bytes come back", big.len());
    let streamed = app.get("/metrics").1.lines().any(|line| {
        line.starts_with("pointstream_uploads_streamed_total{outcome=\"stored\"} ") && !line.ends_with(" 0")
    });
    assert_eq!(streamed, matches!(photos, Photos::S3(_)), "put while it arrived only in S3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_photo_is_stored_whole_in_s3() {
    let Some(photos) = Photos::s3().await else { return };
    a_large_photo_is_stored_whole(photos).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_photo_is_stored_whole_on_the_filesystem() {
    a_large_photo_is_stored_whole(Photos::fs()).await;
}

async fn bad_uploads_store_nothing(photos: Photos) {
    let app = photos.spawn(&["--max-upload-bytes", "4096", "--max-uploads", "2", "--max-body-bytes", "2048"]);
    let head = app.head();
    let mut oversized = PNG.to_vec();
    oversized.resize(5_000, 0);
    let text = b"just some text pretending to be a photo".as_slice();
    let cases: Vec<(&str, Vec<FilePart<'_>>)> = vec![
        ("a text file named .jpg", vec![file("0", "photo.jpg", "image/jpeg", text)]),
        ("an empty file", vec![file("0", "photo.png", "image/png", b"")]),
        ("a file over the size limit", vec![file("0", "big.png", "image/png", &oversized)]),
        (
            "too many files",
            vec![
                file("0", "a.png", "image/png", PNG),
                file("1", "b.png", "image/png", PNG),
                file("2", "c.png", "image/png", PNG),
            ],
        ),
        (
            "a photo then a text file",
            vec![file("0", "a.png", "image/png", PNG), file("1", "b.jpg", "image/jpeg", text)],
        ),
    ];
    for (what, files) in &cases {
        let (status, answer) = create_post(&app, "p-bad", None, files);
        assert_eq!(code(&answer), "BAD_USER_INPUT", "{what}: HTTP {status}: {answer}");
        assert_eq!(photos.keys().await, Vec::<String>::new(), "{what}: nothing stored");
    }

    // Parts the map does not name still count: each would be a temporary file.
    let tiny: Vec<String> = (0..6).map(|i| i.to_string()).collect();
    let parts: Vec<FilePart<'_>> = tiny.iter().map(|name| file(name, "t.png", "image/png", PNG)).collect();
    let query = "mutation($photos: [Upload!]!) { createPost(author: \"ann\", store: \"cafe\", body: \"x\", photos: $photos) { position } }";
    let request = multipart(query, json!({ "photos": [null] }), json!({ "0": ["variables.photos.0"] }), &parts);
    let (status, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(code(&answer), "BAD_USER_INPUT", "six parts: HTTP {status}: {answer}");

    // The operations and map parts share the body limit, though each file may be larger.
    let padded = format!("{query}{}", " ".repeat(3_000));
    let request = multipart(&padded, json!({ "photos": [null] }), json!({ "0": ["variables.photos.0"] }), &parts[..1]);
    let (status, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(code(&answer), "BAD_USER_INPUT", "operations over the body limit: HTTP {status}: {answer}");

    // A truncated body: the closing boundary and half the file never arrive.
    let files = [file("0", "a.jpg", "image/jpeg", JPEG)];
    let query = "mutation($photos: [Upload!]!) { createPost(author: \"ann\", store: \"cafe\", body: \"x\", photos: $photos) { position } }";
    let (content_type, body) =
        multipart(query, json!({ "photos": [null] }), json!({ "0": ["variables.photos.0"] }), &files);
    let cut = body.len() - JPEG.len() / 2;
    let (status, text) =
        app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &(content_type, body[..cut].to_vec()));
    let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(code(&answer), "BAD_USER_INPUT", "a truncated body: HTTP {status}: {answer}");

    // A good photo whose command is refused is removed again.
    let query = "mutation($photos: [Upload!]!) { createPost(author: \"ann\", store: \"nowhere\", body: \"x\", photos: $photos) { position } }";
    let request = multipart(query, json!({ "photos": [null] }), json!({ "0": ["variables.photos.0"] }), &files);
    let (_, text) = app.post_multipart(Some(&token(Role::Member, Some("ann"), None)), &request);
    assert_eq!(code(&serde_json::from_str(&text).expect("JSON")), "NOT_FOUND", "{text}");

    assert_eq!(photos.keys().await, Vec::<String>::new(), "no orphan is left");
    assert_eq!(app.head(), head, "nothing was written");
    assert_eq!(app.get("/healthz").0, 200);
    assert_eq!(app.get("/readyz").0, 200, "{}", app.get("/readyz").1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing_in_s3() {
    let Some(photos) = Photos::s3().await else { return };
    bad_uploads_store_nothing(photos).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing_on_the_filesystem() {
    bad_uploads_store_nothing(Photos::fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_unsigned_photo_url_is_refused() {
    let photos = Photos::fs();
    let app = photos.spawn(&[]);
    let (_, created) = create_post(&app, "p-2", None, &[file("0", "a.png", "image/png", PNG)]);
    let url = created["data"]["createPost"]["post"]["photos"][0]["url"].as_str().unwrap_or_else(|| panic!("{created}"));
    assert_eq!(fetch(url).await.0, 200);
    let (path, _) = url.split_once('?').expect("a query");
    assert_eq!(fetch(path).await.0, 403, "unsigned");
    let forged = url.replace("expires=", "expires=9");
    assert_eq!(fetch(&forged).await.0, 403, "a later expiry than signed");
    let other = format!("{}?{}", path.replace(".png", ".jpg"), url.split_once('?').expect("a query").1);
    assert_eq!(fetch(&other).await.0, 403, "another key");
}
