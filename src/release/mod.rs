//! Reading a mix release (directory or tarball): name, version, ERTS, apps,
//! and the plan of layers it becomes. Knows nothing about registries.

mod confine;
mod error;
mod extract;
mod plan;
pub mod project;
mod rel_file;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use error::ReleaseError;
pub use extract::{DEFAULT_MAX_EXTRACTED, ExtractLimits};
pub use plan::{LayerPlan, OTP_APPS, PlanOptions};

use crate::image::Platform;
use crate::layer::LayerError;

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
    /// Modes with setuid/setgid bits the scratch copy of a tarball does not
    /// carry (release-relative path → mode for the image).
    special_modes: BTreeMap<PathBuf, u32>,
    /// Keeps an extracted tarball alive as long as the release.
    _extracted: Option<tempfile::TempDir>,
}

impl Release {
    /// Open a release: `path` is a release directory (`_build/prod/rel/<app>`)
    /// or the `.tar.gz` of mix's `:tar` step, which is extracted into a fresh
    /// temporary directory under `scratch` (removed when the `Release` is dropped).
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
            return Release::read(root, None, Default::default());
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
        let tmp = tempfile::Builder::new()
            .prefix("release-")
            .tempdir_in(scratch)
            .map_err(|source| {
                ReleaseError::Io(crate::error::IoError {
                    action: "creating a directory in",
                    path: scratch.to_owned(),
                    source,
                })
            })?;
        // 0755 whatever the umask or tempfile's default: the directory
        // becomes `/app` in the image.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(|source| {
            ReleaseError::Io(crate::error::IoError {
                action: "setting permissions of",
                path: tmp.path().to_owned(),
                source,
            })
        })?;
        let extracted = extract::extract(path, tmp.path(), limits)?;
        let root = single_subdir_root(tmp.path());
        // Modes are keyed by path inside the release root.
        let prefix = root
            .strip_prefix(tmp.path())
            .unwrap_or(Path::new(""))
            .to_owned();
        let special_modes = extracted
            .special_modes
            .into_iter()
            .filter_map(|(p, m)| Some((p.strip_prefix(&prefix).ok()?.to_owned(), m)))
            .collect();
        Release::read(root, Some(tmp), special_modes)
    }

    fn read(
        root: PathBuf,
        extracted: Option<tempfile::TempDir>,
        special_modes: BTreeMap<PathBuf, u32>,
    ) -> Result<Release, ReleaseError> {
        use confine::{Want, lookup, plain_component};
        let missing = |what: String| ReleaseError::Missing {
            root: root.clone(),
            what,
        };
        if lookup(&root, Path::new("bin"), Want::Dir)?.is_none() {
            return Err(missing("no bin/ directory".into()));
        }
        let Some(start_erl) = lookup(&root, Path::new("releases/start_erl.data"), Want::File)?
        else {
            return Err(missing("no releases/start_erl.data".into()));
        };
        let text = confine::read_text(&start_erl)?;
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

        let rel_dir = lookup(&root, &Path::new("releases").join(&version), Want::Dir)?;
        let rel_path = rel_dir
            .as_deref()
            .and_then(|d| find_rel_file(&root, d))
            .ok_or_else(|| {
                missing(format!(
                    "no .rel file in releases/{version}/ (start_erl.data names version {version})"
                ))
            })?;
        let rel_path = lookup(
            &root,
            rel_path.strip_prefix(&root).unwrap_or(&rel_path),
            Want::File,
        )?
        .ok_or_else(|| missing(format!("no .rel file in releases/{version}/")))?;
        let rel = rel_file::parse(&confine::read_text(&rel_path)?).map_err(|reason| {
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
        if lookup(&root, &Path::new("bin").join(&name), Want::File)?.is_none() {
            return Err(missing(format!("no bin/{name} script")));
        }

        let erts_name = format!("erts-{erts_version}");
        let Some(erts_dir) = lookup(&root, Path::new(&erts_name), Want::Dir)? else {
            let found = erts_dirs(&root)?;
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
            &root,
            &Path::new(&erts_name).join("bin/beam.smp"),
            Want::File,
        )?
        else {
            return Err(missing(format!("no erts-{erts_version}/bin/beam.smp")));
        };
        debug_assert!(beam.starts_with(&erts_dir));
        let platform = elf_platform(&beam)?;

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
            if lookup(&root, &Path::new("lib").join(app.dir_name()), Want::Dir)?.is_none() {
                return Err(ReleaseError::MissingApp {
                    root: root.clone(),
                    app: app.name.clone(),
                    version: app.version.clone(),
                });
            }
        }
        // A symlink is fine here: it is only started, inside the image.
        let has_server = fs::symlink_metadata(root.join("bin/server"))
            .is_ok_and(|m| m.is_file() || m.file_type().is_symlink());
        Ok(Release {
            root,
            name,
            version,
            erts_version,
            apps,
            has_server,
            platform,
            special_modes,
            _extracted: extracted,
        })
    }

    /// The release directory (the extracted copy for a tarball).
    pub fn root(&self) -> &Path {
        &self.root
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

    /// Modes the layers must give files whose host copy had its setuid or
    /// setgid bits dropped (release-relative paths).
    pub fn special_modes(&self) -> &BTreeMap<PathBuf, u32> {
        &self.special_modes
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
        fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    walk(&e.path(), f);
                } else if ft.is_file() {
                    f(&e.path());
                }
            }
        }
        let sorted = |dir: &Path| -> Vec<fs::DirEntry> {
            let mut v: Vec<_> = fs::read_dir(dir)
                .map(|it| it.filter_map(Result::ok).collect())
                .unwrap_or_default();
            v.sort_by_key(|e| e.file_name());
            v
        };
        for top in sorted(&self.root) {
            if top.file_name().as_encoded_bytes().starts_with(b"erts-")
                && top.file_type().is_ok_and(|t| t.is_dir())
            {
                walk(&top.path().join("bin"), f);
                walk(&top.path().join("lib"), f);
            }
        }
        for app in sorted(&self.root.join("lib")) {
            if app.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&app.path().join("priv"), f);
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

