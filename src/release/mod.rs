//! Reading a mix release (directory or tarball): name, version, ERTS, apps,
//! and the plan of layers it becomes. Knows nothing about registries.

mod extract;
mod plan;
mod rel_file;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use plan::{LayerPlan, OTP_APPS, PlanOptions};

use crate::image::Platform;
use crate::layer::LayerError;

/// Where the release is installed in the image (`WORKDIR`). Layers hold it
/// as `app/…`.
pub const INSTALL_DIR: &str = "/app";

/// Errors reading a release. Each names the path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Nothing at the given path.
    #[error("release {path} does not exist")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path is neither a directory nor a gzip tarball.
    #[error("release {path} is neither a directory nor a gzip tarball (.tar.gz)")]
    UnknownKind {
        /// The path given.
        path: PathBuf,
    },
    /// The tarball cannot be read to the end.
    #[error("release tarball {path} is truncated or corrupt: {source}")]
    CorruptTarball {
        /// The tarball.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: io::Error,
    },
    /// The tarball has an entry that would land outside the extraction directory.
    #[error("release tarball {path}: refusing entry {entry}: {reason}")]
    UnsafeTarball {
        /// The tarball.
        path: PathBuf,
        /// The entry's path as written in the tarball.
        entry: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A part every mix release has is missing.
    #[error("{root} is not a mix release: {what}")]
    Missing {
        /// The release directory.
        root: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A file of the release does not say what it should.
    #[error("release file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An application named in the `.rel` file is not under `lib/`.
    #[error(
        "{root}: the release names application {app} {version}, but lib/{app}-{version} is missing"
    )]
    MissingApp {
        /// The release directory.
        root: PathBuf,
        /// The application.
        app: String,
        /// Its version.
        version: String,
    },
    /// `beam.smp` is built for a machine the tool has no OCI name for.
    #[error("{path} is built for ELF machine {machine}, which has no known OCI architecture")]
    UnknownArchitecture {
        /// The ERTS emulator.
        path: PathBuf,
        /// ELF `e_machine`.
        machine: u16,
    },
    /// An application named as the release's own is not in the release.
    #[error("application {app} is not part of release {release} (its applications: {available})")]
    UnknownOwnApp {
        /// The name given.
        app: String,
        /// The release.
        release: String,
        /// The release's applications, comma-separated.
        available: String,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Listing the release for its layers failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl crate::exit::Classify for ReleaseError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            ReleaseError::Io { .. } | ReleaseError::Layer(_) => ExitCode::Failure,
            ReleaseError::UnknownOwnApp { .. } => ExitCode::Usage,
            _ => ExitCode::Input,
        }
    }
}

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
    source: PathBuf,
    name: String,
    version: String,
    erts_version: String,
    apps: Vec<App>,
    has_server: bool,
    platform: Platform,
    /// Keeps an extracted tarball alive as long as the release.
    _extracted: Option<tempfile::TempDir>,
}

