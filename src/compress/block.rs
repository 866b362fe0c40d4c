//! One block in, its compressed bytes out: the per-thread compressor of each
//! codec and the test that stores incompressible blocks.

use flate2::{Compress, Compression, FlushCompress, Status};

use super::{BlockOut, Codec, CompressError, crc32};

/// Whether a block's bytes are so evenly spread (Shannon entropy of the byte
/// histogram above 7.97 bits per byte) that no compressor can shrink it:
/// the signature of compressed or encrypted data. Text, code and BEAM files
/// are far below (typically 4.5–6.5). Blocks under 64 KiB are never judged.
pub fn looks_incompressible(bytes: &[u8]) -> bool {
    if bytes.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.97
}

/// One compressor per thread: holds the codec's state between blocks (its
/// tables, reused), never data (each call is a pure function of its
/// arguments).
pub struct BlockCompressor {
    codec: Codec,
    state: State,
}

enum State {
    Zlib {
        deflate: Box<Compress>,
        stored: Box<Compress>,
    },
    Libdeflate {
        deflate: libdeflater::Compressor,
        stored: libdeflater::Compressor,
    },
    Zstd {
        cctx: zstd::bulk::Compressor<'static>,
        stored: zstd::bulk::Compressor<'static>,
    },
}

pub(super) fn failed(codec: Codec) -> impl Fn(std::io::Error) -> CompressError {
    move |e| CompressError::Failed {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

impl BlockCompressor {
    /// A compressor for `codec` (its level checked).
    pub fn new(codec: Codec) -> Result<BlockCompressor, CompressError> {
        codec.check()?;
        let state = match codec {
            Codec::Zlib(level) => State::Zlib {
                deflate: Box::new(Compress::new(Compression::new(level), false)),
                stored: Box::new(Compress::new(Compression::none(), false)),
            },
            Codec::Libdeflate(level) => {
                let lvl = |l: u32| {
                    libdeflater::CompressionLvl::new(l as i32).map_err(|_| CompressError::Level {
                        codec: "libdeflate",
                        level: l as i32,
                        range: "1-12",
                    })
                };
                State::Libdeflate {
                    deflate: libdeflater::Compressor::new(lvl(level)?),
                    stored: libdeflater::Compressor::new(lvl(0)?),
                }
            }
            Codec::Zstd(level) => {
                let make = |l: i32| -> Result<_, CompressError> {
                    let mut c = zstd::bulk::Compressor::new(l).map_err(failed(codec))?;
                    c.include_checksum(true).map_err(failed(codec))?;
                    c.include_contentsize(true).map_err(failed(codec))?;
                    Ok(c)
                };
                // Incompressible blocks: zstd's fastest level, which finds
                // nothing and emits raw blocks.
                State::Zstd {
                    cctx: make(level)?,
                    stored: make(1)?,
                }
            }
        };
        Ok(BlockCompressor { codec, state })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Compress one block, appending to `out` (cleared first). `dict` is
    /// the previous block's last [`DICT_SIZE`] bytes (empty for the first
    /// block; ignored by codecs that take none), `last` whether this is the
    /// stream's final block. The bytes depend on `(codec, dict, input,
    /// last)` only.
    pub fn compress(
        &mut self,
        dict: &[u8],
        input: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<BlockOut, CompressError> {
        out.clear();
        let store = looks_incompressible(input);
        let codec = self.codec;
        match &mut self.state {
            State::Zlib { deflate, stored } => {
                let c = if store { stored } else { deflate };
                zlib_block(c, dict, input, last, out).map_err(|reason| CompressError::Failed {
                    codec: codec.name(),
                    reason,
                })?;
            }
            State::Libdeflate { deflate, stored } => {
                let c = if store { stored } else { deflate };
                let bound = c.gzip_compress_bound(input.len());
                out.resize(bound, 0);
                let n = c
                    .gzip_compress(input, out)
                    .map_err(|e| CompressError::Failed {
                        codec: codec.name(),
                        reason: format!("{e:?}"),
                    })?;
                out.truncate(n);
            }
            State::Zstd { cctx, stored } => {
                let c = if store { stored } else { cctx };
                let bound = zstd::zstd_safe::compress_bound(input.len());
                out.reserve(bound);
                c.compress_to_buffer(input, out).map_err(failed(codec))?;
            }
        }
        Ok(BlockOut {
            crc: if codec.uses_dictionary() {
                crc32(input)
            } else {
                0
            },
            len: input.len() as u64,
        })
    }
}

/// Raw deflate of one block: primed with the dictionary, ending with a sync
/// flush (byte-aligned, not final) or, for the last block, a finish. The
/// same bytes as the layer writer's blocks.
fn zlib_block(
    c: &mut Compress,
    dict: &[u8],
    input: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(|e| e.to_string())?;
    }
    out.reserve(input.len() + input.len() / 16 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut consumed = 0;
    loop {
        let before = c.total_in();
        let status = c
            .compress_vec(&input[consumed..], out, flush)
            .map_err(|e| e.to_string())?;
        consumed += (c.total_in() - before) as usize;
        let done = if last {
            status == Status::StreamEnd
        } else {
            consumed == input.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(());
        }
        out.reserve(64 * 1024);
    }
}
