//! The base image's file system as preflight needs it: paths, symlinks, hard links and whiteouts applied layer by layer, the library directories ld.so.conf names, and the symbol versions each shared library defines.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// The base image's file system

/// What a path of the base image is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Node {
    Dir,
    File,
    Symlink(PathBuf),
    /// A hard link to another path of the image (a file).
    HardLink(PathBuf),
    /// A device, FIFO, …
    Other,
}

/// The base image's file tree, from its layers in order (OCI whiteouts
/// applied): metadata only, plus the symbol versions each shared library
/// defines and the dynamic linker's configuration.
/// It serialises (to JSON) so that the index of a base image can be kept
/// beside the cached base and not rebuilt by every build.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BaseRootfs {
    pub(super) nodes: BTreeMap<PathBuf, Node>,
    /// Version definitions (ELF verdef) of the shared libraries.
    pub(super) verdefs: HashMap<PathBuf, Vec<String>>,
    /// Text of `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf`.
    pub(super) ld_conf: BTreeMap<PathBuf, String>,
}

/// One layer's changes, applied once it has been read whole (whiteouts
/// only hide what lower layers hold).
#[derive(Default)]
pub(super) struct LayerChanges {
    pub(super) added: Vec<(PathBuf, Node)>,
    pub(super) whiteouts: Vec<PathBuf>,
    pub(super) opaque: Vec<PathBuf>,
    pub(super) verdefs: Vec<(PathBuf, Vec<String>)>,
    pub(super) ld_conf: Vec<(PathBuf, String)>,
}

impl BaseRootfs {
    /// Read the base image's layer tars, bottom first; `true` marks a gzip
    /// layer (several gzip members are fine).
    pub fn from_layers<R: Read, P: Into<crate::compress::Packing>>(
        layers: impl IntoIterator<Item = (R, P)>,
    ) -> Result<BaseRootfs, PreflightError> {
        let mut fs = BaseRootfs::default();
        for (index, (reader, packing)) in layers.into_iter().enumerate() {
            let changes = packing
                .into()
                .decode(reader)
                .and_then(read_layer)
                .map_err(|source| PreflightError::BaseLayer { index, source })?;
            fs.apply(changes);
        }
        Ok(fs)
    }

    pub(super) fn apply(&mut self, c: LayerChanges) {
        for dir in &c.opaque {
            self.remove_below(dir);
        }
        for path in &c.whiteouts {
            self.remove_below(path);
            self.remove(path);
        }
        for (path, node) in c.added {
            if node != Node::Dir {
                self.remove_below(&path);
            }
            self.verdefs.remove(&path);
            self.ld_conf.remove(&path);
            self.nodes.insert(path, node);
        }
        self.verdefs.extend(c.verdefs);
        self.ld_conf.extend(c.ld_conf);
    }

    pub(super) fn remove(&mut self, path: &Path) {
        self.nodes.remove(path);
        self.verdefs.remove(path);
        self.ld_conf.remove(path);
    }

    /// Remove everything below `dir` (not `dir` itself).
    pub(super) fn remove_below(&mut self, dir: &Path) {
        let below: Vec<PathBuf> = self.descendants(dir).cloned().collect();
        for p in below {
            self.remove(&p);
        }
    }

