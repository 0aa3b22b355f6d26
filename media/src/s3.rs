//! Photos in an S3 bucket through aws-sdk-s3: any S3-protocol service, with
//! a configurable endpoint and path-style addressing. Credentials come from
//! the usual AWS sources (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//! profiles, instance roles).

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::primitives::Length;

use crate::photo::CheckedPhoto;
use crate::{Blob, MediaError, StoredObject};

/// Where the bucket is.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The service's URL; `None`: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The region; `None`: from the environment, else `us-east-1`.
    pub region: Option<String>,
    /// Address the bucket in the path (`{endpoint}/{bucket}/{key}`), as most
    /// S3-compatible services want, instead of in the host name.
    pub path_style: bool,
}

/// Photos in an S3 bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

pub(crate) fn failed(operation: &'static str, key: &str, err: impl std::error::Error) -> MediaError {
    MediaError::Storage { operation, key: key.to_string(), reason: DisplayErrorContext(err).to_string() }
}

impl S3Store {
    /// A client for `config`'s bucket. Does not contact the service.
    pub async fn connect(config: &S3Config) -> S3Store {
        let region = RegionProviderChain::first_try(config.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        // Checksums only where S3 requires them: S3-compatible services vary
        // in their support of the newer trailing checksums.
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3Store { client: Client::from_conf(s3), bucket: config.bucket.clone() }
    }

    /// The SDK client (tests and the benchmark use it directly).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub(crate) async fn put(&self, key: &str, photo: CheckedPhoto) -> Result<(), MediaError> {
        // From the start: one upload may stand at two places of a request,
        // as clones of one file sharing its position.
        let mut file = photo.file;
        std::io::Seek::rewind(&mut file)?;
        let body = if photo.in_memory {
            // A memory file: read whole at once, there is no disk to wait on.
            let mut bytes = Vec::with_capacity(usize::try_from(photo.size).unwrap_or(0));
            std::io::Read::read_to_end(&mut file, &mut bytes)?;
            ByteStream::from(bytes)
        } else {
            // Streamed from the file on disk: memory does not grow with its size.
            ByteStream::read_from()
                .file(tokio::fs::File::from_std(file))
                .length(Length::Exact(photo.size))
                // The default 4 KiB reads cost a syscall and a body chunk each.
                .buffer_size(256 << 10)
                .build()
                .await
                .map_err(|e| failed("reading upload for", key, e))?
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(photo.kind.content_type())
            .content_length(i64::try_from(photo.size).unwrap_or(i64::MAX))
            .body(body)
            .customize()
            // Either body goes as UNSIGNED-PAYLOAD, as a streamed one would
            // anyway: its SHA-256 was taken as it arrived, and the SDK need
            // not hash a body in memory a second time.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| failed("put", key, e))?;
        Ok(())
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Blob, MediaError> {
        let object = self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                MediaError::NotFound(key.to_string())
            } else {
                failed("get", key, e)
            }
        })?;
        let content_type = object.content_type().unwrap_or("application/octet-stream").to_string();
        let bytes = object.body.collect().await.map_err(|e| failed("reading", key, e))?.into_bytes();
        Ok(Blob { content_type, bytes })
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), MediaError> {
        self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(|e| failed("delete", key, e))?;
        Ok(())
    }

    pub(crate) async fn list(&self) -> Result<Vec<StoredObject>, MediaError> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix("photos/").into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("list", &self.bucket, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(StoredObject {
                    key: key.to_string(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        Ok(objects)
    }

    pub(crate) async fn presign(&self, key: &str, ttl: Duration) -> Result<String, MediaError> {
        let config = PresigningConfig::expires_in(ttl).map_err(|e| failed("presigning", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| failed("presigning", key, e))?;
        Ok(request.uri().to_string())
    }

    pub(crate) async fn check(&self) -> Result<(), MediaError> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| failed("head", &self.bucket, e))?;
        Ok(())
    }
}
