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
//! async-std beside tokio, and pgp 0.14. It knows nothing of merged
//! `/usr`, distroless' `status.d` or locks. What is used instead:
//!
//! - rpgp (`pgp`, pure Rust, default features off) for the OpenPGP clear
//!   signature, the one part worth a well-kept crate. 0.17 is the newest
//!   release that builds with the project's Rust 1.85 (0.18 and later need
//!   1.88, and raising the MSRV turns on let-chain lints across the whole
//!   code base); its API is the same for what is used here. It adds ~105
//!   crates to the graph (RSA, EdDSA, hashes, chrono), none with C.
//!   Sequoia was not taken: LGPL, and its default backend is C (nettle).
//! - deb822, version ordering, relations and resolution, written here
//!   (tested against policy's and dpkg's cases).
//! - Decompression in Rust: flate2 on zlib-rs (gzip), `lzma-rust2` (xz;
//!   on libc6's data.tar 1.4x faster than `lzma-rs`, ~2x liblzma's time),
//!   `ruzstd` (zstd). No OpenSSL, no C zlib.
//!
//! Memory: `Packages` indexes stream through the parser into one
//! allocation per package; resolving against bookworm (66k packages)
//! peaks at ~45 MB. `.deb` data streams to the cache and from there into
//! the layer.

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
