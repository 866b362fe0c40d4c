//! The OCI model: digests, descriptors, manifests, indexes (and platform
//! selection), image configs, references, platforms, media types, and the
//! transformations that make a new image from a base (`mutate`). Pure data
//! and pure functions: no I/O here. Every place an image can live — the
//! layout, a registry, an archive — reads and writes these types.

pub mod config;
pub mod digest;
pub mod manifest;
pub mod media;
pub mod mutate;
pub mod platform;
pub mod reference;
pub mod source;

pub use config::ConfigFile;
pub use digest::{Digest, DigestWriter, Sha256Hasher};
pub use manifest::{Descriptor, ImageDoc, Index, Manifest, Parsed};
pub use platform::Platform;
pub use reference::{ImageRef, LayoutRef, RegistryRef};
