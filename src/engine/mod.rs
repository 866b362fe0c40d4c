//! Builders that produce an image in the OCI layout: `direct` (a mix release
//! onto a base, no Docker) and `buildkit` (the Dockerfile through BuildKit).

pub mod base;
pub mod buildkit;
pub mod direct;
