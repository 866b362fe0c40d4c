//! Safe extraction of a release tarball (`mix release` with the `:tar` step):
//! no absolute paths, no `..`, nothing written through a symlink; symlinks
//! and hard links kept as such, permission bits set explicitly (umask-free).

use crate::error::io as io_err;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use super::ReleaseError;

/// Bounds on what a release tarball may extract to.
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

/// What extraction had to change on the host side: files whose setuid or
/// setgid bits were dropped from the scratch copy (so no root-owned setuid
/// file lies around in scratch), with the mode the image must still give them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extracted {
    /// Release-relative path → the mode in the tarball.
    pub special_modes: BTreeMap<PathBuf, u32>,
}

/// Extract the gzip tarball `tarball` into the (existing, empty) `dest`.
pub(crate) fn extract(
    tarball: &Path,
    dest: &Path,
    limits: ExtractLimits,
) -> Result<Extracted, ReleaseError> {
    let mut out = Extracted::default();
    let mut budget = limits.max_bytes;
    let too_large = || ReleaseError::TooLarge {
        path: tarball.to_owned(),
        limit: limits.max_bytes,
    };
    let corrupt = |source: io::Error| ReleaseError::CorruptTarball {
        path: tarball.to_owned(),
        source,
    };
    let file = File::open(tarball).map_err(io_err("opening", tarball))?;
    let mut archive = tar::Archive::new(MultiGzDecoder::new(BufReader::new(file)));
    // Directory modes are applied last, so a read-only directory does not
    // stop its own contents from being written.
    let mut dir_modes: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut known: HashSet<PathBuf> = HashSet::new();
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
        let mode = || entry.header().mode().map(|m| m & 0o7777).map_err(corrupt);
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => {
                make_dirs(dest, &rel, &mut known).map_err(&unsafe_entry)?;
                dir_modes.insert(target, mode()?);
            }
            // tar expands old-GNU sparse entries ('S') as it reads them.
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mode = mode()?;
                prepare_leaf(dest, &rel, &mut known).map_err(&unsafe_entry)?;
                let mut file = File::create(&target).map_err(io_err("creating", &target))?;
                match &sparse {
                    None => loop {
                        let n = match entry.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(corrupt(e)),
                        };
                        budget = budget.checked_sub(n as u64).ok_or_else(too_large)?;
                        file.write_all(&buf[..n])
                            .map_err(io_err("writing", &target))?;
                    },
                    Some(sp) => {
                        budget = budget.checked_sub(sp.real_size).ok_or_else(too_large)?;
                        write_pax_sparse(&mut entry, sp, &mut file, &mut buf).map_err(
                            |e| match e {
                                SparseError::Read(e) => corrupt(e),
                                SparseError::Write(e) => io_err("writing", &target)(e).into(),
                                SparseError::Bad(reason) => unsafe_entry(reason),
                            },
                        )?;
                    }
                }
                drop(file);
                if mode & 0o6000 != 0 {
                    // The image keeps the bits (they are in the layer's tar
                    // header); the host-side scratch copy never has them.
                    out.special_modes.insert(rel.clone(), mode);
                }
                set_mode(&target, mode & !0o6000)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry("a symlink without a target".into()))?;
                prepare_leaf(dest, &rel, &mut known).map_err(&unsafe_entry)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_err("creating symlink", &target))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_entry("a hard link without a target".into()))?;
                let link_rel = sanitize(&link)
                    .map_err(&unsafe_entry)?
                    .ok_or_else(|| unsafe_entry("a hard link to the archive root".into()))?;
                check_no_symlinks(dest, &link_rel).map_err(&unsafe_entry)?;
                let original = dest.join(&link_rel);
                if !fs::symlink_metadata(&original).is_ok_and(|m| m.is_file()) {
                    return Err(unsafe_entry(format!(
                        "a hard link to {}, which is not a file extracted before it",
                        link_rel.display()
                    )));
                }
                prepare_leaf(dest, &rel, &mut known).map_err(&unsafe_entry)?;
                fs::hard_link(&original, &target).map_err(io_err("linking", &target))?;
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
    for (dir, mode) in dir_modes.iter().rev() {
        if mode & 0o6000 != 0 {
            if let Ok(rel) = dir.strip_prefix(dest) {
                out.special_modes.insert(rel.to_owned(), *mode);
            }
        }
        set_mode(dir, mode & !0o6000)?;
    }
    Ok(out)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("setting permissions of", path))?;
    Ok(())
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

/// Create `dest/rel` and its parents as needed, refusing to pass through
/// anything but real directories.
///
/// `known` holds the directories already checked or made by this
/// extraction: no entry can turn one into a symlink afterwards (a leaf is
/// only ever replaced when it is not a directory), so each is checked once
/// rather than once per file below it.
fn make_dirs(dest: &Path, rel: &Path, known: &mut HashSet<PathBuf>) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if known.contains(&cur) {
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {
                known.insert(cur.clone());
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "it goes through the symlink {}",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "it goes through the file {}",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("creating {}: {e}", cur.display()))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("setting permissions of {}: {e}", cur.display()))?;
                known.insert(cur.clone());
            }
            Err(e) => return Err(format!("reading {}: {e}", cur.display())),
        }
    }
    Ok(())
}

/// Check that no parent of `dest/rel` is a symlink (the leaf may be anything).
fn check_no_symlinks(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            if fs::symlink_metadata(&cur).is_ok_and(|m| !m.is_dir()) {
                return Err(format!(
                    "it goes through {}, which is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
        }
    }
    Ok(())
}

/// Make the parents of `dest/rel` and clear the way for a new file, symlink
/// or link there (a later entry replaces an earlier one, as with `tar -x`).
fn prepare_leaf(dest: &Path, rel: &Path, known: &mut HashSet<PathBuf>) -> Result<(), String> {
    if let Some(parent) = rel.parent() {
        make_dirs(dest, parent, known)?;
    }
    let target = dest.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => Err("it would replace a directory".into()),
        Ok(_) => {
            fs::remove_file(&target).map_err(|e| format!("replacing {}: {e}", target.display()))
        }
        Err(_) => Ok(()),
    }
}

mod sparse;

use sparse::*;

#[cfg(test)]
mod tests;
