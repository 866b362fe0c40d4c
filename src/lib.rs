//! guildhall-image as a library: everything the binary does, behind module
//! boundaries kept as if they were crates (see ARCHITECTURE.md).

#![deny(unreachable_pub)]

pub mod archive;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod credentials;
pub mod debian;
pub mod engine;
pub mod error;
pub mod image;
pub mod layer;
pub mod layout;
pub mod preflight;
pub mod process;
pub mod progress;
pub mod registry;
pub mod release;
pub mod settings;
pub mod tree;
pub mod vcs;
