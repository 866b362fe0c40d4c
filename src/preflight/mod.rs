//! Will this release start on this base? Every ELF of ERTS and of the NIFs
//! and port programs under `lib/*/priv` is checked against the base image's
//! files the way the dynamic linker would: its loader and `DT_NEEDED`
//! libraries are found, the symbol versions it needs (`GLIBC_2.34`,
//! `OPENSSL_3.0.0`, …) are defined by the library found, and it is built for
//! the platform of ERTS, which is the platform of the base.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use goblin::elf::Elf;
use goblin::elf::header::{EI_CLASS, ELFCLASS64, ET_DYN, ET_EXEC};

use crate::image::Platform;
use crate::release::{INSTALL_DIR, Release};

/// Shared libraries bigger than this are not parsed for their symbol versions.
const MAX_LIBRARY_BYTES: u64 = 64 << 20;
/// Symlinks followed while resolving one path (Linux's limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;
const VER_FLG_WEAK: u16 = 0x2;

/// Preflight failures.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The release would not start on the base image.
    #[error("the release would not start on the base image:\n{0}")]
    Failed(PreflightReport),
    /// ERTS is built for another platform than the base image.
    #[error("the release's ERTS is built for {release}, but the base image {base_name} is {base}")]
    PlatformMismatch {
        /// The platform of ERTS (`beam.smp`).
        release: String,
        /// The platform of the base image.
        base: String,
        /// The base image.
        base_name: String,
    },
    /// A layer of the base image cannot be read.
    #[error("reading layer {index} of the base image: {source}")]
    BaseLayer {
        /// Its position, 0 = bottom.
        index: usize,
        /// What the tar or gzip reader said.
        #[source]
        source: io::Error,
    },
}

impl PreflightError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self {
            PreflightError::BaseLayer { .. } => crate::error::ExitCode::Input,
            _ => crate::error::ExitCode::Preflight,
        }
    }
}

/// Check `release` against the base image's files; `base_platform` is the
/// base image's platform. Never fails: what is wrong is in the report.
pub fn check(release: &Release, base: &BaseRootfs, base_platform: &Platform) -> PreflightReport {
    let erts_platform = release.platform();
    let beam = PathBuf::from(format!("erts-{}/bin/beam.smp", release.erts_version()));
    if !erts_platform.satisfies(base_platform) {
        // Library lookups for the wrong machine would only mislead.
        return PreflightReport {
            problems: vec![Problem {
                file: beam,
                kind: ProblemKind::PlatformMismatch {
                    release: erts_platform.clone(),
                    base: base_platform.clone(),
                },
            }],
            files_checked: 0,
            hint: None,
        };
    }

    let root = release.root();
    let (elfs, mut problems) = read_elfs(release);

    let view = ImageView {
        base,
        app: Some((release.tree(), root)),
    };
    let mut default_dirs: Vec<PathBuf> = base.ld_conf_dirs();
    if let Some(t) = triplet(base_platform) {
        default_dirs.push(PathBuf::from(format!("/lib/{t}")));
        default_dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
    }
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"] {
        default_dirs.push(PathBuf::from(d));
    }
    let shipped = shipped_libraries(&elfs);

    for e in &elfs {
        let file = e.rel.clone();
        let mut problem = |kind| {
            problems.push(Problem {
                file: file.clone(),
                kind,
            })
        };
        match Platform::from_elf_machine(e.machine, e.is_64) {
            Some(p) if p.satisfies(erts_platform) => {}
            found => {
                problem(ProblemKind::WrongArchitecture {
                    found: found
                        .map_or_else(|| format!("ELF machine {}", e.machine), |p| p.to_string()),
                    expected: erts_platform.clone(),
                });
                continue;
            }
        }
        if let Some(interp) = &e.interpreter {
            if view.resolve_file(Path::new(interp)).is_none() {
                problem(ProblemKind::MissingLoader {
                    path: interp.clone(),
                    package: debian_package(interp),
                });
            }
        }
        let origin = e
            .image_path()
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let search: Vec<PathBuf> = (if e.runpaths.is_empty() {
            &e.rpaths
        } else {
            &e.runpaths
        })
        .iter()
        .map(|d| expand_origin(d, &origin))
        .chain(default_dirs.iter().cloned())
        .chain(std::iter::once(origin.clone()))
        .collect();
        let mut found: HashMap<&str, PathBuf> = HashMap::new();
        for lib in &e.needed {
            let hit = if lib.contains('/') {
                view.resolve_file(&expand_origin(lib, &origin))
            } else {
                search
                    .iter()
                    .find_map(|d| view.resolve_file(&d.join(lib)))
                    .or_else(|| shipped.get(lib.as_str()).cloned())
            };
            match hit {
                Some(p) => {
                    found.insert(lib.as_str(), p);
                }
                None => problem(ProblemKind::MissingLibrary {
                    library: lib.clone(),
                    package: debian_package(lib),
                }),
            }
        }
        for (lib, versions) in &e.verneed {
            let Some(at) = found.get(lib.as_str()) else {
                continue; // missing altogether: reported above
            };
            let Some(defined) = view.verdefs(at) else {
                continue;
            };
            for v in versions {
                if !defined.iter().any(|d| d == v) {
                    problem(ProblemKind::MissingVersion {
                        library: lib.clone(),
                        version: v.clone(),
                        newest: newest_of_family(&defined, v),
                        package: debian_package(lib),
                    });
                }
            }
        }
    }
    problems.sort_by(|a, b| a.file.cmp(&b.file));
    PreflightReport {
        problems,
        files_checked: elfs.len(),
        hint: None,
    }
}

