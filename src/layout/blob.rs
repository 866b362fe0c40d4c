//! Blobs being written: hashed as they go, committed under their digest
//! with an fsync and a rename, removed when dropped uncommitted.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{LayoutError, Result, io_err};
use crate::image::{Digest, DigestWriter};

/// A blob being written: hashing as it goes, committed under its digest.
pub struct BlobWriter {
    pub(super) inner: Option<DigestWriter<BufWriter<File>>>,
    pub(super) tmp: PathBuf,
    pub(super) blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flush, check the digest against `expected` (if given), fsync and
    /// rename into `blobs/sha256/`. On mismatch the temp file is removed.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let w = self.inner.take().expect("commit once");
        let (buf, digest, len) = w.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_err("writing", &self.tmp)(e.into_error()))?;
        if let Some(exp) = expected {
            if exp != &digest {
                let _ = fs::remove_file(&self.tmp);
                return Err(LayoutError::DigestMismatch {
                    what: self.tmp.display().to_string(),
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        drop(file);
        let dst = self.blobs.join(digest.hex());
        fs::rename(&self.tmp, &dst).map_err(io_err("storing", &dst))?;
        Ok((digest, len))
    }

    /// The temp file (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// sha256 of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = crate::image::Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}
