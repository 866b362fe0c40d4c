//! The spool: the files of an unpacked archive as one unlinked temporary
//! file of their bytes and a sorted index of paths (directories, files as
//! ranges of the spool, symlinks, hard-link groups), with the rules of a
//! careful `tar -x`: no entry below a symlink or a file, a directory never
//! replaced, a later entry replacing an earlier one.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use super::{Kind, Meta};

const NO_GROUP: u32 = u32::MAX;
/// A file whose content digest was not taken (a sparse file's).
const NO_CONTENT: u32 = u32::MAX;
/// Bytes buffered before they are written to the spool file.
const WRITE_BUFFER: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum NodeKind {
    Dir,
    File {
        offset: u64,
        size: u64,
        group: u32,
        /// Index of its sha256 in `contents`, or [`NO_CONTENT`].
        content: u32,
    },
    Symlink {
        start: u32,
        len: u32,
    },
    /// Replaced by a later entry of the same path.
    Dead,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    /// While building: where the path is in the builder's arena. In a
    /// finished [`Spool`]: where its front-coded record is in `paths`.
    start: u32,
    /// While building: the path's length (a finished spool decodes it).
    len: u32,
    mode: u32,
    kind: NodeKind,
}

/// What [`SpoolBuilder::add`] adds.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// A directory with this mode.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A regular file: `size` bytes the builder holds from `offset` on
    /// (see [`SpoolBuilder::offset`]).
    File {
        /// Permission bits.
        mode: u32,
        /// Where its bytes start in the spool.
        offset: u64,
        /// How many.
        size: u64,
        /// The sha256 of those bytes, when the caller took it as they went
        /// by (so an unchanged file is known without reading it again).
        content: Option<[u8; 32]>,
    },
    /// A symlink to this target.
    Symlink {
        /// Its target, as written in the archive.
        target: &'a [u8],
    },
    /// Another name for a file added before (its path in the archive).
    HardLink {
        /// The path of the file it names.
        target: &'a [u8],
    },
}

/// An unpacked archive: every file's bytes in one unlinked file, and an
/// index of paths sorted bytewise. Paths are relative (`bin/server`);
/// the archive root is an implicit directory with mode 0755.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    /// The archive path [`Spool::root`] stands for (empty: the archive root).
    prefix: Vec<u8>,
    file: File,
    /// The entries' paths, sorted and front-coded: record `i` (at
    /// `nodes[i].start`) is the length of the prefix it shares with path
    /// `i - 1` and the rest, as two varints and the bytes; every
    /// [`RESTART`]-th record shares nothing, so a lookup decodes at most
    /// that many. Paths inside one directory share most of their bytes.
    paths: Vec<u8>,
    /// Symlink targets (`NodeKind::Symlink` ranges).
    targets: Vec<u8>,
    nodes: Vec<Node>,
    /// Live names of each hard-link group.
    groups: Vec<u32>,
    /// The sha256 of files' bytes (`NodeKind::File::content`).
    contents: Vec<[u8; 32]>,
}

/// Every this many paths, one is stored whole.
const RESTART: usize = 16;

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        v |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

impl Spool {
    /// The path the spool's entries are reached under (`ROOT/bin/server`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The spool with its root moved into the top directory `dir` of the
    /// archive (when the whole archive sits in one directory): `ROOT/dir/x`
    /// is then reached as `ROOT/dir/x` still, and `root()` is `ROOT/dir`.
    pub fn enter(self, dir: &std::ffi::OsStr) -> Spool {
        let mut prefix = self.prefix.clone();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(dir.as_bytes());
        Spool {
            root: self.root.join(dir),
            prefix,
            ..self
        }
    }

    /// Whether `rel` (relative to [`Spool::root`]) is an entry.
    pub fn contains(&self, rel: &Path) -> bool {
        self.rel(&self.root.join(rel))
            .and_then(|r| self.meta(&r))
            .is_ok()
    }

    /// The one entry below [`Spool::root`], when there is exactly one and it
    /// is a directory (an archive of `guildhall/…`).
    pub fn single_top_dir(&self) -> Option<OsString> {
        let names = self.read_dir(&self.rel(&self.root).ok()?).ok()?;
        let [only] = names.as_slice() else {
            return None;
        };
        let rel = self.rel(&self.root.join(only)).ok()?;
        self.meta(&rel).ok()?.is_dir().then(|| only.clone())
    }

