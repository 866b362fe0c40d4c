//! Builders that produce an image in the OCI layout: `direct` (a mix release
//! onto a base, no Docker) and `buildkit` (the Dockerfile through BuildKit).

/// Build errors.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Placeholder.
    #[error("build: {0}")]
    Other(String),
}

impl crate::exit::Classify for BuildError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Failure
    }
}

pub mod base;
pub mod buildkit;
pub mod direct;
pub mod import;
pub mod memo;
pub mod vcs;