/// A tarball whose entries all sit in one top directory (`guildhall/bin/…`)
/// has its release there.
fn single_subdir_root(dir: &Path) -> PathBuf {
    if dir.join("releases").exists() {
        return dir.to_owned();
    }
    let entries: Vec<_> = fs::read_dir(dir)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default();
    match entries.as_slice() {
        [only] if only.file_type().is_ok_and(|t| t.is_dir()) => only.path(),
        _ => dir.to_owned(),
    }
}

/// `releases/<vsn>/<name>.rel`: the only one, or the one with a `bin/<name>`.
fn find_rel_file(root: &Path, rel_dir: &Path) -> Option<PathBuf> {
    let mut rels: Vec<PathBuf> = fs::read_dir(rel_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rel") && p.is_file())
        .collect();
    rels.sort();
    if rels.len() > 1 {
        if let Some(p) = rels.iter().find(|p| {
            p.file_stem()
                .is_some_and(|s| root.join("bin").join(s).is_file())
        }) {
            return Some(p.clone());
        }
    }
    rels.into_iter().next()
}

fn erts_dirs(root: &Path) -> Result<Vec<String>, ReleaseError> {
    let mut found: Vec<String> = fs::read_dir(root)
        .map_err(|source| {
            ReleaseError::Io(crate::error::IoError {
                action: "listing",
                path: root.to_owned(),
                source,
            })
        })?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("erts-"))
        .collect();
    found.sort();
    Ok(found)
}

/// The platform of an ELF file from its header.
fn elf_platform(path: &Path) -> Result<Platform, ReleaseError> {
    let mut header = [0u8; 64];
    let mut f = confine::open_nofollow(path)?;
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