    /// `path` relative to the archive root, as bytes; `NotFound` outside it.
    pub(super) fn rel(&self, path: &Path) -> io::Result<Vec<u8>> {
        // The root may itself be an entry of the archive (its top directory).
        let rest = path.strip_prefix(&self.root).map_err(|_| not_found())?;
        let mut out = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(n) => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(n.as_bytes());
                }
                Component::CurDir => {}
                _ => return Err(not_found()),
            }
        }
        if self.prefix.is_empty() {
            return Ok(out);
        }
        let mut full = self.prefix.clone();
        if !out.is_empty() {
            full.push(b'/');
            full.extend_from_slice(&out);
        }
        Ok(full)
    }

    /// Decode record `i` onto `buf`, which holds path `i - 1` (or anything,
    /// for a restart record).
    fn decode_into(&self, i: usize, buf: &mut Vec<u8>) {
        let mut pos = self.nodes[i].start as usize;
        let shared = get_varint(&self.paths, &mut pos);
        let rest = get_varint(&self.paths, &mut pos);
        buf.truncate(shared);
        buf.extend_from_slice(&self.paths[pos..pos + rest]);
    }

    /// The path of a restart record, without copying.
    fn restart_path(&self, i: usize) -> &[u8] {
        debug_assert_eq!(i % RESTART, 0);
        let mut pos = self.nodes[i].start as usize;
        let _shared = get_varint(&self.paths, &mut pos);
        let rest = get_varint(&self.paths, &mut pos);
        &self.paths[pos..pos + rest]
    }

    /// The first index whose path is not less than `key`, with that path
    /// decoded in `buf` (when there is one).
    fn lower_bound(&self, key: &[u8], buf: &mut Vec<u8>) -> usize {
        let groups = self.nodes.len().div_ceil(RESTART);
        // The last group whose first path is < key holds the bound (or the
        // bound is the start of the next group).
        let (mut lo, mut hi) = (0, groups);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.restart_path(mid * RESTART) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Group `lo - 1` starts below the key; with `lo == 0` the bound is 0
        // and the scan of group 0 finds it at once.
        let start = lo.saturating_sub(1) * RESTART;
        let end = (start + RESTART).min(self.nodes.len());
        buf.clear();
        for i in start..end {
            self.decode_into(i, buf);
            if buf.as_slice() >= key {
                return i;
            }
        }
        if end < self.nodes.len() {
            buf.clear();
            self.decode_into(end, buf);
        }
        end
    }

    fn find(&self, rel: &[u8]) -> Option<&Node> {
        self.find_index(rel).map(|i| &self.nodes[i])
    }

    fn find_index(&self, rel: &[u8]) -> Option<usize> {
        let mut buf = Vec::new();
        let i = self.lower_bound(rel, &mut buf);
        (i < self.nodes.len() && buf == rel).then_some(i)
    }

    pub(super) fn meta(&self, rel: &[u8]) -> io::Result<Meta> {
        if rel.is_empty() {
            return Ok(Meta {
                kind: Kind::Dir,
                mode: 0o755,
                len: 0,
                nlink: 1,
                id: (u64::MAX, u64::MAX),
            });
        }
        let idx = self.find_index(rel).ok_or_else(not_found)?;
        self.meta_at(idx)
    }

    fn meta_at(&self, idx: usize) -> io::Result<Meta> {
        let n = &self.nodes[idx];
        let (kind, len, nlink, id) = match n.kind {
            NodeKind::Dir => (Kind::Dir, 0, 1, 1 << 32 | idx as u64),
            NodeKind::File { size, group, .. } if group != NO_GROUP => (
                Kind::File,
                size,
                u64::from(self.groups[group as usize]),
                u64::from(group),
            ),
            NodeKind::File { size, .. } => (Kind::File, size, 1, 1 << 32 | idx as u64),
            NodeKind::Symlink { len, .. } => {
                (Kind::Symlink, u64::from(len), 1, 1 << 32 | idx as u64)
            }
            NodeKind::Dead => return Err(not_found()),
        };
        Ok(Meta {
            kind,
            mode: n.mode,
            len,
            nlink,
            id: (u64::MAX, id),
        })
    }

    pub(super) fn read_dir(&self, rel: &[u8]) -> io::Result<Vec<OsString>> {
        if !self.meta(rel)?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let mut prefix = rel.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let mut buf = Vec::new();
        let first = self.lower_bound(&prefix, &mut buf);
        let mut out = Vec::new();
        for i in first..self.nodes.len() {
            if i > first {
                self.decode_into(i, &mut buf);
            }
            let Some(rest) = buf.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if !rest.contains(&b'/') {
                out.push(OsString::from_vec(rest.to_vec()));
            }
        }
        Ok(out)
    }

    pub(super) fn read_link(&self, rel: &[u8]) -> io::Result<PathBuf> {
        match self.find(rel).map(|n| n.kind) {
            Some(NodeKind::Symlink { start, len }) => Ok(PathBuf::from(OsString::from_vec(
                self.targets[start as usize..(start + len) as usize].to_vec(),
            ))),
            Some(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            None => Err(not_found()),
        }
    }

    /// An entry's metadata and, for a regular file, where its bytes are
    /// (offset, size): one lookup.
    pub(super) fn meta_and_data(&self, rel: &[u8]) -> io::Result<(Meta, Option<(u64, u64)>)> {
        if rel.is_empty() {
            return Ok((self.meta(rel)?, None));
        }
        let idx = self.find_index(rel).ok_or_else(not_found)?;
        let data = match self.nodes[idx].kind {
            NodeKind::File { offset, size, .. } => Some((offset, size)),
            _ => None,
        };
        Ok((self.meta_at(idx)?, data))
    }

    pub(super) fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
    }

    /// The sha256 of a regular file's bytes, when it was taken as the file
    /// was spooled; `None` for anything else.
    pub(super) fn content(&self, rel: &[u8]) -> io::Result<Option<[u8; 32]>> {
        let idx = self.find_index(rel).ok_or_else(not_found)?;
        Ok(match self.nodes[idx].kind {
            NodeKind::File { content, .. } if content != NO_CONTENT => {
                Some(self.contents[content as usize])
            }
            _ => None,
        })
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

mod builder;

pub use builder::SpoolBuilder;
