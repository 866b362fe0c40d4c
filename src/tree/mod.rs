//! A file tree to read as the file system would be read — a directory on
//! disk, or a tarball unpacked once into a spool (one file holding every
//! file's bytes, and an index of paths) — never following a symlink.
//!
//! The release and the layer writer read through [`Tree`], so a release
//! tarball goes into layers without being extracted to thousands of files
//! first: the spool is written sequentially, unlinked from the start, and
//! its index is a few dozen bytes a file.

mod spool;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use spool::{Entry, Spool, SpoolBuilder};

/// What an entry of a tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink (never followed).
    Symlink,
    /// A device, FIFO or socket (only on disk).
    Other,
}

/// The metadata of one entry, as `lstat` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// What it is.
    pub kind: Kind,
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    /// Bytes of a regular file (0 for a spool directory).
    pub len: u64,
    /// Names of the same file (hard links).
    pub nlink: u64,
    /// Identity of the file: (device, inode) on disk; (`u64::MAX`, link
    /// group) in a spool. Equal for the names of one hard-linked file.
    pub id: (u64, u64),
}

impl Meta {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }
    /// A symlink.
    pub fn is_symlink(&self) -> bool {
        self.kind == Kind::Symlink
    }

    fn of(m: &fs::Metadata) -> Meta {
        let ft = m.file_type();
        Meta {
            kind: if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::Other
            },
            mode: m.mode() & 0o7777,
            len: m.len(),
            nlink: m.nlink(),
            id: (m.dev(), m.ino()),
        }
    }
}

/// Where a tree's files are: the file system itself (paths are host paths),
/// or a spool (paths are the spool's root joined with the entry's path).
#[derive(Clone, Debug, Default)]
pub enum Tree {
    /// The host's file system.
    #[default]
    Disk,
    /// A tarball unpacked into a spool.
    Spool(Arc<Spool>),
}

impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        match (self, other) {
            (Tree::Disk, Tree::Disk) => true,
            (Tree::Spool(a), Tree::Spool(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Tree {}

impl Tree {
    /// Whether the files are on disk, with metadata that changes whenever a
    /// file is rewritten (so a fingerprint of metadata can stand for content).
    pub fn is_disk(&self) -> bool {
        matches!(self, Tree::Disk)
    }

    /// `lstat`.
    pub fn symlink_metadata(&self, path: &Path) -> io::Result<Meta> {
        match self {
            Tree::Disk => fs::symlink_metadata(path).map(|m| Meta::of(&m)),
            Tree::Spool(s) => s.meta(&s.rel(path)?),
        }
    }

    /// The names in a directory, in no particular order.
    pub fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        match self {
            Tree::Disk => fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect(),
            Tree::Spool(s) => s.read_dir(&s.rel(path)?),
        }
    }

    /// The target of a symlink.
    pub fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        match self {
            Tree::Disk => fs::read_link(path),
            Tree::Spool(s) => s.read_link(&s.rel(path)?),
        }
    }

    /// Open a file for reading without following a symlink at its last
    /// component (`ELOOP` for one), and without blocking on a FIFO. The
    /// metadata is of what was opened: check it is a regular file.
    pub fn open(&self, path: &Path) -> io::Result<TreeFile> {
        match self {
            Tree::Disk => {
                let f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path)?;
                let meta = Meta::of(&f.metadata()?);
                Ok(TreeFile {
                    meta,
                    inner: Inner::Disk(f),
                })
            }
            Tree::Spool(s) => {
                let (meta, data) = s.meta_and_data(&s.rel(path)?)?;
                if meta.is_symlink() {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let (offset, size) = data.unwrap_or((0, 0));
                Ok(TreeFile {
                    meta,
                    inner: Inner::Spool {
                        spool: Arc::clone(s),
                        pos: offset,
                        end: offset + size,
                    },
                })
            }
        }
    }

    /// The whole of a regular file (following nothing).
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut f = self.open(path)?;
        if !f.meta().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut out = Vec::with_capacity(usize::try_from(f.meta().len).unwrap_or(0));
        f.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The sha256 of a regular file's bytes when the tree knows it without
    /// reading them (a spool takes it as each file goes by); `None` on disk.
    pub fn known_content(&self, path: &Path) -> io::Result<Option<[u8; 32]>> {
        match self {
            Tree::Disk => Ok(None),
            Tree::Spool(s) => s.content(&s.rel(path)?),
        }
    }

    /// Whether `path` exists (as an entry of any kind).
    pub fn exists(&self, path: &Path) -> bool {
        self.symlink_metadata(path).is_ok()
    }
}

/// A file of a [`Tree`] open for reading.
pub struct TreeFile {
    meta: Meta,
    inner: Inner,
}

enum Inner {
    Disk(File),
    Spool {
        spool: Arc<Spool>,
        pos: u64,
        end: u64,
    },
}

impl TreeFile {
    /// What was opened.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl Read for TreeFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Disk(f) => f.read(buf),
            Inner::Spool { spool, pos, end } => {
                let want = buf
                    .len()
                    .min(usize::try_from(*end - *pos).unwrap_or(usize::MAX));
                if want == 0 {
                    return Ok(0);
                }
                let n = spool.read_at(&mut buf[..want], *pos)?;
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests;
