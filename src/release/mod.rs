//! Reading a mix release (directory or tarball): name, version, ERTS, apps,
//! and the plan of layers it becomes. Knows nothing about registries.

mod confine;
mod error;
mod extract;
mod plan;
pub mod project;
mod rel_file;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use error::ReleaseError;
pub use extract::{DEFAULT_MAX_EXTRACTED, ExtractLimits};
pub use plan::{LayerPlan, OTP_APPS, PlanOptions};

use crate::image::Platform;
use crate::layer::LayerError;
use crate::tree::Tree;

/// Where the release is installed in the image (`WORKDIR`). Layers hold it
/// as `app/…`.
pub const INSTALL_DIR: &str = "/app";

/// One application of the release, as its `.rel` file lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// `kernel`, `guildhall`.
    pub name: String,
    /// `8.5.3`.
    pub version: String,
    /// `permanent`, `temporary`, `transient`, `load`, `none`, or absent.
    pub start_type: Option<String>,
}

impl App {
    /// Its directory under `lib/`: `name-version`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// A mix release on disk, validated.
#[derive(Debug)]
pub struct Release {
    root: PathBuf,
    name: String,
    version: String,
    erts_version: String,
    apps: Vec<App>,
    has_server: bool,
    platform: Platform,
    /// Where its files are read: the directory on disk, or the spool of
    /// an unpacked tarball (whose entries `root` names).
    tree: Tree,
}

impl Release {
    /// Open a release: `path` is a release directory (`_build/prod/rel/<app>`)
    /// or the `.tar.gz` of mix's `:tar` step, which is read once into a
    /// spool: an unlinked file in `scratch` (gone with the `Release`, or
    /// with the process however it ends) and an index of its entries.
    pub fn open(
        path: &Path,
        scratch: &Path,
        limits: ExtractLimits,
    ) -> Result<Release, ReleaseError> {
        let meta = fs::metadata(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ReleaseError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ReleaseError::Io(crate::error::IoError {
                    action: "reading",
                    path: path.to_owned(),
                    source: e,
                })
            }
        })?;
        if meta.is_dir() {
            // Canonical, so the root is a directory and not a symlink to one
            // (it becomes the `/app` entry of every layer).
            let root = fs::canonicalize(path).map_err(|source| {
                ReleaseError::Io(crate::error::IoError {
                    action: "resolving",
                    path: path.to_owned(),
                    source,
                })
            })?;
            return Release::read(root, Tree::Disk);
        }
        if !meta.is_file() || !is_gzip(path)? {
            return Err(ReleaseError::UnknownKind {
                path: path.to_owned(),
            });
        }
        fs::create_dir_all(scratch).map_err(|source| {
            ReleaseError::Io(crate::error::IoError {
                action: "creating",
                path: scratch.to_owned(),
                source,
            })
        })?;
        let mut spool = extract::extract(path, scratch, limits)?;
        // A tarball whose entries all sit in one top directory
        // (`guildhall/bin/…`) has its release there.
        if !spool.contains(Path::new("releases")) {
            if let Some(dir) = spool.single_top_dir() {
                spool = spool.enter(&dir);
            }
        }
        let root = spool.root().to_owned();
        Release::read(root, Tree::Spool(std::sync::Arc::new(spool)))
    }

    fn read(root: PathBuf, tree: Tree) -> Result<Release, ReleaseError> {
        use confine::{Want, lookup, plain_component};
        let missing = |what: String| ReleaseError::Missing {
            root: root.clone(),
            what,
        };
        if lookup(&tree, &root, Path::new("bin"), Want::Dir)?.is_none() {
            return Err(missing("no bin/ directory".into()));
        }
        let Some(start_erl) = lookup(
            &tree,
            &root,
            Path::new("releases/start_erl.data"),
            Want::File,
        )?
        else {
            return Err(missing("no releases/start_erl.data".into()));
        };
        let text = confine::read_text(&tree, &start_erl)?;
        let (erts_version, version) = match text.split_whitespace().collect::<Vec<_>>()[..] {
            [erts, rel] => (erts.to_owned(), rel.to_owned()),
            _ => {
                return Err(ReleaseError::Malformed {
                    path: start_erl,
                    reason: format!(
                        "expected `ERTS_VSN REL_VSN`, found {}",
                        confine::excerpt(text.trim())
                    ),
                });
            }
        };
        plain_component(&start_erl, "the ERTS version", &erts_version)?;
        plain_component(&start_erl, "the release version", &version)?;

        let rel_dir = lookup(
            &tree,
            &root,
            &Path::new("releases").join(&version),
            Want::Dir,
        )?;
        let rel_path = rel_dir
            .as_deref()
            .and_then(|d| find_rel_file(&tree, &root, d))
            .ok_or_else(|| {
                missing(format!(
                    "no .rel file in releases/{version}/ (start_erl.data names version {version})"
                ))
            })?;
        let rel_path = lookup(
            &tree,
            &root,
            rel_path.strip_prefix(&root).unwrap_or(&rel_path),
            Want::File,
        )?
        .ok_or_else(|| missing(format!("no .rel file in releases/{version}/")))?;
        let rel = rel_file::parse(&confine::read_text(&tree, &rel_path)?).map_err(|reason| {
            ReleaseError::Malformed {
                path: rel_path.clone(),
                reason,
            }
        })?;
        let stem = rel_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if rel.name != stem || rel.version != version || rel.erts_version != erts_version {
            return Err(ReleaseError::Malformed {
                path: rel_path,
                reason: format!(
                    "it describes release {} {} on ERTS {}, but start_erl.data and the file name say {stem} {version} on ERTS {erts_version}",
                    confine::excerpt(&rel.name),
                    confine::excerpt(&rel.version),
                    confine::excerpt(&rel.erts_version)
                ),
            });
        }
        let name = rel.name;
        plain_component(&rel_path, "the release name", &name)?;
        if lookup(&tree, &root, &Path::new("bin").join(&name), Want::File)?.is_none() {
            return Err(missing(format!("no bin/{name} script")));
        }

        let erts_name = format!("erts-{erts_version}");
        let Some(erts_dir) = lookup(&tree, &root, Path::new(&erts_name), Want::Dir)? else {
            let found = erts_dirs(&tree, &root)?;
            return Err(missing(if found.is_empty() {
                format!(
                    "no erts-{erts_version} directory (build the release with include_erts: true)"
                )
            } else {
                format!(
                    "no erts-{erts_version} directory (start_erl.data names it; found {})",
                    found.join(", ")
                )
            }));
        };
        let Some(beam) = lookup(
            &tree,
            &root,
            &Path::new(&erts_name).join("bin/beam.smp"),
            Want::File,
        )?
        else {
            return Err(missing(format!("no erts-{erts_version}/bin/beam.smp")));
        };
        debug_assert!(beam.starts_with(&erts_dir));
        let platform = elf_platform(&tree, &beam)?;

        let mut apps: Vec<App> = Vec::with_capacity(rel.apps.len());
        for (app_name, app_version, start_type) in rel.apps {
            plain_component(&rel_path, "an application name", &app_name)?;
            plain_component(
                &rel_path,
                &format!("the version of application {app_name}"),
                &app_version,
            )?;
            apps.push(App {
                name: app_name,
                version: app_version,
                start_type,
            });
        }
        for app in &apps {
            if lookup(
                &tree,
                &root,
                &Path::new("lib").join(app.dir_name()),
                Want::Dir,
            )?
            .is_none()
            {
                return Err(ReleaseError::MissingApp {
                    root: root.clone(),
                    app: app.name.clone(),
                    version: app.version.clone(),
                });
            }
        }
        // A symlink is fine here: it is only started, inside the image.
        let has_server = tree
            .symlink_metadata(&root.join("bin/server"))
            .is_ok_and(|m| m.is_file() || m.is_symlink());
        Ok(Release {
            root,
            name,
            version,
            erts_version,
            apps,
            has_server,
            platform,
            tree,
        })
    }

    /// The release directory, or for a tarball the path its spool's
    /// entries are named under (the tarball's path, never a directory on
    /// disk): read it through [`Release::tree`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the release's files are read.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The release name (`guildhall`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The release version (`0.1.0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The ERTS version it ships (`13.1.5`).
    pub fn erts_version(&self) -> &str {
        &self.erts_version
    }

    /// The applications of its `.rel` file, in order.
    pub fn apps(&self) -> &[App] {
        &self.apps
    }

    /// Whether it has `bin/server` (Phoenix releases do).
    pub fn has_server(&self) -> bool {
        self.has_server
    }

    /// The platform its ERTS is built for (from `beam.smp`, not the host).
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The image's command: `/app/bin/server` when the release has it, else
    /// `/app/bin/<name> start`.
    pub fn start_command(&self) -> Vec<String> {
        if self.has_server {
            vec![format!("{INSTALL_DIR}/bin/server")]
        } else {
            vec![format!("{INSTALL_DIR}/bin/{}", self.name), "start".into()]
        }
    }

    /// The layers the release becomes, stablest first.
    pub fn plan(&self, opts: &PlanOptions) -> Result<LayerPlan, ReleaseError> {
        plan::plan(self, opts)
    }
}

