//! Block compressors for layers: pure functions that turn one fixed-size
//! block of a tar stream into its compressed bytes, so that blocks can be
//! compressed on any number of threads and joined in order into bytes that
//! depend only on the input, the codec and the block size.
//!
//! Three codecs, measured side by side in `examples/compressors.rs`:
//!
//! - [`Codec::Zlib`]: zlib-rs deflate into one gzip member, pigz-style: each
//!   block is primed with the previous block's last 32 KiB as dictionary
//!   and ends with a sync flush (byte-aligned, not final), the last block
//!   with a final block; the writer frames the member with
//!   [`gzip_header`] and [`gzip_trailer`] (CRC32 combined over blocks).
//!   Today's layer format.
//! - [`Codec::Libdeflate`]: libdeflate. Its whole-buffer API always ends the
//!   deflate stream with a final block and takes no dictionary, so each
//!   block becomes a complete gzip member of its own (10-byte header, raw
//!   deflate, CRC32 and size): a multi-member gzip stream (RFC 1952 §2.2),
//!   which gzip, Go's `compress/gzip` (containerd, Docker, umoci, skopeo) and
//!   flate2's `MultiGzDecoder` read whole. A reader that stops after the
//!   first member (flate2's `GzDecoder`) does not.
//! - [`Codec::Zstd`]: zstd, each block one frame with its content size and
//!   checksum; frames concatenate into one valid zstd stream. Frames are
//!   independent (a zstd decoder carries no history from one frame to the
//!   next), so no dictionary.
//!
//! Blocks that look incompressible (phx.digest's `.gz` copies, images,
//! fonts) are stored rather than searched for matches, by a decision that
//! depends on the block's bytes alone ([`looks_incompressible`]).

mod block;
mod crc;
mod memory;
#[cfg(test)]
mod tests;

pub use block::{BlockCompressor, looks_incompressible};
pub use crc::{BlockOut, CrcCombiner, crc32, crc32_combine};
pub use memory::{compress_in_memory, zstd_mt_encoder};

/// The window deflate can reach back: how much of the previous block primes
/// the next one ([`Codec::Zlib`] only).
pub const DICT_SIZE: usize = 32 * 1024;

/// A gzip member header: deflate, no flags, mtime 0, no extra flags, OS
/// "unknown". The same bytes for every layer.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What went wrong compressing a block.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// A level the codec does not have.
    #[error("{codec} has no level {level} (it has {range})")]
    Level {
        /// The codec's name.
        codec: &'static str,
        /// The level asked for.
        level: i32,
        /// The levels it has.
        range: &'static str,
    },
    /// A block size under [`DICT_SIZE`] (blocks must hold a whole dictionary).
    #[error("block size {0} is under 32 KiB")]
    BlockSize(usize),
    /// The compressor failed (should not happen with a valid level).
    #[error("{codec} failed: {reason}")]
    Failed {
        /// The codec's name.
        codec: &'static str,
        /// Its complaint.
        reason: String,
    },
}

/// A codec and its level. Part of the output format: changing either
/// changes every layer digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// zlib-rs deflate, levels 1–9, one gzip member (dictionary-primed blocks).
    Zlib(u32),
    /// libdeflate, levels 1–12, one gzip member per block.
    Libdeflate(u32),
    /// zstd, levels 1–22, one frame per block.
    Zstd(i32),
}

/// The default gzip codec: libdeflate level 2, measured faster than zlib-rs
/// at level 6 and than umoci's pgzip at a smaller size (README, Benchmarks);
/// levels 3 and 4 save 0.4–0.6% more bytes for 8–16% more CPU.
pub const DEFAULT_GZIP: Codec = Codec::Libdeflate(2);
/// The default zstd level (zstd's own default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A `--compression` value that is not `gzip`, `gzip:LEVEL`, `zstd` or
/// `zstd:LEVEL`, or a level out of range.
#[derive(Debug, thiserror::Error)]
#[error("`{given}` is not a compression: {reason} (gzip, gzip:1-12, zstd or zstd:1-22)")]
pub struct ParseCodecError {
    /// What was given (short, as typed).
    pub given: String,
    /// Why not.
    pub reason: String,
}

impl std::str::FromStr for Codec {
    type Err = ParseCodecError;

