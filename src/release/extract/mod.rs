//! Safe unpacking of a release tarball (`mix release` with the `:tar` step)
//! into a spool, read once: no absolute paths, no `..`, no entry below a
//! symlink or a file; symlinks, hard links and modes (setuid included) kept
//! as the tarball has them, and nothing of it ever on the host's file system.

use crate::error::io as io_err;
use crate::tree::{Entry, Spool, SpoolBuilder};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::ReleaseError;

/// Bounds on what a release tarball may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtractLimits {
    /// File bytes (plus 512 per entry) the tarball may write to scratch;
    /// gzip allows ratios near 1000:1, so the tarball's own size says little.
    pub max_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_bytes: DEFAULT_MAX_EXTRACTED,
        }
    }
}

/// 8 GiB: ten times the biggest Phoenix release seen, far below what fills
/// a CI runner's disk by surprise.
pub const DEFAULT_MAX_EXTRACTED: u64 = 8 << 30;

/// Unpack the gzip tarball `tarball` into a spool in `scratch` (an
/// unlinked file: nothing is left behind, whatever happens to the process).
/// The spool's entries are reached under the tarball's own path
/// (`guildhall-0.1.0.tar.gz/releases/start_erl.data`), which names them in
/// errors and never exists on disk.
pub(crate) fn extract(
    tarball: &Path,
    scratch: &Path,
    limits: ExtractLimits,
) -> Result<Spool, ReleaseError> {
    let file = File::open(tarball).map_err(io_err("opening", tarball))?;
    let gz = MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, file));
    // Inflating, the costliest part, runs on a thread of its own a few
    // chunks ahead of the tar reader and the spool writes.
    std::thread::scope(|scope| unpack(tarball, ahead::ReadAhead::spawn(scope, gz), scratch, limits))
}

/// [`extract`] from the tar stream `input` of `tarball`.
fn unpack(
    tarball: &Path,
    input: impl Read,
    scratch: &Path,
    limits: ExtractLimits,
) -> Result<Spool, ReleaseError> {
    let mut budget = limits.max_bytes;
    let too_large = || ReleaseError::TooLarge {
        path: tarball.to_owned(),
        limit: limits.max_bytes,
    };
    let corrupt = |source: io::Error| ReleaseError::CorruptTarball {
        path: tarball.to_owned(),
        source,
    };
    let spool_err =
        |e: io::Error| ReleaseError::from(io_err("writing the unpacked release to", scratch)(e));
    let mut spool = SpoolBuilder::new(scratch).map_err(&spool_err)?;
    let mut archive = tar::Archive::new(input);
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path().map_err(corrupt)?.into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        budget = budget.checked_sub(512).ok_or_else(too_large)?;
        // A PAX sparse file (GNU tar --sparse --format=posix) carries its
        // real name and map in PAX keys; read as a plain entry it would land
        // as `GNUSparseFile.N/…` holding the map.
        let sparse = pax_sparse(&mut entry).map_err(corrupt)?;
        let raw_path = match &sparse {
            Some(sp) => sp.name.clone().unwrap_or(raw_path),
            None => raw_path,
        };
        let unsafe_entry = |reason: String| ReleaseError::UnsafeTarball {
            path: tarball.to_owned(),
            entry: raw_path.clone(),
            reason,
        };
        let Some(rel) = sanitize(&raw_path).map_err(&unsafe_entry)? else {
            continue; // `./`
        };
        let rel = rel.as_os_str().as_bytes();
        let mode = || entry.header().mode().map(|m| m & 0o7777).map_err(corrupt);
        match kind {
            EntryType::Directory => {
                let mode = mode()?;
                spool.add(rel, Entry::Dir { mode }).map_err(&unsafe_entry)?;
            }
            // tar expands old-GNU sparse entries ('S') as it reads them.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mode = mode()?;
                let offset = spool.offset();
                let (size, content) = match &sparse {
                    None => {
                        // Hashed while it is in cache, on this thread (the
                        // inflating one is the busier): the layers' content
                        // keys then cost no second pass over the files.
                        let mut sha = Sha256::new();
                        let mut size = 0u64;
                        loop {
                            let n = match entry.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => n,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(e) => return Err(corrupt(e)),
                            };
                            budget = budget.checked_sub(n as u64).ok_or_else(too_large)?;
                            sha.update(&buf[..n]);
                            spool.append(&buf[..n]).map_err(&spool_err)?;
                            size += n as u64;
                        }
                        (size, Some(sha.finalize().into()))
                    }
                    Some(sp) => {
                        budget = budget.checked_sub(sp.real_size).ok_or_else(too_large)?;
                        let start = spool.reserve(sp.real_size).map_err(&spool_err)?;
                        debug_assert_eq!(start, offset);
                        write_pax_sparse(&mut entry, sp, &mut buf, &mut |at, data| {
                            spool.write_at(start + at, data)
                        })
                        .map_err(|e| match e {
                            SparseError::Read(e) => corrupt(e),
                            SparseError::Write(e) => spool_err(e),
                            SparseError::Bad(reason) => unsafe_entry(reason),
                        })?;
                        (sp.real_size, None)
                    }
                };
                spool
                    .add(
                        rel,
                        Entry::File {
                            mode,
                            offset,
                            size,
                            content,
                        },
                    )
                    .map_err(&unsafe_entry)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("a symlink without a target".into()))?;
                spool
                    .add(rel, Entry::Symlink { target: &link })
                    .map_err(&unsafe_entry)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry("a hard link without a target".into()))?;
                let link_rel = sanitize(&link)
                    .map_err(&unsafe_entry)?
                    .ok_or_else(|| unsafe_entry("a hard link to the archive root".into()))?;
                spool
                    .add(
                        rel,
                        Entry::HardLink {
                            target: link_rel.as_os_str().as_bytes(),
                        },
                    )
                    .map_err(&unsafe_entry)?;
            }
            other => {
                tracing::warn!(
                    "{}: skipping {} (entry type {:?} is not a file, directory or link)",
                    tarball.display(),
                    raw_path.display(),
                    other
                );
            }
        }
    }
    // Read to the end, so the gzip trailer (CRC, size) is checked.
    io::copy(archive.into_inner().by_ref(), &mut io::sink()).map_err(corrupt)?;
    spool.finish(tarball.to_owned()).map_err(&spool_err)
}

/// The relative path an entry names; `None` for the archive root itself.
fn sanitize(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("the path is absolute".into());
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

mod ahead;
mod sparse;

use sparse::*;

#[cfg(test)]
mod tests;
