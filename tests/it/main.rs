//! guildhall-image's integration tests, one binary: the CLI and the library
//! against real components (a mix release of the fixture project, CNCF
//! distribution registries with Basic and token auth, nginx capping bodies,
//! a Docker engine with BuildKit, runc, skopeo, umoci, a Secret Service,
//! keyutils), and in-process doubles only for what no real server does on
//! cue (`support::faulty_registry`, `support::forgejo_registry`).
//!
//! Missing tools fail the tests with a message naming the package; `.ci/run`
//! installs them.
// Tests run tools directly; the secret-stripping wrapper is for the product.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod support;

mod build;
mod buildkit;
mod credentials;
mod debian;
mod exit_codes;
mod hardening;
mod push;
mod registry;
mod workflow;
mod zstd;