    /// `gzip` (libdeflate level 2), `gzip:LEVEL` (libdeflate 1–12), `zstd`
    /// (level 3) or `zstd:LEVEL` (1–22).
    fn from_str(s: &str) -> Result<Codec, ParseCodecError> {
        let bad = |reason: String| ParseCodecError {
            given: s.chars().take(40).collect(),
            reason,
        };
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<i32>()
                        .map_err(|_| bad(format!("`{}` is not a level", l.escape_debug())))?,
                ),
            ),
            None => (s, None),
        };
        let codec = match (name, level) {
            ("gzip", None) => DEFAULT_GZIP,
            ("gzip", Some(l)) if l >= 0 => Codec::Libdeflate(l as u32),
            ("gzip", Some(l)) => return Err(bad(format!("gzip has no level {l}"))),
            ("zstd", l) => Codec::Zstd(l.unwrap_or(DEFAULT_ZSTD_LEVEL)),
            _ => return Err(bad("unknown compression".into())),
        };
        codec.check().map_err(|e| bad(e.to_string()))?;
        Ok(codec)
    }
}

impl Codec {
    /// The codec's name, for errors and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Zlib(_) => "zlib-rs",
            Codec::Libdeflate(_) => "libdeflate",
            Codec::Zstd(_) => "zstd",
        }
    }

    /// Whether the layer is gzip (`…tar+gzip`) rather than zstd (`…tar+zstd`).
    pub fn is_gzip(&self) -> bool {
        !matches!(self, Codec::Zstd(_))
    }

    /// The OCI media type of a layer compressed so.
    pub fn media_type(&self) -> &'static str {
        if self.is_gzip() {
            crate::image::media::OCI_LAYER_GZIP
        } else {
            crate::image::media::OCI_LAYER_ZSTD
        }
    }

    /// Whether each block wants the previous block's last [`DICT_SIZE`] bytes.
    pub fn uses_dictionary(&self) -> bool {
        matches!(self, Codec::Zlib(_))
    }

    /// The level checked against the codec's range.
    pub fn check(&self) -> Result<(), CompressError> {
        let (ok, level, range) = match *self {
            Codec::Zlib(l) => ((1..=9).contains(&l), l as i32, "1-9"),
            Codec::Libdeflate(l) => ((1..=12).contains(&l), l as i32, "1-12"),
            Codec::Zstd(l) => ((1..=22).contains(&l), l, "1-22"),
        };
        if ok {
            Ok(())
        } else {
            Err(CompressError::Level {
                codec: self.name(),
                level,
                range,
            })
        }
    }
}

/// What goes before the first block: the gzip header for [`Codec::Zlib`]
/// (the others' blocks carry their own framing).
pub fn gzip_header(codec: Codec) -> &'static [u8] {
    match codec {
        Codec::Zlib(_) => &GZIP_HEADER,
        _ => &[],
    }
}

/// What goes after the last block: for [`Codec::Zlib`], the gzip trailer
/// (CRC32 of the whole stream, the [`BlockOut`]s combined with
/// [`CrcCombiner`], and its size mod 2³²); nothing for the others.
pub fn gzip_trailer(codec: Codec, crc: u32, total_len: u64) -> Vec<u8> {
    match codec {
        Codec::Zlib(_) => {
            let mut t = Vec::with_capacity(8);
            t.extend_from_slice(&crc.to_le_bytes());
            t.extend_from_slice(&(total_len as u32).to_le_bytes());
            t
        }
        _ => Vec::new(),
    }
}

/// How a layer blob holds its tar: as is, gzip or zstd — what every reader
/// of a base's layers (preflight, the dpkg facts, imports) decodes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// A plain tar (`…layer.v1.tar`).
    Tar,
    /// gzip, one member or many (`…tar+gzip`, Docker's `…tar.gzip`).
    Gzip,
    /// zstd, one frame or many (`…tar+zstd`).
    Zstd,
}

impl Packing {
    /// The packing a layer media type names; `None` for one no reader here
    /// knows (not a layer, or another compression).
    pub fn of_media_type(media_type: &str) -> Option<Packing> {
        use crate::image::media;
        if media::is_gzip_layer(media_type) {
            Some(Packing::Gzip)
        } else if media_type == media::OCI_LAYER_ZSTD
            || media_type == "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        {
            Some(Packing::Zstd)
        } else if media_type == media::OCI_LAYER_TAR
            || media_type == "application/vnd.docker.image.rootfs.diff.tar"
        {
            Some(Packing::Tar)
        } else {
            None
        }
    }

    /// The tar stream of a blob read from `r`.
    pub fn decode<'a, R: std::io::Read + 'a>(
        self,
        r: R,
    ) -> std::io::Result<Box<dyn std::io::Read + 'a>> {
        Ok(match self {
            Packing::Tar => Box::new(r),
            Packing::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            // Reads every frame of the stream, not only the first.
            Packing::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}

impl From<bool> for Packing {
    /// `true`: gzip; `false`: a plain tar.
    fn from(gzip: bool) -> Packing {
        if gzip { Packing::Gzip } else { Packing::Tar }
    }
}
