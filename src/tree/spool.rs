//! The spool: the files of an unpacked archive as one unlinked temporary
//! file of their bytes and a sorted index of paths (directories, files as
//! ranges of the spool, symlinks, hard-link groups), with the rules of a
//! careful `tar -x`: no entry below a symlink or a file, a directory never
//! replaced, a later entry replacing an earlier one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::hash::BuildHasher;
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

/// Builds a [`Spool`] entry by entry, in archive order.
pub struct SpoolBuilder {
    file: File,
    /// Bytes in the file.
    written: u64,
    buf: Vec<u8>,
    arena: Vec<u8>,
    nodes: Vec<Node>,
    hasher: std::collections::hash_map::RandomState,
    /// Path hash → node; a path whose hash another path has is in `overflow`.
    index: HashMap<u64, u32>,
    overflow: HashMap<Vec<u8>, u32>,
    groups: u32,
    contents: Vec<[u8; 32]>,
    /// The parent directory of the last entry, known to be a directory.
    last_parent: Vec<u8>,
}

impl SpoolBuilder {
    /// A spool in a new unlinked file in `dir`.
    pub fn new(dir: &Path) -> io::Result<SpoolBuilder> {
        Ok(SpoolBuilder {
            file: tempfile::tempfile_in(dir)?,
            written: 0,
            buf: Vec::with_capacity(WRITE_BUFFER),
            arena: Vec::new(),
            nodes: Vec::new(),
            hasher: Default::default(),
            index: HashMap::new(),
            overflow: HashMap::new(),
            groups: 0,
            contents: Vec::new(),
            last_parent: Vec::new(),
        })
    }

