//! The one error type at the top and the documented exit codes: every
//! module's error converts into [`Error`], whose [`Error::exit_code`] is an
//! exhaustive match, so a new error type cannot silently exit 1. Also the
//! path-carrying I/O error every module shares.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::ImportError;
use crate::credentials::AuthError;
use crate::credentials::helpers::HelperError;
use crate::credentials::keyring::KeyringError;
use crate::debian::DebianError;
use crate::engine::buildkit::BuildkitError;
use crate::image::config::ConfigError;
use crate::image::manifest::ManifestError;
use crate::image::platform::PlatformParseError;
use crate::image::reference::ReferenceError;
use crate::layer::LayerError;
use crate::layout::LayoutError;
use crate::preflight::PreflightError;
use crate::registry::RegistryError;
use crate::release::ReleaseError;
use crate::settings::SettingsError;

/// The documented exit codes (README, `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Anything not classified below (I/O, a full disk, …).
    Failure = 1,
    /// Bad command line or configuration (clap also uses 2).
    Usage = 2,
    /// Bad input: a missing or corrupt release, layout, base or tag.
    Input = 3,
    /// Preflight found the release will not start on the base.
    Preflight = 4,
    /// A registry or network error (unreachable, rejected, retries exhausted).
    Registry = 5,
    /// Authentication or authorisation failed.
    Auth = 6,
    /// A build engine (BuildKit / Docker) failed or is missing.
    Engine = 7,
}

/// A file-system operation that failed: what was being done, to which path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct IoError {
    /// What was being done (`reading`, `creating`, …).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// `map_err(io("reading", path))?`: an [`IoError`] for `path`, which every
/// module error takes through `From`.
pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Every way a command can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags, environment or `guildhall-image.toml`.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An image reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A platform given as `OS/ARCH`.
    #[error(transparent)]
    Platform(#[from] PlatformParseError),
    /// The OCI layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The mix release.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Writing a layer.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The release will not start on the base.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// A registry (boxed: its variants carry URLs and bodies).
    #[error(transparent)]
    Registry(Box<RegistryError>),
    /// A credential source.
    #[error(transparent)]
    Credentials(#[from] AuthError),
    /// A docker credential helper.
    #[error(transparent)]
    Helper(#[from] HelperError),
    /// The OS keyring.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// BuildKit or Docker.
    #[error(transparent)]
    Buildkit(#[from] BuildkitError),
    /// An image archive.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A manifest or index.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An image config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Debian packages: the archive, the lock, the resolver (boxed: its
    /// variants carry URLs and hashes).
    #[error(transparent)]
    Debian(Box<DebianError>),
    /// A file outside the modules above.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An OS error with no path (standard input, a child process); always
    /// under a [`Error::Context`] saying what was being done.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// A JSON document that does not parse (under a [`Error::Context`]
    /// naming it).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A command line that cannot work (flags that do not go together).
    #[error("{0}")]
    Usage(String),
    /// Input that is missing or wrong (no release where one was looked for).
    #[error("{0}")]
    Input(String),
    /// A build tool the tool ran failed (`mix release` under `--mix`).
    #[error("{0}")]
    Engine(String),
    /// What was being done when `source` happened.
    #[error("{what}")]
    Context {
        /// `pulling the base image …`.
        what: String,
        /// The failure.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Settings(_) | Error::Reference(_) | Error::Platform(_) | Error::Usage(_) => {
                ExitCode::Usage
            }
            Error::Layout(e) => e.exit_code(),
            Error::Release(e) => e.exit_code(),
            Error::Layer(e) => e.exit_code(),
            Error::Preflight(e) => e.exit_code(),
            Error::Registry(e) => e.exit_code(),
            Error::Credentials(_) | Error::Helper(_) | Error::Keyring(_) => ExitCode::Auth,
            Error::Buildkit(e) => e.exit_code(),
            Error::Engine(_) => ExitCode::Engine,
            Error::Import(e) => e.exit_code(),
            Error::Debian(e) => e.exit_code(),
            Error::Manifest(_) | Error::Config(_) | Error::Input(_) => ExitCode::Input,
            Error::Io(_) | Error::Os(_) => ExitCode::Failure,
            Error::Json(_) => ExitCode::Input,
            Error::Context { source, .. } => source.exit_code(),
        }
    }

    /// The registry error at the bottom of this one, if that is what it is.
    pub fn registry(&self) -> Option<&RegistryError> {
        match self {
            Error::Registry(e) => Some(e),
            Error::Context { source, .. } => source.registry(),
            _ => None,
        }
    }

    /// A command-line mistake (exit 2).
    pub fn usage(msg: impl fmt::Display) -> Error {
        Error::Usage(msg.to_string())
    }

    /// Missing or bad input (exit 3).
    pub fn input(msg: impl fmt::Display) -> Error {
        Error::Input(msg.to_string())
    }
}

impl From<DebianError> for Error {
    fn from(e: DebianError) -> Error {
        Error::Debian(Box::new(e))
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// The result of a command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.context("…")` for any result whose error converts into [`Error`].
pub trait Context<T> {
    /// Say what was being done.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Say what was being done, lazily.
    fn with_context<F: FnOnce() -> S, S: fmt::Display>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Context {
            what: what.to_string(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<F: FnOnce() -> S, S: fmt::Display>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            what: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

/// `Option::context`: `None` becomes bad input.
pub trait OptionContext<T> {
    /// `None` is [`Error::Input`] saying `what`.
    fn or_input(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> OptionContext<T> for Option<T> {
    fn or_input(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::input(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_exit_code_of_what_it_wraps() {
        let e: Result<()> = Err(Error::input("no release found")).context("building");
        let e = e.unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Input);
        assert_eq!(e.to_string(), "building");
        assert_eq!(
            std::error::Error::source(&e).unwrap().to_string(),
            "no release found"
        );
    }
}
