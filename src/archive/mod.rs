//! Importing an image archive into the OCI layout: a docker-archive (what
//! `docker save` writes: `manifest.json`, a config, uncompressed layer tars)
//! or an OCI archive (`oci-layout`, `index.json`, `blobs/sha256/…`: what
//! BuildKit's `--output type=oci` writes). Every digest is checked on the way
//! in: a config against the ID it is stored under, a docker layer against its
//! `rootfs.diff_ids` entry, an OCI blob against its descriptor. Tags move only
//! once everything is stored, so a failed import leaves the layout as it was.
//!
//! The archive is read in place: one pass over the tar headers records where
//! each member's bytes are, then each member is streamed from its offset.
//! Nothing is held whole in memory but JSON documents (bounded in size).
//! Uncompressed docker layers are gzip-compressed as they stream, on every
//! core, by the same pipeline as the direct engine's layers; a layer
//! whose diff ID the layout already holds is only hashed, not compressed again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::engine::LayerOutcome;
use crate::image::{ConfigFile, Descriptor, Index, Manifest, mutate};
use crate::image::{Digest, Sha256Hasher, media};
use crate::layout::{Layout, LayoutError};
use crate::progress::{Progress, Task};

/// JSON members (manifests, configs, indexes) larger than this are refused.
const MAX_JSON: u64 = 16 * 1024 * 1024;
const BUF: usize = 256 * 1024;

/// Which kind of archive was imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// `docker save` output.
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

/// Why an archive could not be imported; every variant names the archive.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// The archive is neither a docker-archive nor an OCI archive, or is malformed.
    #[error("{archive} is not a usable image archive: {reason}")]
    Invalid {
        /// The archive.
        archive: PathBuf,
        /// Why.
        reason: String,
    },
    /// A member the archive's own manifest names is not in it.
    #[error("{archive} has no member `{member}` (named by its {named_by})")]
    MissingMember {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// Which document names it.
        named_by: String,
    },
    /// A member's bytes do not hash to the digest the archive declares for it.
    #[error("{what} (`{member}` in {archive}) is corrupt: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// What it is: `layer 3 of 5`, `the image config`, …
        what: String,
        /// The digest declared.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A member's size differs from its descriptor's.
    #[error("{what} (`{member}` in {archive}) is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The archive.
        archive: PathBuf,
        /// The member path.
        member: String,
        /// What it is.
        what: String,
        /// Declared size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// Writing into the layout failed.
    #[error("importing {archive} into the layout: {source}")]
    Layout {
        /// The archive.
        archive: PathBuf,
        /// The layout's error.
        #[source]
        source: LayoutError,
    },
}

impl ImportError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self {
            ImportError::Io(_)
            | ImportError::Layout {
                source: LayoutError::Io(_),
                ..
            } => crate::error::ExitCode::Failure,
            _ => crate::error::ExitCode::Input,
        }
    }
}

type Result<T> = std::result::Result<T, ImportError>;

/// What an import stored.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The archive's format.
    pub format: ArchiveFormat,
    /// What the tags point at: an image manifest (or, for a multi-platform
    /// OCI archive, an index).
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The image config (the first image's, for an index).
    pub config: Digest,
    /// `os/arch[/variant]` (comma-separated for an index).
    pub platform: String,
    /// Layers, base first (the first image's, for an index).
    pub layers: Vec<LayerOutcome>,
}

/// Import the image in `archive` (format detected) into `layout` and point
/// `tags` at it. Nothing is tagged unless every blob was stored and verified.
pub fn import_archive(
    layout: &Layout,
    archive: &Path,
    tags: &[String],
    progress: &Progress,
) -> Result<Imported> {
    let ar = TarIndex::read(archive)?;
    let imported = if ar.has("manifest.json") {
        import_docker(layout, &ar, progress)?
    } else if ar.has("index.json") && ar.has("oci-layout") {
        import_oci(layout, &ar, progress)?
    } else {
        return Err(ImportError::Invalid {
            archive: archive.to_owned(),
            reason: "it has neither manifest.json (docker-archive) nor oci-layout + index.json (OCI archive)".into(),
        });
    };
    if !tags.is_empty() {
        layout
            .set_tags(&imported.media_type, &imported.digest, tags)
            .map_err(|e| ar.layout_err(e))?;
    }
    Ok(imported)
}

