//! Building a [`Spool`] entry by entry, in archive order, with the rules of
//! a careful `tar -x`.

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::*;

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
