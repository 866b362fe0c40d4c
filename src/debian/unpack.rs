//! `.deb`s → one deterministic layer: each package's `data.tar` unpacked
//! once into the cache (streamed through its decompressor), its entries
//! laid into a file tree the way dpkg would lay them on the base —
//! directory symlinks of the base and of earlier packages followed, so
//! `./bin/dash` of a bookworm package lands in `usr/bin/dash` when `bin ->
//! usr/bin` and a symlink is never replaced by a directory — then the
//! tree written through [`crate::layer::write_explicit_layer`] (sorted,
//! fixed mtimes, the packages' own modes and owners, hard links kept).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::base::normalize;
use super::deb::Deb;
use super::error::DebianError;
use super::fetch::{Cache, Sha256};
use crate::layer::{ExplicitEntry, ExplicitKind};

/// Symlinks followed while resolving one path (Linux's limit is 40).
const MAX_HOPS: usize = 40;

/// What a path of the tree is: the layer writer's own entry kinds, a
/// `HardLink` naming another path of the tree (made into a link to the
/// group's first path when the layer is written).
pub(crate) use crate::layer::ExplicitKind as Node;

/// A node with its metadata and the package that put it there.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) node: Node,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) package: String,
}

/// The file tree the layer will hold, over the base's symlinks.
pub(crate) struct Tree<'a> {
    pub(crate) nodes: BTreeMap<PathBuf, Entry>,
    base_links: &'a BTreeMap<PathBuf, PathBuf>,
    base_dirs: &'a BTreeSet<PathBuf>,
    /// Paths that clashed (a second package shipping a path already
    /// there as another kind), for the report.
    pub(crate) clashes: Vec<String>,
}

