//! Deterministic layers: sorted tar entries with fixed owner and mtimes,
//! hashed (diff ID) and compressed (gzip or zstd) on all cores in one
//! streaming pass.
//!
//! The tar stream is cut into fixed-size blocks, each compressed on its own
//! (by default a libdeflate gzip member per block, so the layer is a
//! multi-member gzip stream; zstd makes one frame per block), joined in
//! order: the output depends only on the input, the codec and the block
//! size — never on the number of threads or their timing.

use crate::error::io as io_err;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};

use tar::{EntryType, Header};

use crate::image::{Digest, DigestWriter, Sha256Hasher};
use crate::progress::Task;
use crate::tree::Tree;

/// The owner of every entry: `nobody`, like `COPY --chown=nobody:root`.
pub const NOBODY_UID: u64 = 65534;
/// The mtime of every entry (1 s after the epoch, as jib does): a constant,
/// so an unchanged layer keeps its digest from build to build.
pub const FIXED_MTIME: u64 = 1;
/// Default size of the blocks compressed independently. Part of the output
/// format: changing it changes every layer digest.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;

const TAR_BLOCK: usize = 512;
const READ_CHUNK: usize = 256 * 1024;
const DICT_SIZE: usize = 32 * 1024;

/// What went wrong building a layer, and with which file.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// A file changed size while it was being read.
    #[error(
        "{path} changed while the layer was being written (expected {expected} bytes, {actual})"
    )]
    Changed {
        /// The file on disk.
        path: PathBuf,
        /// Its size when the entry header was written.
        expected: u64,
        /// What was found instead.
        actual: String,
    },
    /// Two entries of one layer have the same path but different sources.
    #[error("layer {layer}: {dest} planned twice (from {first} and {second})")]
    Duplicate {
        /// The layer.
        layer: String,
        /// The path inside the layer.
        dest: PathBuf,
        /// One source.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// Writing the compressed layer failed.
    #[error("writing layer {layer}: {source}")]
    Write {
        /// The layer.
        layer: String,
        /// The error of the output.
        #[source]
        source: io::Error,
    },
    /// The compressor failed (should not happen).
    #[error("compressing layer {layer}: {reason}")]
    Compress {
        /// The layer.
        layer: String,
        /// The compressor's complaint.
        reason: String,
    },
    /// Options out of range.
    #[error("invalid layer options: {0}")]
    Options(String),
}

impl LayerError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        match self {
            // A release file that vanished or changed mid-build, or planned
            // twice: the input is not what it claimed.
            LayerError::Changed { .. } | LayerError::Duplicate { .. } => ExitCode::Input,
            LayerError::Io(_)
            | LayerError::Write { .. }
            | LayerError::Compress { .. }
            | LayerError::Options(_) => ExitCode::Failure,
        }
    }
}

/// How layers are written. The defaults are what makes digests reproducible:
/// change any of them (but `threads`) and every layer digest changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOptions {
    /// Codec and level (default [`crate::compress::DEFAULT_GZIP`]).
    pub codec: crate::compress::Codec,
    /// Compression threads; 0 = one per core. Does not change the output.
    pub threads: usize,
    /// Size of the independently compressed blocks (default 1 MiB).
    pub block_size: usize,
    /// mtime of every entry.
    pub mtime: u64,
    /// Owner of every entry.
    pub uid: u64,
    /// Group of every entry.
    pub gid: u64,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            codec: crate::compress::DEFAULT_GZIP,
            threads: 0,
            block_size: DEFAULT_BLOCK_SIZE,
            mtime: FIXED_MTIME,
            uid: NOBODY_UID,
            gid: 0,
        }
    }
}

impl LayerOptions {
    /// The media type of a layer written with these options.
    pub fn media_type(&self) -> &'static str {
        self.codec.media_type()
    }

    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn check(&self) -> Result<(), LayerError> {
        self.codec
            .check()
            .map_err(|e| LayerError::Options(e.to_string()))?;
        if self.block_size < 64 * 1024 || self.block_size > 1 << 30 {
            return Err(LayerError::Options(format!(
                "block size {} is not between 64 KiB and 1 GiB",
                self.block_size
            )));
        }
        Ok(())
    }
}

/// What a written layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar (the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Tar entries written (files, directories, links).
    pub entries: usize,
}

/// The diff ID alone (tar + sha256, no compression): cheap, used to find
/// unchanged layers already in the layout.
pub fn diff_id(layer: &PlannedLayer, opts: &LayerOptions) -> Result<LayerStats, LayerError> {
    opts.check()?;
    let mut tar = DigestWriter::new(io::sink());
    let entries = write_tar(layer, opts, &mut tar).map_err(|e| e.into_layer_error(&layer.name))?;
    Ok(stats_of(&tar, entries))
}

/// Tar → gzip → `out`, compressing on `opts.threads` threads with at most
/// two blocks per thread in flight. `progress` gets uncompressed byte
/// counts. Returns the stats and `out` (flushed).
pub fn write_layer<W: Write + Send>(
    layer: &PlannedLayer,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
) -> Result<(LayerStats, W), LayerError> {
    opts.check()?;
    compress(&layer.name, opts, out, progress, |sink| {
        write_tar(layer, opts, sink)
    })
}

/// A tar stream made elsewhere (a docker-archive layer) → gzip → `out`, on
/// all cores and with the same bytes as [`write_layer`] would give for that
/// tar. `what` names the stream in errors. Returns the stats (`entries` is
/// 0: the stream is not parsed) and `out`.
pub fn compress_tar_stream<R: Read, W: Write + Send>(
    what: &str,
    mut input: R,
    opts: &LayerOptions,
    out: W,
    progress: Option<&Task>,
) -> Result<(LayerStats, W), LayerError> {
    opts.check()?;
    compress(what, opts, out, progress, |sink| {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(0),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TarError::Source(LayerError::Io(crate::error::IoError {
                        action: "reading",
                        path: PathBuf::from(what),
                        source,
                    })));
                }
            };
            sink.write_all(&buf[..n]).map_err(TarError::Output)?;
        }
    })
}

mod explicit;
mod gzip;
mod plan;
mod writer;

pub use explicit::*;

use gzip::compress;
pub use plan::*;
pub use writer::*;

#[cfg(test)]
mod tests;
