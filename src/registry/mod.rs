//! The distribution protocol: auth challenges and tokens, pulling manifests
//! and blobs, push sessions (monolithic, chunked, resumable), retries.
// STUB: being written by the registry helper.

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Placeholder.
    #[error("registry: {0}")]
    Other(String),
}

impl crate::exit::Classify for RegistryError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Registry
    }
}