impl<'a> Tree<'a> {
    pub(crate) fn new(base_links: &'a BTreeMap<PathBuf, PathBuf>) -> Tree<'a> {
        static NONE: BTreeSet<PathBuf> = BTreeSet::new();
        Tree {
            nodes: BTreeMap::new(),
            base_links,
            base_dirs: &NONE,
            clashes: Vec::new(),
        }
    }

    /// The base's directories: a package never replaces one with a
    /// symlink (dpkg keeps the directory too).
    pub(crate) fn with_base_dirs(mut self, dirs: &'a BTreeSet<PathBuf>) -> Tree<'a> {
        self.base_dirs = dirs;
        self
    }

    /// The symlink target at `p`, in the tree or else in the base (unless
    /// the tree has put something else there).
    fn link_at(&self, p: &Path) -> Option<&Path> {
        match self.nodes.get(p) {
            Some(Entry {
                node: Node::Symlink(t),
                ..
            }) => Some(t),
            Some(_) => None,
            None => self.base_links.get(p).map(PathBuf::as_path),
        }
    }

    /// `path` with every symlink among its parents followed (and the last
    /// component too when `follow_last`), relative to the root.
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> PathBuf {
        let mut todo: Vec<PathBuf> = path
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(PathBuf::from(n)),
                Component::ParentDir => Some(PathBuf::from("..")),
                _ => None,
            })
            .collect();
        let mut out = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c.as_os_str() == ".." {
                out.pop();
                continue;
            }
            let cand = out.join(&c);
            let last = todo.is_empty();
            if last && !follow_last {
                return cand;
            }
            match self.link_at(&cand) {
                Some(t) if hops < MAX_HOPS => {
                    hops += 1;
                    if t.is_absolute() {
                        out = PathBuf::new();
                    }
                    for c in t.components().rev() {
                        match c {
                            Component::Normal(n) => todo.push(PathBuf::from(n)),
                            Component::ParentDir => todo.push(PathBuf::from("..")),
                            _ => {}
                        }
                    }
                }
                _ => out = cand,
            }
        }
        out
    }

    /// Put an entry at `path` (already resolved). A directory where one
    /// already is keeps the first; other clashes: the later package wins,
    /// as dpkg with `Replaces` would, and the clash is reported.
    pub(crate) fn put(&mut self, path: PathBuf, entry: Entry) {
        if path.as_os_str().is_empty() {
            return;
        }
        if matches!(entry.node, Node::Symlink(_))
            && !self.nodes.contains_key(&path)
            && self.base_dirs.contains(&path)
        {
            self.clashes.push(format!(
                "/{}: {} ships a symlink where the base has a directory; kept the directory",
                path.display(),
                entry.package
            ));
            return;
        }
        match self.nodes.get(&path) {
            Some(old) if old.node == Node::Dir && entry.node == Node::Dir => {}
            Some(old) if old.node == Node::Dir || entry.node == Node::Dir => {
                self.clashes.push(format!(
                    "/{}: {} has a {} there, {} ships a {}; kept the first",
                    path.display(),
                    old.package,
                    kind(&old.node),
                    entry.package,
                    kind(&entry.node)
                ));
            }
            Some(old) if old.node == entry.node => {}
            Some(old) => {
                if old.package != entry.package {
                    self.clashes.push(format!(
                        "/{}: shipped by {} and {}; {} wins",
                        path.display(),
                        old.package,
                        entry.package,
                        entry.package
                    ));
                }
                self.nodes.insert(path, entry);
            }
            None => {
                self.nodes.insert(path, entry);
            }
        }
    }

    /// The bytes of the file at `path` (symlinks and hard links followed).
    pub(crate) fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut p = self.resolve(path, true);
        for _ in 0..MAX_HOPS {
            match self.nodes.get(&p).map(|e| &e.node) {
                Some(Node::File {
                    source,
                    offset,
                    size,
                }) => {
                    let mut f = File::open(source)?;
                    f.seek(SeekFrom::Start(*offset))?;
                    let mut out = Vec::with_capacity(*size as usize);
                    f.take(*size).read_to_end(&mut out)?;
                    return Ok(out);
                }
                Some(Node::HardLink(t)) => p = t.clone(),
                _ => break,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("/{} is not a file of the layer", path.display()),
        ))
    }

    /// Whether `path` is in the tree (after resolution).
    pub(crate) fn exists(&self, path: &Path) -> bool {
        self.nodes.contains_key(&self.resolve(path, true))
    }

    /// Whether `path` is a directory of the tree or of the base.
    pub(crate) fn is_dir(&self, path: &Path) -> bool {
        let p = self.resolve(path, true);
        match self.nodes.get(&p) {
            Some(e) => e.node == Node::Dir,
            None => self.base_dirs.contains(&p),
        }
    }

    /// The layer entries. Hard-link groups are arranged so the first path
    /// in sort order holds the bytes and the others link to it.
    pub(crate) fn entries(&self) -> Vec<ExplicitEntry> {
        // target → every path linking to it
        let mut groups: BTreeMap<&Path, Vec<&Path>> = BTreeMap::new();
        for (p, e) in &self.nodes {
            if let Node::HardLink(t) = &e.node {
                if matches!(self.nodes.get(t).map(|e| &e.node), Some(Node::File { .. })) {
                    groups.entry(t.as_path()).or_default().push(p);
                }
            }
        }
        let mut holder: BTreeMap<&Path, &Path> = BTreeMap::new();
        for (t, links) in &groups {
            let first = links.iter().copied().chain([*t]).min().expect("a group");
            holder.insert(*t, first);
        }
        let mut out = Vec::with_capacity(self.nodes.len());
        for (p, e) in &self.nodes {
            let kind = match &e.node {
                Node::Dir => ExplicitKind::Dir,
                Node::Symlink(t) => ExplicitKind::Symlink(t.clone()),
                Node::File {
                    source,
                    offset,
                    size,
                } => match holder.get(p.as_path()) {
                    Some(first) if *first != p.as_path() => {
                        ExplicitKind::HardLink(first.to_path_buf())
                    }
                    _ => ExplicitKind::File {
                        source: source.clone(),
                        offset: *offset,
                        size: *size,
                    },
                },
                Node::HardLink(t) => match (holder.get(t.as_path()), self.nodes.get(t)) {
                    (Some(first), Some(te)) if *first == p.as_path() => match &te.node {
                        Node::File {
                            source,
                            offset,
                            size,
                        } => ExplicitKind::File {
                            source: source.clone(),
                            offset: *offset,
                            size: *size,
                        },
                        _ => continue,
                    },
                    (Some(first), _) => ExplicitKind::HardLink(first.to_path_buf()),
                    // A link to something that is not a file: drop it.
                    _ => continue,
                },
            };
            out.push(ExplicitEntry {
                dest: p.clone(),
                kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
            });
        }
        out
    }
}

fn kind(n: &Node) -> &'static str {
    match n {
        Node::Dir => "directory",
        Node::File { .. } => "file",
        Node::Symlink(_) => "symlink",
        Node::HardLink(_) => "hard link",
    }
}

/// One entry of a `data.tar`, its path as the package writes it.
#[derive(Clone, Debug)]
pub(crate) struct DataEntry {
    pub(crate) path: PathBuf,
    pub(crate) node: Node,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
}

