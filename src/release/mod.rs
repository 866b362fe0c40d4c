//! Reading a mix release (directory or tarball): name, version, ERTS, apps,
//! and the plan of layers it becomes. Knows nothing about registries.
// STUB: being written by the release/layer helper.

/// Errors reading a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Placeholder.
    #[error("release error: {0}")]
    Invalid(String),
}

impl crate::exit::Classify for ReleaseError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Input
    }
}
