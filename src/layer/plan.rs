//! The entries of a layer, stored compactly: one path arena, sources derived from a root.

#[allow(unused_imports)]
use super::*;

/// One thing to put in a layer, as [`PlannedLayer::entries`] yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry<'a> {
    /// Path inside the layer: relative, `/`-separated, no trailing slash
    /// (`app/bin/guildhall`). Any bytes (non-UTF-8 names are kept).
    pub dest: &'a Path,
    /// The file, directory or symlink on disk (never followed). A directory
    /// entry adds the directory alone, not its contents.
    pub source: Cow<'a, Path>,
}

/// Where one entry's paths are in [`PlannedLayer`]'s arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Item {
    start: usize,
    dest_len: u32,
    /// `DERIVED`: the source is the layer's source root joined with the
    /// dest's path below the dest root (every entry a release plan makes).
    source_len: u32,
}

const DERIVED: u32 = u32::MAX;

/// The entries of one layer, in any order: they are sorted when written.
///
/// Paths live in one arena and an entry whose source mirrors its dest
/// (`SOURCE_ROOT/x` → `DEST_ROOT/x`) stores only the dest, so a release of
/// 300,000 files plans in a few dozen bytes a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Short name: `erts`, `deps`, `assets`, `app`.
    pub name: String,
    /// What it holds, for humans and the image history.
    pub description: String,
    source_root: PathBuf,
    dest_root: PathBuf,
    /// Where the sources are read.
    tree: Tree,
    arena: Vec<u8>,
    pub(super) items: Vec<Item>,
}

impl PlannedLayer {
    /// An empty layer.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> PlannedLayer {
        PlannedLayer {
            name: name.into(),
            description: description.into(),
            ..PlannedLayer::default()
        }
    }

    /// An empty layer whose entries mostly map `source_root/X` to
    /// `dest_root/X` (stored compactly).
    pub fn rooted(
        name: impl Into<String>,
        description: impl Into<String>,
        source_root: impl Into<PathBuf>,
        dest_root: impl Into<PathBuf>,
    ) -> PlannedLayer {
        PlannedLayer {
            source_root: source_root.into(),
            dest_root: normalise(dest_root.into()),
            ..PlannedLayer::new(name, description)
        }
    }

    /// The same layer, its sources read from `tree` (a spool) rather than
    /// the file system.
    pub fn in_tree(self, tree: Tree) -> PlannedLayer {
        PlannedLayer { tree, ..self }
    }

    /// Where the sources are read.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Add one entry (not recursive). `dest` is normalised: no leading or
    /// trailing `/`, no `.` components.
    pub fn add(&mut self, source: impl Into<PathBuf>, dest: impl Into<PathBuf>) {
        let dest = normalise(dest.into());
        let source = source.into();
        let derived = !self.source_root.as_os_str().is_empty()
            && self.derive_source(&dest).is_some_and(|d| d == source);
        let start = self.arena.len();
        let d = dest.as_os_str().as_bytes();
        self.arena.extend_from_slice(d);
        let source_len = if derived {
            DERIVED
        } else {
            let s = source.as_os_str().as_bytes();
            self.arena.extend_from_slice(s);
            s.len() as u32
        };
        self.items.push(Item {
            start,
            dest_len: d.len() as u32,
            source_len,
        });
    }

    fn derive_source(&self, dest: &Path) -> Option<PathBuf> {
        let rel = dest.strip_prefix(&self.dest_root).ok()?;
        Some(if rel.as_os_str().is_empty() {
            self.source_root.clone()
        } else {
            self.source_root.join(rel)
        })
    }

    pub(super) fn entry(&self, item: &Item) -> LayerEntry<'_> {
        let dest_end = item.start + item.dest_len as usize;
        let dest = Path::new(std::ffi::OsStr::from_bytes(
            &self.arena[item.start..dest_end],
        ));
        let source = if item.source_len == DERIVED {
            Cow::Owned(
                self.derive_source(dest)
                    .expect("derived entries are under the dest root"),
            )
        } else {
            let end = dest_end + item.source_len as usize;
            Cow::Borrowed(Path::new(std::ffi::OsStr::from_bytes(
                &self.arena[dest_end..end],
            )))
        };
        LayerEntry { dest, source }
    }

    pub(super) fn dest_bytes(&self, item: &Item) -> &[u8] {
        &self.arena[item.start..item.start + item.dest_len as usize]
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> impl Iterator<Item = LayerEntry<'_>> + '_ {
        self.items.iter().map(|i| self.entry(i))
    }

    /// Indexes of the entries sorted by dest (bytewise), as the tar has them.
    pub(super) fn sorted(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.items.len() as u32).collect();
        order.sort_by(|&a, &b| {
            self.dest_bytes(&self.items[a as usize])
                .cmp(self.dest_bytes(&self.items[b as usize]))
        });
        order
    }

    /// Add `source` as `dest` and, when it is a directory (not a symlink to
    /// one), everything below it, except paths for which `skip(source_path)`
    /// says so (a skipped directory is skipped whole). Returns the bytes of
    /// regular files added.
    pub fn add_tree(
        &mut self,
        source: &Path,
        dest: &Path,
        skip: &dyn Fn(&Path) -> bool,
    ) -> Result<u64, LayerError> {
        if skip(source) {
            return Ok(0);
        }
        let meta = self
            .tree
            .symlink_metadata(source)
            .map_err(io_err("reading", source))?;
        self.add(source, dest);
        if meta.is_file() {
            return Ok(meta.len);
        }
        if !meta.is_dir() {
            return Ok(0);
        }
        let mut total = 0;
        let mut children = self
            .tree
            .read_dir(source)
            .map_err(io_err("listing", source))?;
        children.sort();
        for name in children {
            total += self.add_tree(&source.join(&name), &dest.join(&name), skip)?;
        }
        Ok(total)
    }
}

/// No leading or trailing `/`, no `.` components.
fn normalise(p: PathBuf) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}
