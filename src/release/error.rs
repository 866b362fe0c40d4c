//! What can be wrong with a release, each error naming the path and what
//! is wrong with it, and the exit code each one ends the process with.

#[allow(unused_imports)]
use super::*;

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
    /// The tarball extracts to more than the limit.
    #[error(
        "release tarball {path} extracts to more than {limit} bytes; raise the limit with --max-release-size if it really is that big"
    )]
    TooLarge {
        /// The tarball.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// Listing the release for its layers failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl ReleaseError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        match self {
            ReleaseError::Io(_) | ReleaseError::Layer(_) => ExitCode::Failure,
            ReleaseError::UnknownOwnApp { .. } => ExitCode::Usage,
            _ => ExitCode::Input,
        }
    }
}
