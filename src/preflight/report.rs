//! What preflight found: each problem, the file it is in, and what would fix it.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------
// The check

/// What is wrong with one file of the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A `DT_NEEDED` library is neither in the base image nor in the release.
    MissingLibrary {
        /// Its name (`libcrypto.so.3`).
        library: String,
        /// The Debian package that has it, when known.
        package: Option<&'static str>,
    },
    /// The dynamic loader (`PT_INTERP`) is not in the base image.
    MissingLoader {
        /// Its path (`/lib64/ld-linux-x86-64.so.2`).
        path: String,
        /// The Debian package that has it, when known.
        package: Option<&'static str>,
    },
    /// The library is there but does not define a symbol version the file needs.
    MissingVersion {
        /// The library (`libc.so.6`).
        library: String,
        /// The version (`GLIBC_2.34`).
        version: String,
        /// The newest version of that family it does define (`GLIBC_2.31`).
        newest: Option<String>,
        /// The Debian package that has the library, when known.
        package: Option<&'static str>,
    },
    /// The file is built for another machine than ERTS.
    WrongArchitecture {
        /// What the file is built for (`linux/arm64`, or an ELF machine number).
        found: String,
        /// The platform of ERTS.
        expected: Platform,
    },
    /// ERTS is built for another platform than the base image.
    PlatformMismatch {
        /// The platform of ERTS.
        release: Platform,
        /// The platform of the base image.
        base: Platform,
    },
    /// The file starts like ELF but cannot be read or parsed.
    Unreadable {
        /// Why.
        reason: String,
    },
}

/// One problem: a file of the release and what it lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the release root (`erts-13.1.5/bin/beam.smp`).
    pub file: PathBuf,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// The Debian package that would fix it, when known.
    pub fn package(&self) -> Option<&'static str> {
        match &self.kind {
            ProblemKind::MissingLibrary { package, .. }
            | ProblemKind::MissingLoader { package, .. }
            | ProblemKind::MissingVersion { package, .. } => *package,
            _ => None,
        }
    }
}

pub(super) fn pkg(package: &Option<&'static str>) -> String {
    package
        .map(|p| format!(" (Debian package {p})"))
        .unwrap_or_default()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.kind {
            ProblemKind::MissingLibrary { library, package } => write!(
                f,
                "{file}: needs {library}{}, not found in the base image",
                pkg(package)
            ),
            ProblemKind::MissingLoader { path, package } => write!(
                f,
                "{file}: needs the dynamic loader {path}{}, not found in the base image (is it glibc-based?)",
                pkg(package)
            ),
            ProblemKind::MissingVersion {
                library,
                version,
                newest,
                package,
            } => {
                write!(f, "{file}: needs {version} from {library}{}", pkg(package))?;
                match newest {
                    Some(n) => write!(
                        f,
                        ", but the base image's {library} provides only up to {n} (the release was built on a newer system than the base)"
                    ),
                    None => write!(f, ", which the base image's {library} does not provide"),
                }
            }
            ProblemKind::WrongArchitecture { found, expected } => write!(
                f,
                "{file}: built for {found}, but ERTS is built for {expected}"
            ),
            ProblemKind::PlatformMismatch { release, base } => write!(
                f,
                "{file}: ERTS is built for {release}, but the base image is {base}"
            ),
            ProblemKind::Unreadable { reason } => {
                write!(f, "{file}: not a readable ELF file: {reason}")
            }
        }
    }
}

/// What preflight found: nothing, when the release should start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// The problems, in release-path order.
    pub problems: Vec<Problem>,
    /// ELF files checked.
    pub files_checked: usize,
    /// What would fix the problems, when the caller knows better than the
    /// built-in table (Debian's `Contents` index, the base's suite).
    pub hint: Option<String>,
}

impl PreflightReport {
    /// No problems.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Debian packages that would fix problems, sorted, each once.
    pub fn packages(&self) -> Vec<&'static str> {
        let set: BTreeSet<&'static str> =
            self.problems.iter().filter_map(Problem::package).collect();
        set.into_iter().collect()
    }

    /// `Ok` when there are no problems; a platform mismatch of ERTS and the
    /// base becomes [`PreflightError::PlatformMismatch`], anything else
    /// [`PreflightError::Failed`].
    pub fn into_result(self, base_name: &str) -> Result<PreflightReport, PreflightError> {
        if let Some(ProblemKind::PlatformMismatch { release, base }) = self
            .problems
            .iter()
            .map(|p| &p.kind)
            .find(|k| matches!(k, ProblemKind::PlatformMismatch { .. }))
        {
            return Err(PreflightError::PlatformMismatch {
                release: release.to_string(),
                base: base.to_string(),
                base_name: base_name.to_owned(),
            });
        }
        if self.is_ok() {
            Ok(self)
        } else {
            Err(PreflightError::Failed(self))
        }
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "no problems in {} ELF files", self.files_checked);
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        if let Some(h) = &self.hint {
            return write!(f, "\n{h}");
        }
        let packages = self.packages();
        if !packages.is_empty() {
            write!(
                f,
                "\nAdd to the base image: apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            )?;
        }
        Ok(())
    }
}