/// Whether a release file (path relative to the release root) is one that
/// may be an ELF object the release loads: under `erts-*/bin`, `erts-*/lib`
/// or an application's `priv/`. Preflight checks exactly these; the engine
/// remembers a pass by their metadata.
pub fn is_elf_candidate(rel: &Path) -> bool {
    let mut c = rel.components().map(|c| c.as_os_str().as_encoded_bytes());
    match (c.next(), c.next(), c.next()) {
        (Some(top), Some(b"bin" | b"lib"), Some(_)) if top.starts_with(b"erts-") => true,
        (Some(b"lib"), Some(_app), Some(b"priv")) => c.next().is_some(),
        _ => false,
    }
}

impl Release {
    /// Every regular file that [`is_elf_candidate`], in path order, one at a
    /// time (a release may have hundreds of thousands of files).
    pub fn for_each_elf_candidate(&self, f: &mut dyn FnMut(&Path)) {
        let tree = &self.tree;
        let sorted = |dir: &Path| -> Vec<(PathBuf, crate::tree::Meta)> {
            let mut names = tree.read_dir(dir).unwrap_or_default();
            names.sort();
            names
                .into_iter()
                .filter_map(|n| {
                    let p = dir.join(n);
                    Some((p.clone(), tree.symlink_metadata(&p).ok()?))
                })
                .collect()
        };
        fn walk(
            sorted: &dyn Fn(&Path) -> Vec<(PathBuf, crate::tree::Meta)>,
            dir: &Path,
            f: &mut dyn FnMut(&Path),
        ) {
            for (p, m) in sorted(dir) {
                if m.is_dir() {
                    walk(sorted, &p, f);
                } else if m.is_file() {
                    f(&p);
                }
            }
        }
        for (top, m) in sorted(&self.root) {
            let is_erts = top
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"erts-"));
            if is_erts && m.is_dir() {
                walk(&sorted, &top.join("bin"), f);
                walk(&sorted, &top.join("lib"), f);
            }
        }
        for (app, m) in sorted(&self.root.join("lib")) {
            if m.is_dir() {
                walk(&sorted, &app.join("priv"), f);
            }
        }
    }
}

