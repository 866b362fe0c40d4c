//! Exit codes, and the mapping from an error chain to one of them. Kept in
//! the library so the README's table and the binary cannot drift apart.

/// The documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Anything not classified below.
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

/// Implemented by error types that know their exit code.
pub trait Classify {
    /// The exit code this error should end the process with.
    fn exit_code(&self) -> ExitCode;
}

/// The exit code for an error chain: the first error in the chain that
/// classifies itself decides.
pub fn classify(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(c) = crate::classify_known(cause) {
            return c;
        }
    }
    ExitCode::Failure
}
