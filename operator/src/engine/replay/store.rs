//! The failure bucket as replay uses it: list the parked batches, read one, record what was
//! published of a batch that stays parked, and move a fully replayed batch under `replayed/`.
//!
//! Calls: ListObjectsV2 (s3:ListBucket), GetObject, PutObject, DeleteObject. The move is a
//! PutObject of the bytes already read, then the DeleteObject of the original: the only copy is
//! never deleted before its events are published, and an interrupted move is finished by the
//! next run (the original is found again, its `replayed/` copy says it is done).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};

use super::record::{PARKED_PREFIX, Published, published_key, replayed_key};
use crate::engine::EngineError;
use crate::engine::errors::{aws_error, internal, is_not_found};

/// A parked batch as listed: its key and when it was parked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// From the key (`…/YYYY-MM-DDTHH.MM.SS-<uuid>`), else the object's LastModified.
    pub parked_at: Option<DateTime<Utc>>,
}

/// What replay knows of a parked batch from earlier runs.
#[derive(Debug, Default)]
pub struct Marks {
    /// The batch was moved under `replayed/` but its original is still there (an interrupted
    /// move): nothing is published again, the move is finished.
    pub done: bool,
    /// Sequence numbers already published by an earlier run that stopped part-way.
    pub published: Published,
    /// The record of [`Marks::published`] exists (deleted once the batch is replayed).
    pub has_record: bool,
}

fn object(bucket: &str, key: &str) -> String {
    format!("s3 object s3://{bucket}/{key}")
}

/// Every key under `prefix`, in the order S3 lists them, with its LastModified.
async fn list(
    s3: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, Option<DateTime<Utc>>)>, EngineError> {
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| aws_error(&e, "s3:ListBucket", &format!("s3 bucket {bucket}")))?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            let modified = o
                .last_modified()
                .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
            out.push((key.to_owned(), modified));
        }
    }
    Ok(out)
}

/// The parked batches: every object under `aws/lambda/`.
pub async fn parked(s3: &Client, bucket: &str) -> Result<Vec<Listed>, EngineError> {
    Ok(list(s3, bucket, PARKED_PREFIX)
        .await?
        .into_iter()
        .map(|(key, modified)| Listed {
            parked_at: super::record::parked_at(&key).or(modified),
            key,
        })
        .collect())
}

/// The bytes of an object; None when it is gone.
async fn get(s3: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(aws_error(&e, "s3:GetObject", &object(bucket, key))),
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| internal(format!("reading {}", object(bucket, key)), e))?;
    Ok(Some(bytes.into_bytes().to_vec()))
}

/// The body of a parked batch; None when it is gone (replayed by a concurrent run).
pub async fn read(s3: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
    get(s3, bucket, key).await
}

/// What earlier runs left for this batch: its `replayed/` copy, its record of published events.
pub async fn marks(s3: &Client, bucket: &str, key: &str) -> Result<Marks, EngineError> {
    let copy = replayed_key(key);
    let found = list(s3, bucket, &copy).await?;
    let done = found.iter().any(|(k, _)| *k == copy);
    let record = published_key(key);
    let mut marks = Marks {
        done,
        ..Marks::default()
    };
    if found.iter().any(|(k, _)| *k == record)
        && let Some(body) = get(s3, bucket, &record).await?
    {
        marks.has_record = true;
        // An unreadable record is treated as none: republishing is safe (same event ids).
        marks.published = serde_json::from_slice(&body).unwrap_or_default();
    }
    Ok(marks)
}

async fn put(s3: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), EngineError> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| aws_error(&e, "s3:PutObject", &object(bucket, key)))?;
    Ok(())
}

async fn delete(s3: &Client, bucket: &str, key: &str) -> Result<(), EngineError> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws_error(&e, "s3:DeleteObject", &object(bucket, key)))?;
    Ok(())
}

/// Records what was published of a batch that stays parked.
pub async fn record_published(
    s3: &Client,
    bucket: &str,
    key: &str,
    published: &Published,
) -> Result<(), EngineError> {
    let body = serde_json::to_vec(published)
        .map_err(|e| internal(format!("writing {}", published_key(key)), e))?;
    put(s3, bucket, &published_key(key), body).await
}

/// Moves a fully replayed batch under `replayed/` (copy first, then the original), then drops
/// its record of published events. `body` is None when the copy is already there.
pub async fn mark_replayed(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: Option<Vec<u8>>,
    has_record: bool,
) -> Result<(), EngineError> {
    if let Some(body) = body {
        put(s3, bucket, &replayed_key(key), body).await?;
    }
    delete(s3, bucket, key).await?;
    if has_record {
        delete(s3, bucket, &published_key(key)).await?;
    }
    Ok(())
}
