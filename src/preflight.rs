//! Will this release start on this base? ELF `DT_NEEDED` libraries and glibc
//! symbol versions of ERTS and every NIF, checked against the base's files.
// STUB: being written by the release/layer helper.

/// Preflight failures.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Placeholder.
    #[error("preflight: {0}")]
    Failed(String),
}

impl crate::exit::Classify for PreflightError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Preflight
    }
}