/// The `data.tar` of a `.deb`, uncompressed in the cache (made once per
/// `.deb` sha256, streamed), and its entries.
pub(crate) fn data_entries(
    cache: &Cache,
    deb: &Deb,
    deb_path: &Path,
    deb_sha: &Sha256,
    what: &str,
) -> Result<(PathBuf, Vec<DataEntry>), DebianError> {
    let tar_path = cache.data_path(deb_sha);
    if !tar_path.is_file() {
        let tmp = cache.temp_path("data.tar")?;
        let res = (|| {
            let mut input = deb.data(deb_path)?;
            let mut out = File::create(&tmp).map_err(DebianError::io("creating", &tmp))?;
            io::copy(&mut input, &mut out).map_err(|e| DebianError::Deb {
                package: what.to_owned(),
                reason: format!("data.tar does not decompress: {e}"),
            })?;
            out.flush().map_err(DebianError::io("writing", &tmp))
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        cache.commit(&tmp, &tar_path)?;
    }
    let bad = |e: io::Error| DebianError::Deb {
        package: what.to_owned(),
        reason: format!("data.tar: {e}"),
    };
    let file = File::open(&tar_path).map_err(DebianError::io("opening", &tar_path))?;
    let mut ar = tar::Archive::new(file);
    let mut out = Vec::new();
    for e in ar.entries_with_seek().map_err(bad)? {
        let e = e.map_err(bad)?;
        let h = e.header();
        let path = normalize(Path::new(OsStr::from_bytes(&e.path_bytes())));
        if path.as_os_str().is_empty() {
            continue;
        }
        let mode = h.mode().map_err(bad)?;
        let uid = h.uid().map_err(bad)?;
        let gid = h.gid().map_err(bad)?;
        let t = h.entry_type();
        let link = || -> Result<PathBuf, DebianError> {
            let l = e.link_name_bytes().ok_or_else(|| DebianError::Deb {
                package: what.to_owned(),
                reason: format!("data.tar: link {} has no target", path.display()),
            })?;
            Ok(PathBuf::from(OsStr::from_bytes(&l)))
        };
        let node = if t.is_dir() {
            Node::Dir
        } else if t.is_symlink() {
            Node::Symlink(link()?)
        } else if t.is_hard_link() {
            Node::HardLink(normalize(&link()?))
        } else if t.is_file() || t == tar::EntryType::Continuous {
            Node::File {
                source: tar_path.clone(),
                offset: e.raw_file_position(),
                size: e.size(),
            }
        } else {
            tracing::debug!(
                "{what}: {} skipped (not a file, directory or link)",
                path.display()
            );
            continue;
        };
        out.push(DataEntry {
            path,
            node,
            mode,
            uid,
            gid,
        });
    }
    Ok((tar_path, out))
}

/// Which paths debian-slim leaves out (debuerreotype's dpkg `path-exclude`
/// rules): documentation but copyright files, man and info pages,
/// translations, lintian overrides.
pub(crate) fn slim_excludes(path: &Path) -> bool {
    let p = path.as_os_str().as_bytes();
    for dir in [
        &b"usr/share/man/"[..],
        b"usr/share/groff/",
        b"usr/share/info/",
        b"usr/share/lintian/",
        b"usr/share/linda/",
        b"usr/share/locale/",
    ] {
        if p.starts_with(dir) {
            return true;
        }
    }
    if let Some(rest) = p.strip_prefix(&b"usr/share/doc/"[..]) {
        // Keep usr/share/doc/PKG/ and usr/share/doc/PKG/copyright.
        let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
        return !matches!(parts.as_slice(), [_pkg] | [_pkg, b"copyright"]);
    }
    false
}

/// Lay one package's entries into the tree.
pub(crate) fn apply(tree: &mut Tree<'_>, package: &str, entries: &[DataEntry], slim: bool) {
    // Hard link targets are named as the package writes them: map them
    // to where those paths landed.
    let mut landed: BTreeMap<&Path, PathBuf> = BTreeMap::new();
    for e in entries {
        if slim && slim_excludes(&e.path) {
            continue;
        }
        let dest = tree.resolve(&e.path, e.node == Node::Dir);
        let node = match &e.node {
            Node::HardLink(t) => Node::HardLink(
                landed
                    .get(t.as_path())
                    .cloned()
                    .unwrap_or_else(|| tree.resolve(t, false)),
            ),
            n => n.clone(),
        };
        landed.insert(&e.path, dest.clone());
        tree.put(
            dest,
            Entry {
                node,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                package: package.to_owned(),
            },
        );
    }
}

/// Add the directories above `path` that the tree does not have (root
/// owned, 0755), so generated files have parents in the layer.
pub(crate) fn add_parents(tree: &mut Tree<'_>, path: &Path, package: &str) {
    let mut p = path.parent();
    let mut missing = Vec::new();
    while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
        if tree.is_dir(d) {
            break;
        }
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    for d in missing.into_iter().rev() {
        let dest = tree.resolve(&d, true);
        tree.put(
            dest,
            Entry {
                node: Node::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                package: package.to_owned(),
            },
        );
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
