//! Debian packages into a layer (placeholder doc, rewritten below).

pub mod base;
pub mod deb;
pub mod deb822;
pub mod error;
pub mod fetch;
pub mod index;
pub mod keyring;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod version;

pub use error::DebianError;
