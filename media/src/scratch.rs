//! Throwaway photo stores for tests: a fresh bucket on the test S3 server
//! (`POINTSTREAM_TEST_S3_ENDPOINT`, with the usual AWS credential variables;
//! `scripts/test` starts one), or a fresh directory.
//!
//! A missing S3 server is an error that says how to get one. Locally (never
//! in CI, where `CI` is set) `POINTSTREAM_SKIP_S3=1` skips S3 instead.

use std::path::PathBuf;

use crate::{FsStore, MediaStore, S3Config, S3Store, UrlSigner};

/// True when S3 tests were explicitly opted out of (never in CI).
pub fn s3_skipped() -> bool {
    std::env::var_os("CI").is_none() && std::env::var("POINTSTREAM_SKIP_S3").is_ok_and(|v| v == "1")
}

/// The test S3 server's endpoint.
pub fn s3_endpoint() -> Result<String, String> {
    std::env::var("POINTSTREAM_TEST_S3_ENDPOINT").map_err(|_| {
        "no S3 test server: run scripts/test (it starts one), or set POINTSTREAM_TEST_S3_ENDPOINT \
         (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            .to_string()
    })
}

/// A bucket that exists only for one test.
pub struct ScratchBucket {
    /// Where it is.
    pub config: S3Config,
    /// A store on it.
    pub store: S3Store,
}

impl ScratchBucket {
    /// A fresh, empty bucket; `Ok(None)` only when S3 was opted out of.
    pub async fn create() -> Result<Option<ScratchBucket>, String> {
        if s3_skipped() {
            eprintln!("POINTSTREAM_SKIP_S3=1: skipping an S3 test");
            return Ok(None);
        }
        let config = S3Config {
            bucket: format!("pointstream-test-{}", uuid::Uuid::new_v4().simple()),
            endpoint: Some(s3_endpoint()?),
            region: Some("us-east-1".to_string()),
            path_style: true,
        };
        let store = S3Store::connect(&config).await;
        store.client().create_bucket().bucket(&config.bucket).send().await.map_err(|e| {
            format!("cannot create a bucket at {:?}: {}", config.endpoint, aws_sdk_s3::error::DisplayErrorContext(e))
        })?;
        Ok(Some(ScratchBucket { config, store }))
    }

    /// The store as the application uses it.
    pub fn media(&self) -> MediaStore {
        MediaStore::S3(self.store.clone())
    }

    /// Every key in the bucket, photo or not.
    pub async fn keys(&self) -> Vec<String> {
        let listed = self.store.client().list_objects_v2().bucket(&self.config.bucket).send().await;
        let listed = listed
            .unwrap_or_else(|e| panic!("lists {}: {}", self.config.bucket, aws_sdk_s3::error::DisplayErrorContext(e)));
        let mut keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
        keys.sort();
        keys
    }
}

/// A fresh directory for a filesystem store, under the system's temp dir.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pointstream-media-{}", uuid::Uuid::new_v4().simple()))
}

/// A filesystem store in a fresh directory, its URLs pointing at `base_url`.
pub fn scratch_fs(base_url: &str) -> MediaStore {
    MediaStore::Fs(FsStore::new(scratch_dir(), UrlSigner::new(b"scratch photos"), base_url))
}