/// `created_by` of each history entry that made a layer, in layer order.
fn layer_history(config: &ConfigFile) -> Vec<String> {
    config
        .layer_history()
        .into_iter()
        .map(|e| {
            let s = e.created_by.as_deref().unwrap_or("");
            let s = s
                .trim_start_matches("/bin/sh -c ")
                .trim_start_matches("#(nop) ")
                .trim();
            let short: String = s.chars().take(72).collect();
            if short.len() < s.len() {
                format!("{short}…")
            } else {
                short
            }
        })
        .collect()
}

/// What each layer of an image is, for the build's outcome: its blob, its
/// diff ID and history line from the config, whether it was already stored.
fn layer_outcomes(
    config: &ConfigFile,
    layers: &[Descriptor],
    reused: &[bool],
) -> Vec<LayerOutcome> {
    let history = layer_history(config);
    let diff_ids = config.diff_ids();
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerOutcome {
            name: format!("layer{}", i + 1),
            description: history.get(i).cloned().unwrap_or_default(),
            digest: l.digest.clone(),
            size: l.size,
            diff_id: diff_ids.get(i).cloned().flatten(),
            reused: reused.get(i).copied().unwrap_or(false),
        })
        .collect()
}

/// The manifest annotation that records the config an engine produced, when
/// the tool wrote a new config over it (labels filled in): an engine's image
/// ID (a config digest) then still finds the image in the layout.
pub const BUILT_CONFIG_ANNOTATION: &str = "dev.guildhouse.guildhall-image.built-config";

/// An image of the layout whose config is `config`, or whose manifest says it
/// was made from it ([`BUILT_CONFIG_ANNOTATION`]): a build that produced the
/// same image ID needs no export and no import. Every layer is reported reused.
pub fn find_by_config(layout: &Layout, config: &Digest) -> Option<Imported> {
    let wanted = config.to_string();
    for img in layout.images().ok()? {
        if !media::is_manifest(&img.media_type) {
            continue;
        }
        let Ok(bytes) = layout.read_blob(&img.digest) else {
            continue;
        };
        let Ok(m) = Manifest::parse(&img.digest.to_string(), &bytes) else {
            continue;
        };
        let annotated = m.annotations.get(BUILT_CONFIG_ANNOTATION).cloned();
        if m.config.digest != *config && annotated.as_deref() != Some(wanted.as_str()) {
            continue;
        }
        // Only an image whose blobs are all here.
        if !m
            .layers
            .iter()
            .all(|l| layout.blob_size(&l.digest).ok() == Some(l.size))
        {
            continue;
        }
        let Ok(cfg) = layout.read_blob(&m.config.digest) else {
            continue;
        };
        let Ok(cfg) = ConfigFile::parse(&m.config.digest.to_string(), &cfg) else {
            continue;
        };
        return Some(Imported {
            format: ArchiveFormat::DockerArchive,
            media_type: img.media_type.clone(),
            digest: img.digest.clone(),
            size: img.size,
            config: m.config.digest.clone(),
            platform: cfg
                .platform()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into()),
            layers: layer_outcomes(&cfg, &m.layers, &vec![true; m.layers.len()]),
        });
    }
    None
}

/// Decompress-and-read helper for callers that look inside imported layers.
pub(crate) fn layer_reader(
    layout: &Layout,
    blob: &Descriptor,
) -> std::result::Result<Box<dyn Read>, LayoutError> {
    let f = BufReader::with_capacity(BUF, layout.open_blob(&blob.digest)?);
    let packing = crate::compress::Packing::of_media_type(&blob.media_type).ok_or_else(|| {
        LayoutError::UnknownLayer {
            digest: blob.digest.clone(),
            media_type: blob.media_type.clone(),
        }
    })?;
    packing.decode(f).map_err(|source| {
        LayoutError::Io(crate::error::IoError {
            action: "reading",
            path: layout.blob_path(&blob.digest),
            source,
        })
    })
}

mod docker;
mod oci;
mod tar_index;

use docker::*;
use oci::*;
use tar_index::*;

#[cfg(test)]
mod tests;