/// The ELF files of the release, parsed, and those that would not parse.
fn read_elfs(release: &Release) -> (Vec<ElfInfo>, Vec<Problem>) {
    let root = release.root();
    let mut problems = Vec::new();
    let mut elfs = Vec::new();
    let tree = release.tree();
    release.for_each_elf_candidate(&mut |path| {
        if !is_elf(tree, path) {
            return;
        }
        let rel = path.strip_prefix(root).unwrap_or(path).to_owned();
        let parsed = tree
            .read(path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| ElfInfo::parse(rel.clone(), &bytes));
        match parsed {
            Ok(Some(info)) => elfs.push(info),
            Ok(None) => {}
            Err(reason) => problems.push(Problem {
                file: rel,
                kind: ProblemKind::Unreadable { reason },
            }),
        }
    });
    (elfs, problems)
}

/// Libraries the release ships: found by file name or soname, as one NIF
/// loading another's library by path makes it available by soname.
fn shipped_libraries(elfs: &[ElfInfo]) -> HashMap<String, PathBuf> {
    let mut shipped: HashMap<String, PathBuf> = HashMap::new();
    for e in elfs {
        let path = e.image_path();
        if let Some(name) = path.file_name() {
            shipped
                .entry(name.to_string_lossy().into_owned())
                .or_insert_with(|| path.clone());
        }
        if let Some(s) = &e.soname {
            shipped.entry(s.clone()).or_insert(path);
        }
    }
    shipped
}

/// What the release needs from a base, whatever the base: the shared
/// libraries it does not ship (by soname), its dynamic loaders, and the
/// symbol versions it needs from those libraries (`GLIBC_2.34`,
/// `OPENSSL_3.0.0`). What a base made from packages must provide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseNeeds {
    /// Sonames (`libcrypto.so.3`).
    pub libraries: BTreeSet<String>,
    /// Loader paths (`/lib64/ld-linux-x86-64.so.2`).
    pub loaders: BTreeSet<String>,
    /// Symbol versions.
    pub versions: BTreeSet<String>,
}

/// [`ReleaseNeeds`] of `release`, read from its ELF files.
pub fn needs(release: &Release) -> ReleaseNeeds {
    let (elfs, _) = read_elfs(release);
    let shipped = shipped_libraries(&elfs);
    let mut n = ReleaseNeeds::default();
    for e in &elfs {
        n.loaders.extend(e.interpreter.iter().cloned());
        for lib in &e.needed {
            if !lib.contains('/') && !shipped.contains_key(lib) {
                n.libraries.insert(lib.clone());
            }
        }
        for (lib, versions) in &e.verneed {
            if !shipped.contains_key(lib) {
                n.versions.extend(versions.iter().cloned());
            }
        }
    }
    n
}

mod elf;
mod report;
mod rootfs;
mod view;

use elf::*;
pub use report::*;
pub use rootfs::*;
use view::*;

#[cfg(test)]
mod tests;
