//! Debian's archive as a source of image layers, the way apko, chisel and
//! distroless build images from distribution packages: no apt, no dpkg, no
//! container. It owns the signed `InRelease` chain (built-in archive keys),
//! `Packages` and `Contents` indexes, dependency resolution, the lock file,
//! the content-addressed cache, `.deb` unpacking into one deterministic
//! layer, and what maintainer scripts would have done where the image
//! depends on it. It never runs a maintainer script and never speaks HTTP
//! itself: downloads go through the [`Fetch`] trait, implemented on reqwest
//! in `registry::archive_http`. Time is an input (`now`), never read.
//!
//! The calls a build makes, in order:
//!
//! 1. [`BaseFacts::from_layers`] (or [`BaseFacts::empty`] for `deb:SUITE`):
//!    the base's dpkg database and symlinks;
//! 2. [`prepare`] with [`PrepareOptions`]: the lock reused if it still
//!    fits (then no index is fetched), else the suite's pockets verified
//!    and resolved; every `.deb` from the cache or the mirror, verified;
//! 3. [`write_layer`] with [`LayerRequest`]: the layer and a
//!    [`LayerReport`]; [`Lock::write`] when `lock_changed`.
//!
//! Preflight adds [`find_files`] (which package ships a library) and
//! `deb:auto` adds [`choose_suite`].
//!
//! # Why not the `debian-packaging` crate
//!
//! Measured on 2026-12-01: `debian-packaging` 0.18 (the newest) with its
//! default features off still pulls 335 crates, including C liblzma, zstd
//! and bzip2 (`xz2`, `zstd-sys`, `bzip2-sys` through `async-compression`),
//! async-std beside tokio, and pgp 0.14 while rpgp is at 0.21. It knows
//! nothing of merged `/usr`, distroless' `status.d` or locks. What is used
//! instead: rpgp (`pgp` 0.21, pure Rust, no default features: 98 crates
//! added to the graph, no C) for the OpenPGP clear signature — the one
//! part worth a well-kept crate; deb822, version ordering, relations and
//! resolution written here (a few hundred lines each, tested against
//! policy's cases); decompression in Rust: flate2 on zlib-rs (gzip),
//! `lzma-rust2` (xz: 1.3-1.9 times liblzma's time on libc6's data.tar, and
//! faster than `lzma-rs`), `ruzstd` (zstd). No OpenSSL, no C zlib.

mod assemble;
pub mod base;
mod cert_hash;
pub mod contents;
pub mod deb;
pub mod deb822;
mod error;
pub mod fetch;
pub mod index;
pub mod keyring;
pub mod lock;
mod maintainer;
mod plan;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod runner;
mod unpack;
pub mod version;

pub use assemble::{LayerReport, LayerRequest, history_line, layer_fingerprint, write_layer};
pub use base::BaseFacts;
pub use contents::{ContentsMatch, find_files, library_package, multiarch_triplet};
pub use error::DebianError;
pub use fetch::{Cache, Fetch, FetchError, Sha256};
pub use index::{Archive, PocketKind, Sources};
pub use keyring::Keyring;
pub use lock::{LOCK_FILE, Lock, LockInputs, LockedPackage};
pub use maintainer::ScriptsReport;
pub use plan::{DebFile, LockMode, PrepareOptions, Prepared, download, prepare};
pub use resolve::{Request, Resolution, Why};
pub use runner::{SuiteChoice, choose_suite, runner_requests};
pub use version::Version;