    /// Where the next appended byte goes.
    pub fn offset(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Append file bytes.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if data.len() >= WRITE_BUFFER {
            self.file.write_all_at(data, self.written)?;
            self.written += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    /// Leave `len` bytes of zeros (a hole) for a sparse file whose chunks
    /// are then written with [`SpoolBuilder::write_at`]; returns where the
    /// region starts.
    pub fn reserve(&mut self, len: u64) -> io::Result<u64> {
        self.flush()?;
        let start = self.written;
        self.written = start
            .checked_add(len)
            .ok_or_else(|| io::Error::other("spool offset overflow"))?;
        Ok(start)
    }

    /// Write bytes into a region made by [`SpoolBuilder::reserve`].
    pub fn write_at(&mut self, pos: u64, data: &[u8]) -> io::Result<()> {
        debug_assert!(pos + data.len() as u64 <= self.written);
        self.file.write_all_at(data, pos)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.written)?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn path(&self, i: u32) -> &[u8] {
        let n = &self.nodes[i as usize];
        &self.arena[n.start as usize..(n.start + n.len) as usize]
    }

    fn lookup(&self, rel: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(rel);
        match self.index.get(&h) {
            Some(&i) if self.path(i) == rel => Some(i),
            Some(_) => self.overflow.get(rel).copied(),
            None => None,
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Result<(u32, u32), String> {
        let start = u32::try_from(self.arena.len()).map_err(|_| "too many paths".to_string())?;
        let len = u32::try_from(bytes.len()).map_err(|_| "a path too long".to_string())?;
        start
            .checked_add(len)
            .ok_or_else(|| "too many paths".to_string())?;
        self.arena.extend_from_slice(bytes);
        Ok((start, len))
    }

    /// A new node for `rel`, which has none.
    fn insert(&mut self, rel: &[u8], mode: u32, kind: NodeKind) -> Result<u32, String> {
        let (start, len) = self.push_bytes(rel)?;
        let i = u32::try_from(self.nodes.len()).map_err(|_| "too many entries".to_string())?;
        self.nodes.push(Node {
            start,
            len,
            mode,
            kind,
        });
        let h = self.hasher.hash_one(rel);
        match self.index.get(&h) {
            None => {
                self.index.insert(h, i);
            }
            Some(&j) if self.path(j) == rel => {
                self.index.insert(h, i);
            }
            Some(_) => {
                self.overflow.insert(rel.to_vec(), i);
            }
        }
        Ok(i)
    }

    /// Make the parents of `rel` directories (0755 when the archive has no
    /// entry for one), refusing to go through a symlink or a file.
    fn parents(&mut self, rel: &[u8]) -> Result<(), String> {
        let parent = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => &rel[..i],
            None => return Ok(()),
        };
        if parent == self.last_parent.as_slice() {
            return Ok(());
        }
        let mut from = 0;
        while let Some(j) = parent[from..].iter().position(|&b| b == b'/') {
            self.must_be_dir(&parent[..from + j])?;
            from += j + 1;
        }
        self.must_be_dir(parent)?;
        self.last_parent = parent.to_vec();
        Ok(())
    }

    fn must_be_dir(&mut self, dir: &[u8]) -> Result<(), String> {
        match self.lookup(dir).map(|i| self.nodes[i as usize].kind) {
            Some(NodeKind::Dir) => Ok(()),
            Some(NodeKind::Symlink { .. }) => Err(format!(
                "it goes through the symlink {}",
                Path::new(std::ffi::OsStr::from_bytes(dir)).display()
            )),
            Some(NodeKind::File { .. }) => Err(format!(
                "it goes through the file {}",
                Path::new(std::ffi::OsStr::from_bytes(dir)).display()
            )),
            Some(NodeKind::Dead) | None => self.insert(dir, 0o755, NodeKind::Dir).map(drop),
        }
    }

    /// Add one entry at `rel` (relative, `/`-separated, no `.` or `..`).
    /// The error says why the entry is unsafe.
    pub fn add(&mut self, rel: &[u8], entry: Entry<'_>) -> Result<(), String> {
        self.parents(rel)?;
        let existing = self.lookup(rel);
        let existing_kind = existing.map(|i| self.nodes[i as usize].kind);
        if let Entry::Dir { mode } = entry {
            return match existing_kind {
                Some(NodeKind::Dir) => {
                    self.nodes[existing.expect("found") as usize].mode = mode;
                    Ok(())
                }
                Some(NodeKind::Dead) | None => self.insert(rel, mode, NodeKind::Dir).map(drop),
                Some(_) => self.must_be_dir(rel),
            };
        }
        if matches!(existing_kind, Some(NodeKind::Dir)) {
            return Err("it would replace a directory".into());
        }
        let (mode, kind) = match entry {
            Entry::Dir { .. } => unreachable!("handled above"),
            Entry::File {
                mode,
                offset,
                size,
                content,
            } => {
                let content = match content {
                    Some(c) => {
                        let i = u32::try_from(self.contents.len())
                            .map_err(|_| "too many files".to_string())?;
                        self.contents.push(c);
                        i
                    }
                    None => NO_CONTENT,
                };
                (
                    mode,
                    NodeKind::File {
                        offset,
                        size,
                        group: NO_GROUP,
                        content,
                    },
                )
            }
            Entry::Symlink { target } => {
                let (start, len) = self.push_bytes(target)?;
                (0o777, NodeKind::Symlink { start, len })
            }
            Entry::HardLink { target } => {
                let t = self.lookup(target);
                let Some((
                    t,
                    NodeKind::File {
                        offset,
                        size,
                        group,
                        content,
                    },
                )) = t.map(|t| (t, self.nodes[t as usize].kind))
                else {
                    return Err(format!(
                        "a hard link to {}, which is not a file extracted before it",
                        Path::new(std::ffi::OsStr::from_bytes(target)).display()
                    ));
                };
                let group = if group == NO_GROUP {
                    let g = self.groups;
                    self.groups = g.checked_add(1).ok_or("too many hard links")?;
                    if let NodeKind::File { group, .. } = &mut self.nodes[t as usize].kind {
                        *group = g;
                    }
                    g
                } else {
                    group
                };
                (
                    self.nodes[t as usize].mode,
                    NodeKind::File {
                        offset,
                        size,
                        group,
                        content,
                    },
                )
            }
        };
        if let Some(old) = existing {
            self.nodes[old as usize].kind = NodeKind::Dead;
        }
        self.insert(rel, mode, kind).map(drop)
    }

    /// The finished spool, its entries reached under `root`.
    pub fn finish(mut self, root: PathBuf) -> io::Result<Spool> {
        self.flush()?;
        if self.file.metadata()?.len() < self.written {
            // A sparse file's trailing hole.
            self.file.set_len(self.written)?;
        }
        let SpoolBuilder {
            file,
            arena,
            mut nodes,
            groups,
            index,
            overflow,
            mut contents,
            ..
        } = self;
        // The lookup tables of building are not needed any more, nor the
        // slack of growing: a big release has hundreds of thousands of entries.
        drop((index, overflow));
        nodes.retain(|n| !matches!(n.kind, NodeKind::Dead));
        nodes.shrink_to_fit();
        let path = |n: &Node| &arena[n.start as usize..(n.start + n.len) as usize];
        nodes.sort_unstable_by(|a, b| path(a).cmp(path(b)));
        // Front-code the sorted paths; symlink targets move to their own arena.
        let mut paths = Vec::new();
        let mut targets = Vec::new();
        let mut prev: &[u8] = &[];
        for (i, n) in nodes.iter_mut().enumerate() {
            let p = &arena[n.start as usize..(n.start + n.len) as usize];
            let shared = if i % RESTART == 0 {
                0
            } else {
                prev.iter().zip(p).take_while(|(a, b)| a == b).count()
            };
            n.start = u32::try_from(paths.len())
                .map_err(|_| io::Error::other("too many paths in the archive"))?;
            put_varint(&mut paths, shared);
            put_varint(&mut paths, p.len() - shared);
            paths.extend_from_slice(&p[shared..]);
            prev = p;
            if let NodeKind::Symlink { start, len } = &mut n.kind {
                let t = &arena[*start as usize..(*start + *len) as usize];
                *start = u32::try_from(targets.len())
                    .map_err(|_| io::Error::other("too many symlinks in the archive"))?;
                targets.extend_from_slice(t);
            }
        }
        drop(arena);
        paths.shrink_to_fit();
        let mut counts = vec![0u32; groups as usize];
        for n in &nodes {
            if let NodeKind::File { group, .. } = n.kind {
                if group != NO_GROUP {
                    counts[group as usize] += 1;
                }
            }
        }
        contents.shrink_to_fit();
        Ok(Spool {
            root,
            prefix: Vec::new(),
            file,
            paths,
            targets,
            nodes,
            groups: counts,
            contents,
        })
    }
}