fn is_gzip(path: &Path) -> Result<bool, ReleaseError> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).map_err(|source| {
        ReleaseError::Io(crate::error::IoError {
            action: "opening",
            path: path.to_owned(),
            source,
        })
    })?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(ReleaseError::Io(crate::error::IoError {
            action: "reading",
            path: path.to_owned(),
            source,
        })),
    }
}

/// `releases/<vsn>/<name>.rel`: the only one, or the one with a `bin/<name>`.
fn find_rel_file(tree: &Tree, root: &Path, rel_dir: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| tree.symlink_metadata(p).is_ok_and(|m| m.is_file());
    let mut rels: Vec<PathBuf> = tree
        .read_dir(rel_dir)
        .ok()?
        .into_iter()
        .map(|n| rel_dir.join(n))
        .filter(|p| p.extension().is_some_and(|e| e == "rel") && is_file(p))
        .collect();
    rels.sort();
    if rels.len() > 1 {
        if let Some(p) = rels.iter().find(|p| {
            p.file_stem()
                .is_some_and(|s| is_file(&root.join("bin").join(s)))
        }) {
            return Some(p.clone());
        }
    }
    rels.into_iter().next()
}

fn erts_dirs(tree: &Tree, root: &Path) -> Result<Vec<String>, ReleaseError> {
    let mut found: Vec<String> = tree
        .read_dir(root)
        .map_err(|source| {
            ReleaseError::Io(crate::error::IoError {
                action: "listing",
                path: root.to_owned(),
                source,
            })
        })?
        .into_iter()
        .filter(|n| {
            tree.symlink_metadata(&root.join(n))
                .is_ok_and(|m| m.is_dir())
        })
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("erts-"))
        .collect();
    found.sort();
    Ok(found)
}

/// The platform of an ELF file from its header.
fn elf_platform(tree: &Tree, path: &Path) -> Result<Platform, ReleaseError> {
    let mut header = [0u8; 64];
    let mut f = confine::open_nofollow(tree, path)?;
    let n = read_up_to(&mut f, &mut header).map_err(|source| {
        ReleaseError::Io(crate::error::IoError {
            action: "reading",
            path: path.to_owned(),
            source,
        })
    })?;
    let malformed = |reason: String| ReleaseError::Malformed {
        path: path.to_owned(),
        reason,
    };
    if n < 20 || &header[..4] != b"\x7fELF" {
        return Err(malformed("not an ELF executable".into()));
    }
    let h = goblin::elf::Elf::parse_header(&header[..n])
        .map_err(|e| malformed(format!("bad ELF header: {e}")))?;
    let is_64 = h.e_ident[goblin::elf::header::EI_CLASS] == goblin::elf::header::ELFCLASS64;
    Platform::from_elf_machine(h.e_machine, is_64).ok_or(ReleaseError::UnknownArchitecture {
        path: path.to_owned(),
        machine: h.e_machine,
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests;