    /// Paths strictly below `dir`. Path order is by component, so they
    /// follow `dir` in the map without a gap.
    pub(super) fn descendants<'a>(
        &'a self,
        dir: &'a Path,
    ) -> impl Iterator<Item = &'a PathBuf> + 'a {
        use std::ops::Bound;
        self.nodes
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(move |p| p.starts_with(dir))
    }

    /// What `path` (absolute, not resolved) is: a directory is also implied
    /// by anything below it, as layers need not list parents.
    pub(super) fn node(&self, path: &Path) -> Option<Node> {
        if path == Path::new("/") {
            return Some(Node::Dir);
        }
        if let Some(n) = self.nodes.get(path) {
            return Some(match n {
                Node::HardLink(target) => match self.nodes.get(target) {
                    Some(Node::File) => Node::File,
                    _ => return None,
                },
                other => other.clone(),
            });
        }
        self.descendants(path).next().map(|_| Node::Dir)
    }

    /// The path with every symlink resolved, when it names a regular file.
    pub fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        let view = ImageView {
            base: self,
            app: None,
        };
        match view.resolve(path)? {
            (p, Kind::File) => Some(p),
            _ => None,
        }
    }

    /// Whether a path exists (any kind), symlinks followed.
    pub fn exists(&self, path: &Path) -> bool {
        ImageView {
            base: self,
            app: None,
        }
        .resolve(path)
        .is_some()
    }

    /// The symbol versions a shared library of the image defines (after
    /// resolving symlinks and hard links), when it was an ELF file.
    pub(super) fn verdefs_of(&self, resolved: &Path) -> Option<&[String]> {
        let key = match self.nodes.get(resolved) {
            Some(Node::HardLink(target)) => target.as_path(),
            _ => resolved,
        };
        self.verdefs.get(key).map(Vec::as_slice)
    }

    /// Directories `/etc/ld.so.conf` (and the `.conf` files it includes) add.
    pub(super) fn ld_conf_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for text in self.ld_conf.values() {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() || line.starts_with("include ") {
                    continue; // includes: every .conf in ld.so.conf.d is read anyway
                }
                dirs.push(PathBuf::from(line));
            }
        }
        dirs
    }
}

/// An absolute, `..`-free path for an archive member (`./usr/lib/` →
/// `/usr/lib`); `None` for the root.
pub(super) fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (out != Path::new("/")).then_some(out)
}

pub(super) fn is_shared_library_name(name: &[u8]) -> bool {
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

pub(super) fn is_ld_conf(path: &Path) -> bool {
    path == Path::new("/etc/ld.so.conf")
        || (path.parent() == Some(Path::new("/etc/ld.so.conf.d"))
            && path.extension().is_some_and(|e| e == "conf"))
}

pub(super) fn read_layer(reader: impl Read) -> io::Result<LayerChanges> {
    let mut archive = tar::Archive::new(reader);
    let mut c = LayerChanges::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(path) = normalize(&entry.path()?) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("/")).to_owned();
        if name == b".wh..wh..opq" {
            c.opaque.push(parent);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            c.whiteouts
                .push(parent.join(std::ffi::OsStr::from_bytes(hidden)));
            continue;
        }
        let kind = entry.header().entry_type();
        let node = if kind.is_dir() {
            Node::Dir
        } else if kind.is_symlink() {
            Node::Symlink(
                entry
                    .link_name()?
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            )
        } else if kind.is_hard_link() {
            match entry.link_name()?.as_deref().and_then(normalize) {
                Some(target) => Node::HardLink(target),
                None => Node::Other,
            }
        } else if kind.is_file() {
            let size = entry.size();
            if is_shared_library_name(&name) && size <= MAX_LIBRARY_BYTES {
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes)?;
                if let Some(v) = elf_verdefs(&bytes) {
                    c.verdefs.push((path.clone(), v));
                }
            } else if is_ld_conf(&path) && size <= 1 << 20 {
                let mut text = String::new();
                if entry.read_to_string(&mut text).is_ok() {
                    c.ld_conf.push((path.clone(), text));
                }
            }
            Node::File
        } else if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        } else {
            Node::Other
        };
        c.added.push((path, node));
    }
    // Read to the end, so a gzip layer's trailer is checked too.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(c)
}

/// The version names an ELF shared library defines (verdef), `None` when
/// the bytes are not ELF.
pub(super) fn elf_verdefs(bytes: &[u8]) -> Option<Vec<String>> {
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let elf = Elf::parse(bytes).ok()?;
    let mut names = Vec::new();
    if let Some(verdef) = &elf.verdef {
        for def in verdef.iter() {
            // The first aux entry names the version; the others its parents.
            if let Some(aux) = def.iter().next() {
                if let Some(n) = elf.dynstrtab.get_at(aux.vda_name) {
                    names.push(n.to_owned());
                }
            }
        }
    }
    Some(names)
}
