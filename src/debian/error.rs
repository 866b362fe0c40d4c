//! The one error type of the Debian module: every variant says what was
//! being done and where (URL, path, package, relation).

use std::io;
use std::path::PathBuf;

use super::fetch::FetchError;
use crate::error::ExitCode;

/// What can go wrong getting Debian packages into a layer.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// A download failed (after the fetcher's retries).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A keyring cannot be read or holds no usable signing key.
    #[error("keyring {what}: {reason}")]
    Keyring {
        /// The keyring (a path, or "Debian's built-in keys").
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An index is unsigned, badly signed or signed by no trusted key.
    #[error("refusing {url}: {reason}")]
    Signature {
        /// The `InRelease` URL.
        url: String,
        /// What the verification found.
        reason: String,
    },
    /// `Valid-Until` has passed: the mirror may be replaying old indexes.
    #[error("refusing {url}: it expired at {valid_until} (now is {now})")]
    Expired {
        /// The `InRelease` URL.
        url: String,
        /// Its `Valid-Until`.
        valid_until: String,
        /// The time the build was given.
        now: String,
    },
    /// `Date` is in the future: the mirror's or this machine's clock is wrong.
    #[error("refusing {url}: it is dated {date}, later than now ({now})")]
    NotYetValid {
        /// The `InRelease` URL.
        url: String,
        /// Its `Date`.
        date: String,
        /// The time the build was given.
        now: String,
    },
    /// A signed `InRelease` that is not what was asked for or lacks fields.
    #[error("{url}: {reason}")]
    Release {
        /// The `InRelease` URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Downloaded bytes do not match the hash the signed chain promised.
    #[error("refusing {what} from {url}: sha256 {actual}, but {source_of_truth} says {expected}")]
    HashMismatch {
        /// What it is (`Packages`, `libssl3 3.0.20-1~deb12u2`).
        what: String,
        /// Where it came from.
        url: String,
        /// The sha256 expected.
        expected: String,
        /// The sha256 found.
        actual: String,
        /// Who promised `expected` (`InRelease`, `Packages`, the lock file).
        source_of_truth: String,
    },
    /// An index (`Packages`, `Contents`, `status`) that does not parse.
    #[error("{what}: {reason}")]
    Index {
        /// The index (URL or path).
        what: String,
        /// What is wrong, with the line.
        reason: String,
    },
    /// A requested name that is no package of the suite.
    #[error("{request}: no such package in {suite} ({architecture}){hint}")]
    UnknownPackage {
        /// What was asked for.
        request: String,
        /// The suite and pockets searched.
        suite: String,
        /// The architecture.
        architecture: String,
        /// A suggestion (virtual package providers, another version).
        hint: String,
    },
    /// A relation no candidate satisfies.
    #[error("cannot satisfy {relation} (needed by {needed_by}): {reason}")]
    Unsatisfiable {
        /// The relation as written (`libc6 (>= 2.38)`).
        relation: String,
        /// What needs it (a request, or `PACKAGE VERSION`).
        needed_by: String,
        /// Why no candidate fits.
        reason: String,
    },
    /// A `.deb` that is not a Debian binary package.
    #[error("{package}: {reason}")]
    Deb {
        /// The package (name and version) or file.
        package: String,
        /// What is wrong.
        reason: String,
    },
    /// The lock file cannot be read or does not parse.
    #[error("lock file {path}: {reason}")]
    Lock {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--locked` and the lock would have to change.
    #[error(
        "lock file {path} is out of date ({reason}); run without --locked (or with --update-packages) to update it"
    )]
    LockOutdated {
        /// Its path.
        path: PathBuf,
        /// What changed.
        reason: String,
    },
    /// A locked package is no longer on the mirror.
    #[error(
        "{package} {version} is no longer on {url}; the snapshot archive keeps it: use --debian-mirror {snapshot} (its files: {snapshot_package})"
    )]
    Gone {
        /// The package.
        package: String,
        /// Its locked version.
        version: String,
        /// The URL that answered 404.
        url: String,
        /// A snapshot.debian.org mirror URL of the day the lock was made.
        snapshot: String,
        /// The package's page on snapshot.debian.org.
        snapshot_package: String,
    },
    /// A file of the cache or a staging area could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the layer failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// Options that make no sense together.
    #[error("{0}")]
    Usage(String),
}

impl DebianError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| DebianError::Io {
            action,
            path,
            source,
        }
    }
}

impl DebianError {
    /// The documented exit code of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DebianError::Fetch(e) if e.is_network() => ExitCode::Registry,
            DebianError::Fetch(_) | DebianError::Gone { .. } => ExitCode::Input,
            DebianError::Keyring { .. }
            | DebianError::UnknownPackage { .. }
            | DebianError::Unsatisfiable { .. }
            | DebianError::LockOutdated { .. }
            | DebianError::Usage(_) => ExitCode::Usage,
            DebianError::Signature { .. }
            | DebianError::Expired { .. }
            | DebianError::NotYetValid { .. }
            | DebianError::Release { .. }
            | DebianError::HashMismatch { .. }
            | DebianError::Index { .. }
            | DebianError::Deb { .. }
            | DebianError::Lock { .. } => ExitCode::Input,
            DebianError::Io { .. } | DebianError::Layer(_) => ExitCode::Failure,
        }
    }
}
