//! Batch files in S3: gzip CSV parts and a Redshift manifest per table and batch, under
//! `{prefix}/{connector}/{batch}/{schema}.{table}/`. Keys depend only on the batch id, so a
//! retried flush overwrites its own files instead of adding to them. Files are removed after
//! their batch commits (or after `file_retention`); files of a batch that never committed (a
//! crash between upload and COPY) are removed when the sink starts, and so are multipart uploads
//! that never completed (S3 keeps and bills their parts, unseen, until they are aborted).
//!
//! The client takes the standard AWS settings from the environment (`AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the ECS task role, `AWS_ENDPOINT_URL` for an
//! S3-compatible server, with path-style addressing).

use std::io::Write;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use flate2::write::GzEncoder;
use flate2::Compression;
use tracing::{debug, info, warn};

use crate::sink::SinkError;

const SINK: &str = "redshift";
/// Compressed parts above this size are uploaded in pieces of this size (S3's multipart
/// minimum is 5 MiB).
const MULTIPART_CHUNK: usize = 8 * 1024 * 1024;
const CHECK_BUCKET: &str = "checking the bucket";

pub struct Files {
    client: Client,
    pub bucket: String,
    /// `{prefix}/{connector}/`
    root: String,
}

/// What one table's upload left in S3.
pub struct Uploaded {
    pub manifest_url: String,
    pub keys: Vec<String>,
    pub compressed_bytes: u64,
}

fn s3_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    bucket: &str,
    what: &str,
    e: SdkError<E>,
) -> SinkError {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default().to_string();
    let detail = match e.message() {
        Some(m) => format!("{code}: {m}"),
        None => format!("{code} {}", crate::aws::error_chain(&e)),
    };
    let fatal = |message: String| SinkError::Fatal {
        sink: SINK.into(),
        message,
    };
    let missing = code == "NoSuchBucket" || (what == CHECK_BUCKET && status == Some(404));
    let denied = matches!(
        code.as_str(),
        "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "ExpiredToken"
            | "InvalidToken"
            | "AuthorizationHeaderMalformed"
    ) || matches!(status, Some(401 | 403));
    if crate::aws::no_credentials(&e) {
        fatal(format!(
            "no AWS credentials for bucket `{bucket}` ({what}: {detail}): set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or run with a task role"
        ))
    } else if missing {
        fatal(format!(
            "S3 bucket `{bucket}` does not exist ({what}: {detail}): create it or point S3_BUCKET at an existing bucket"
        ))
    } else if denied {
        fatal(format!(
            "S3 refused the credentials for bucket `{bucket}` ({what}: {detail}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the task role, and that it may get, put, list and delete objects under the prefix"
        ))
    } else if status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429) {
        fatal(format!("S3 rejected {what} on bucket `{bucket}`: {detail}"))
    } else {
        SinkError::Transient {
            sink: SINK.into(),
            message: format!("S3 {what} on bucket `{bucket}` failed: {detail}"),
        }
    }
}

/// Gzip one CSV part.
pub fn gzip(csv: &str) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(csv.len() / 4), Compression::fast());
    enc.write_all(csv.as_bytes()).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// The Redshift manifest listing `urls` (with their sizes), each mandatory.
pub fn manifest(entries: &[(String, u64)]) -> String {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(url, len)| {
            serde_json::json!({"url": url, "mandatory": true, "meta": {"content_length": len}})
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "entries": entries }))
        .expect("JSON of strings")
}

impl Files {
    /// Build the client from the environment and check that the bucket is there and ours.
    pub async fn connect(bucket: &str, prefix: &str, connector: &str) -> Result<Files, SinkError> {
        let shared = crate::aws::sdk_config().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if shared.endpoint_url().is_some() {
            conf = conf.force_path_style(true);
        }
        Self::new(Client::from_conf(conf.build()), bucket, prefix, connector).await
    }

