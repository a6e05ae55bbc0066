//! The Lambda zips on disk: their hashes are computed once per file version (path, size and
//! modification time) and kept for the engine's life, so a steady-state pass reads no artifact;
//! the bytes are read only to upload code (a new function, or a CodeSha256 that differs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// base64(SHA-256(zip)), as Lambda reports CodeSha256.
pub fn code_sha256(zip: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip))
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    size: u64,
    modified: Option<SystemTime>,
}

impl Version {
    fn of(path: &Path) -> std::io::Result<Version> {
        let meta = std::fs::metadata(path)?;
        Ok(Version {
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// How many code uploads may be in flight at once, whatever the controller's concurrency: an
/// upload holds the zip and its base64 JSON body (~2.5× the zip) in memory, so this bounds the
/// operator's peak memory (AWS processes uploads one by one per function anyway).
pub const PARALLEL_UPLOADS: usize = 1;

/// The engine's artifact hashes. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct Artifacts {
    hashes: Mutex<HashMap<PathBuf, (Version, String)>>,
    reads: AtomicU64,
    uploads: tokio::sync::Semaphore,
}

impl Default for Artifacts {
    fn default() -> Self {
        Artifacts {
            hashes: Mutex::default(),
            reads: AtomicU64::default(),
            uploads: tokio::sync::Semaphore::new(PARALLEL_UPLOADS),
        }
    }
}

impl Artifacts {
    /// base64(SHA-256) of the zip at `path`: from the cache while the file's size and
    /// modification time are unchanged, else read and hashed once.
    pub fn sha(&self, path: &Path) -> std::io::Result<String> {
        let version = Version::of(path)?;
        if let Some((v, sha)) = self.hashes.lock().ok().and_then(|h| h.get(path).cloned())
            && v == version
        {
            return Ok(sha);
        }
        let sha = code_sha256(&self.read(path)?);
        if let Ok(mut h) = self.hashes.lock() {
            h.insert(path.to_owned(), (version, sha.clone()));
        }
        Ok(sha)
    }

    /// The zip's bytes (to upload).
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        std::fs::read(path)
    }

    /// A turn to upload code: hold it until the upload's request is done.
    pub async fn upload_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.uploads.acquire().await.ok()
    }

    /// How many times an artifact file was read (hashing or uploading) by this engine.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zip_is_hashed_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.zip");
        std::fs::write(&path, b"v1").unwrap();
        let a = Artifacts::default();
        let first = a.sha(&path).unwrap();
        assert_eq!(first, code_sha256(b"v1"));
        assert_eq!(a.sha(&path).unwrap(), first);
        assert_eq!(a.reads(), 1, "the second hash came from the cache");
        std::fs::write(&path, b"version 2").unwrap();
        assert_eq!(a.sha(&path).unwrap(), code_sha256(b"version 2"));
        assert_eq!(a.reads(), 2, "a rebuilt zip is hashed again");
        assert!(a.sha(&dir.path().join("missing.zip")).is_err());
    }
}
