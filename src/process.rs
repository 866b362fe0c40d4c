//! Child processes: every program the tool runs (mix, git, docker, buildctl,
//! `docker-credential-*` helpers) starts from an environment without the
//! secrets the tool holds, so a credential helper for another registry or a
//! `mix release` running the project's dependencies' code never sees them.

use std::ffi::OsStr;

/// Environment variables that hold the tool's secrets: never passed on.
pub const SECRET_ENV: &[&str] = &["GUILDHALL_IMAGE_PASSWORD", "GUILDHALL_IMAGE_USERNAME"];

/// A [`std::process::Command`] for `program` with the secret variables removed.
#[allow(clippy::disallowed_methods)] // the one place commands are made
pub fn command(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    for k in SECRET_ENV {
        c.env_remove(k);
    }
    c
}