    /// With a given client; checks the bucket.
    pub async fn new(
        client: Client,
        bucket: &str,
        prefix: &str,
        connector: &str,
    ) -> Result<Files, SinkError> {
        client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| s3_error(bucket, CHECK_BUCKET, e))?;
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            format!("{connector}/")
        } else {
            format!("{prefix}/{connector}/")
        };
        Ok(Files {
            client,
            bucket: bucket.to_string(),
            root,
        })
    }

    /// The key prefix of a batch.
    pub fn batch_prefix(&self, batch: &str) -> String {
        format!("{}{batch}/", self.root)
    }

    /// Upload one table's parts of a batch and their manifest. Returns the manifest's URL.
    pub async fn put_table(
        &self,
        batch: &str,
        table: &str,
        parts: &[String],
    ) -> Result<Uploaded, SinkError> {
        let dir = format!("{}{table}/", self.batch_prefix(batch));
        let mut entries = Vec::with_capacity(parts.len());
        let mut keys = Vec::with_capacity(parts.len() + 1);
        let mut compressed_bytes = 0;
        for (i, part) in parts.iter().enumerate() {
            let key = format!("{dir}part-{i:05}.csv.gz");
            let body = gzip(part);
            compressed_bytes += body.len() as u64;
            entries.push((format!("s3://{}/{key}", self.bucket), body.len() as u64));
            self.put(&key, body).await?;
            keys.push(key);
        }
        let key = format!("{dir}manifest");
        self.put(&key, manifest(&entries).into_bytes()).await?;
        let manifest_url = format!("s3://{}/{key}", self.bucket);
        keys.push(key);
        Ok(Uploaded {
            manifest_url,
            keys,
            compressed_bytes,
        })
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), SinkError> {
        let b = &self.bucket;
        if body.len() <= MULTIPART_CHUNK {
            self.client
                .put_object()
                .bucket(b)
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| s3_error(b, "uploading a batch file", e))?;
            return Ok(());
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(b)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(b, "starting a multipart upload", e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let result = self.put_parts(key, &id, &body).await;
        if result.is_err() {
            // S3 keeps the parts of an unfinished upload, unseen and billed, until it is
            // aborted; one left by a crash is aborted at the next start.
            if let Err(e) = self.abort(key, &id).await {
                warn!(sink = SINK, key, error = %e, "could not abort the failed multipart upload; it is aborted at the next start");
            }
        }
        result
    }

    async fn put_parts(&self, key: &str, id: &str, body: &[u8]) -> Result<(), SinkError> {
        let b = &self.bucket;
        let mut done = Vec::new();
        for (i, chunk) in body.chunks(MULTIPART_CHUNK).enumerate() {
            let n = i as i32 + 1;
            let part = self
                .client
                .upload_part()
                .bucket(b)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| s3_error(b, "uploading a batch file part", e))?;
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(b)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(b, "completing a multipart upload", e))?;
        debug!(key, "multipart upload complete");
        Ok(())
    }

    async fn abort(&self, key: &str, id: &str) -> Result<(), SinkError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| s3_error(&self.bucket, "aborting a multipart upload", e))?;
        Ok(())
    }

    /// Abort this connector's multipart uploads that never completed (a process stopped while
    /// uploading a large part). Returns how many.
    pub async fn abort_unfinished(&self) -> Result<usize, SinkError> {
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.root)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| s3_error(&self.bucket, "listing unfinished uploads", e))?;
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    self.abort(key, id).await?;
                    aborted += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        if aborted > 0 {
            info!(sink = SINK, uploads = aborted, prefix = %self.root, "aborted unfinished multipart uploads of earlier runs");
        }
        Ok(aborted)
    }

    /// Remove objects by key (in requests of up to 1,000).
    pub async fn remove(&self, keys: &[String]) -> Result<(), SinkError> {
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .expect("keys are set");
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("objects are set");
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error(&self.bucket, "removing batch files", e))?;
        }
        Ok(())
    }

    /// Remove this connector's files last modified before `older_than` ago (all of them for
    /// zero). Returns how many were removed.
    pub async fn remove_old(&self, older_than: Duration) -> Result<usize, SinkError> {
        let cutoff = SystemTime::now() - older_than;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.root)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| s3_error(&self.bucket, "listing batch files", e))?;
            for o in page.contents() {
                let old = o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .is_none_or(|t| older_than.is_zero() || t < cutoff);
                if let (Some(k), true) = (o.key(), old) {
                    keys.push(k.to_string());
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        self.remove(&keys).await?;
        if !keys.is_empty() {
            info!(sink = SINK, files = keys.len(), prefix = %self.root, "removed old batch files");
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lists_every_part_as_mandatory() {
        let m: serde_json::Value = serde_json::from_str(&manifest(&[
            ("s3://b/k/part-00000.csv.gz".into(), 10),
            ("s3://b/k/part-00001.csv.gz".into(), 20),
        ]))
        .unwrap();
        let entries = m["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["url"], "s3://b/k/part-00001.csv.gz");
        assert_eq!(entries[1]["mandatory"], true);
        assert_eq!(entries[1]["meta"]["content_length"], 20);
    }
}
