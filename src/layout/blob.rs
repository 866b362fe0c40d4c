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
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.finish(expected)?.store()
    }

    /// Flush and check the digest against `expected` (if given), leaving
    /// the fsync and rename to [`FinishedBlob::store`] — which may run on
    /// another thread while the next blob is made. On mismatch the temp
    /// file is removed.
    pub fn finish(mut self, expected: Option<&Digest>) -> Result<FinishedBlob> {
        let w = self.inner.take().expect("finish once");
        let (buf, digest, len) = w.finish();
        let tmp = std::mem::take(&mut self.tmp);
        let file = buf.into_inner().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("writing", &tmp)(e.into_error())
        })?;
        if let Some(exp) = expected {
            if exp != &digest {
                let _ = fs::remove_file(&tmp);
                return Err(LayoutError::DigestMismatch {
                    what: tmp.display().to_string(),
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        let dst = self.blobs.join(digest.hex());
        Ok(FinishedBlob {
            file: Some(file),
            tmp,
            dst,
            digest,
            len,
        })
    }

    /// The temp file (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

/// A blob written in full and checked, not yet durable or under its name.
/// Dropped unstored, its temp file is removed.
pub struct FinishedBlob {
    file: Option<File>,
    tmp: PathBuf,
    dst: PathBuf,
    digest: Digest,
    len: u64,
}

impl FinishedBlob {
    /// Its digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Its size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// fsync, then rename into `blobs/sha256/`.
    pub fn store(mut self) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("store once");
        file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.dst).map_err(io_err("storing", &self.dst))?;
        self.tmp = PathBuf::new();
        Ok((self.digest.clone(), self.len))
    }
}

impl Drop for FinishedBlob {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
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