impl Release {
    /// Open a release: `path` is a release directory (`_build/prod/rel/<app>`)
    /// or the `.tar.gz` of mix's `:tar` step, which is extracted into a fresh
    /// temporary directory under `scratch` (removed when the `Release` is dropped).
    pub fn open(path: &Path, scratch: &Path) -> Result<Release, ReleaseError> {
        let meta = fs::metadata(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ReleaseError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ReleaseError::Io {
                    action: "reading",
                    path: path.to_owned(),
                    source: e,
                }
            }
        })?;
        if meta.is_dir() {
            // Canonical, so the root is a directory and not a symlink to one
            // (it becomes the `/app` entry of every layer).
            let root = fs::canonicalize(path).map_err(|source| ReleaseError::Io {
                action: "resolving",
                path: path.to_owned(),
                source,
            })?;
            return Release::read(root, path.to_owned(), None);
        }
        if !meta.is_file() || !is_gzip(path)? {
            return Err(ReleaseError::UnknownKind {
                path: path.to_owned(),
            });
        }
        fs::create_dir_all(scratch).map_err(|source| ReleaseError::Io {
            action: "creating",
            path: scratch.to_owned(),
            source,
        })?;
        let tmp = tempfile::Builder::new()
            .prefix("release-")
            .tempdir_in(scratch)
            .map_err(|source| ReleaseError::Io {
                action: "creating a directory in",
                path: scratch.to_owned(),
                source,
            })?;
        // 0755 whatever the umask or tempfile's default: the directory
        // becomes `/app` in the image.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(|source| {
            ReleaseError::Io {
                action: "setting permissions of",
                path: tmp.path().to_owned(),
                source,
            }
        })?;
        extract::extract(path, tmp.path())?;
        let root = single_subdir_root(tmp.path());
        Release::read(root, path.to_owned(), Some(tmp))
    }

    fn read(
        root: PathBuf,
        source: PathBuf,
        extracted: Option<tempfile::TempDir>,
    ) -> Result<Release, ReleaseError> {
        let missing = |what: String| ReleaseError::Missing {
            root: root.clone(),
            what,
        };
        if !root.join("bin").is_dir() {
            return Err(missing("no bin/ directory".into()));
        }
        let start_erl = root.join("releases/start_erl.data");
        if !start_erl.is_file() {
            return Err(missing("no releases/start_erl.data".into()));
        }
        let text = read_text(&start_erl)?;
        let (erts_version, version) = match text.split_whitespace().collect::<Vec<_>>()[..] {
            [erts, rel] => (erts.to_owned(), rel.to_owned()),
            _ => {
                return Err(ReleaseError::Malformed {
                    path: start_erl,
                    reason: format!("expected `ERTS_VSN REL_VSN`, found {:?}", text.trim()),
                });
            }
        };

        let rel_dir = root.join("releases").join(&version);
        let rel_path = find_rel_file(&root, &rel_dir).ok_or_else(|| {
            missing(format!(
                "no .rel file in releases/{version}/ (start_erl.data names version {version})"
            ))
        })?;
        let rel =
            rel_file::parse(&read_text(&rel_path)?).map_err(|reason| ReleaseError::Malformed {
                path: rel_path.clone(),
                reason,
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
                    rel.name, rel.version, rel.erts_version
                ),
            });
        }
        let name = rel.name;
        if !root.join("bin").join(&name).is_file() {
            return Err(missing(format!("no bin/{name} script")));
        }

        let erts_dir = root.join(format!("erts-{erts_version}"));
        if !erts_dir.is_dir() {
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
        }
        let beam = erts_dir.join("bin/beam.smp");
        if !beam.is_file() {
            return Err(missing(format!("no erts-{erts_version}/bin/beam.smp")));
        }
        let platform = elf_platform(&beam)?;

        let apps: Vec<App> = rel
            .apps
            .into_iter()
            .map(|(name, version, start_type)| App {
                name,
                version,
                start_type,
            })
            .collect();
        for app in &apps {
            if !root.join("lib").join(app.dir_name()).is_dir() {
                return Err(ReleaseError::MissingApp {
                    root: root.clone(),
                    app: app.name.clone(),
                    version: app.version.clone(),
                });
            }
        }
        let has_server = root.join("bin/server").is_file();
        Ok(Release {
            root,
            source,
            name,
            version,
            erts_version,
            apps,
            has_server,
            platform,
            _extracted: extracted,
        })
    }

    /// The release directory (the extracted copy for a tarball).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What was opened: the directory or the tarball.
    pub fn source(&self) -> &Path {
        &self.source
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

fn is_gzip(path: &Path) -> Result<bool, ReleaseError> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).map_err(|source| ReleaseError::Io {
        action: "opening",
        path: path.to_owned(),
        source,
    })?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(ReleaseError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        }),
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

fn read_text(path: &Path) -> Result<String, ReleaseError> {
    let bytes = fs::read(path).map_err(|source| ReleaseError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| ReleaseError::Malformed {
        path: path.to_owned(),
        reason: "not UTF-8 text".into(),
    })
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
        .map_err(|source| ReleaseError::Io {
            action: "listing",
            path: root.to_owned(),
            source,
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
    let mut f = File::open(path).map_err(|source| ReleaseError::Io {
        action: "opening",
        path: path.to_owned(),
        source,
    })?;
    let n = read_up_to(&mut f, &mut header).map_err(|source| ReleaseError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
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
