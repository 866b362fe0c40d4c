//! The image as the dynamic linker sees it: the base's files with the release at /app, symlinks resolved like the kernel does, and the library search of ld.so.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// The image as the dynamic linker sees it: the base, with the release at /app

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Other,
}

pub(super) struct ImageView<'a> {
    pub(super) base: &'a BaseRootfs,
    /// The release (where its files are read, and its root), mounted at
    /// [`INSTALL_DIR`].
    pub(super) app: Option<(&'a crate::tree::Tree, &'a Path)>,
}

impl ImageView<'_> {
    /// What `path` is, without following a final symlink.
    pub(super) fn lookup(&self, path: &Path) -> Option<Kind> {
        if let Some((tree, app)) = self.app {
            if let Ok(rel) = path.strip_prefix(INSTALL_DIR) {
                let disk = app.join(rel);
                let meta = tree.symlink_metadata(&disk).ok()?;
                return Some(match meta.kind {
                    crate::tree::Kind::Dir => Kind::Dir,
                    crate::tree::Kind::File => Kind::File,
                    crate::tree::Kind::Symlink => Kind::Symlink(tree.read_link(&disk).ok()?),
                    crate::tree::Kind::Other => Kind::Other,
                });
            }
        }
        Some(match self.base.node(path)? {
            Node::Dir => Kind::Dir,
            Node::File | Node::HardLink(_) => Kind::File,
            Node::Symlink(t) => Kind::Symlink(t),
            Node::Other => Kind::Other,
        })
    }

    /// Resolve every symlink of an absolute path, like the kernel does.
    pub(super) fn resolve(&self, path: &Path) -> Option<(PathBuf, Kind)> {
        let mut todo: VecDeque<OsString> = components(path);
        let mut cur = PathBuf::from("/");
        let mut kind = Kind::Dir;
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if kind != Kind::Dir {
                return None; // a path through a file
            }
            if c == ".." {
                cur.pop();
                continue;
            }
            let candidate = cur.join(&c);
            match self.lookup(&candidate)? {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return None;
                    }
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    for t in components(&target).into_iter().rev() {
                        todo.push_front(t);
                    }
                }
                k => {
                    cur = candidate;
                    kind = k;
                }
            }
        }
        Some((cur, kind))
    }

    pub(super) fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        match self.resolve(path)? {
            (p, Kind::File) => Some(p),
            _ => None,
        }
    }

    /// The symbol versions the library at `resolved` defines, when known.
    pub(super) fn verdefs(&self, resolved: &Path) -> Option<Vec<String>> {
        match (self.app, resolved.strip_prefix(INSTALL_DIR)) {
            (Some((tree, app)), Ok(rel)) => elf_verdefs(&tree.read(&app.join(rel)).ok()?),
            _ => self.base.verdefs_of(resolved).map(<[String]>::to_vec),
        }
    }
}

/// Normal and `..` components of a path (`.` and the root dropped).
pub(super) fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The Debian multiarch triplet of a platform.
pub(super) fn triplet(platform: &Platform) -> Option<&'static str> {
    Some(match platform.architecture.as_str() {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "386" => "i386-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// The Debian (bookworm) package that ships a library, for the libraries a
/// release commonly needs.
pub(super) fn debian_package(library: &str) -> Option<&'static str> {
    let name = library.rsplit('/').next().unwrap_or(library);
    let glibc = [
        "libc.so.",
        "libm.so.",
        "libpthread.so.",
        "libdl.so.",
        "librt.so.",
        "libutil.so.",
        "libresolv.so.",
        "libanl.so.",
        "libmvec.so.",
        "ld-linux",
    ];
    if glibc.iter().any(|p| name.starts_with(p)) {
        return Some("libc6");
    }
    let table: &[(&str, &str)] = &[
        ("libcrypto.so.3", "libssl3"),
        ("libssl.so.3", "libssl3"),
        ("libcrypto.so.1.1", "libssl1.1"),
        ("libssl.so.1.1", "libssl1.1"),
        ("libtinfo.so.6", "libtinfo6"),
        ("libncursesw.so.6", "libncursesw6"),
        ("libncurses.so.6", "libncurses6"),
        ("libstdc++.so.6", "libstdc++6"),
        ("libgcc_s.so.1", "libgcc-s1"),
        ("libz.so.1", "zlib1g"),
        ("libsctp.so.1", "libsctp1"),
        ("libodbc.so.2", "unixodbc"),
        ("libsystemd.so.0", "libsystemd0"),
        ("libcrypt.so.1", "libcrypt1"),
        ("libnsl.so.2", "libnsl2"),
    ];
    if let Some((_, p)) = table.iter().find(|(l, _)| *l == name) {
        return Some(p);
    }
    if name.starts_with("libwx_") || name.starts_with("libwx") {
        return Some("libwxgtk3.2-1");
    }
    if name.starts_with("libGL") {
        return Some("libgl1");
    }
    None
}
