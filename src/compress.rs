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

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

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

/// The CRC32 and length of a block's input, for the writer to combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockOut {
    /// CRC32 of the block's input, for [`Codec::Zlib`]'s one trailer; 0 for
    /// the codecs whose blocks carry their own check (a gzip member's
    /// trailer, a zstd frame's checksum).
    pub crc: u32,
    /// Length of the block's input.
    pub len: u64,
}

/// Combines per-block CRC32s, in stream order, into the stream's CRC32
/// and length (for [`gzip_trailer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrcCombiner {
    crc: u32,
    len: u64,
}

impl CrcCombiner {
    /// An empty stream's.
    pub fn new() -> CrcCombiner {
        CrcCombiner::default()
    }

    /// Append the next block.
    pub fn push(&mut self, block: BlockOut) {
        self.crc = crc32_combine(self.crc, block.crc, block.len);
        self.len += block.len;
    }

    /// CRC32 of everything pushed.
    pub fn sum(&self) -> u32 {
        self.crc
    }

    /// Bytes pushed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The CRC32 of `A ‖ B` from `crc32(A)`, `crc32(B)` and `len(B)` (zlib's
/// `crc32_combine`, by the GF(2) operator for `len(B)` zero bytes).
pub fn crc32_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    if len_b == 0 {
        return crc_a;
    }
    // Multiply by x^(8·len_b) modulo the CRC polynomial (reflected).
    const POLY: u32 = 0xedb8_8320;
    fn multmodp(a: u32, mut b: u32) -> u32 {
        let mut m = 1u32 << 31;
        let mut p = 0u32;
        loop {
            if a & m != 0 {
                p ^= b;
                if a & (m - 1) == 0 {
                    break;
                }
            }
            m >>= 1;
            b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        }
        p
    }
    // x^(2^k) mod p for k = 0.. (x^1 = 0x40000000 reflected).
    let mut xp = 1u32 << 30;
    let mut result = 1u32 << 31; // x^0
    let mut n = len_b.wrapping_mul(8);
    while n != 0 {
        if n & 1 != 0 {
            result = multmodp(xp, result);
        }
        xp = multmodp(xp, xp);
        n >>= 1;
    }
    multmodp(result, crc_a) ^ crc_b
}

/// CRC32 (gzip's) of some bytes.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc::new();
    c.update(bytes);
    c.sum()
}

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

fn failed(codec: Codec) -> impl Fn(std::io::Error) -> CompressError {
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

/// The whole of `input` compressed in `block_size` blocks on `threads`
/// threads, framed and joined in order: what a layer writer streams, done
/// in memory (for tests and the compressor study; layers never hold a whole
/// stream in memory). The bytes do not depend on `threads`.
pub fn compress_in_memory(
    codec: Codec,
    input: &[u8],
    block_size: usize,
    threads: usize,
) -> Result<Vec<u8>, CompressError> {
    if block_size < DICT_SIZE {
        return Err(CompressError::BlockSize(block_size));
    }
    codec.check()?;
    // At least one block, so that an empty stream is still a valid member/frame.
    let blocks: Vec<&[u8]> = if input.is_empty() {
        vec![input]
    } else {
        input.chunks(block_size).collect()
    };
    let n = blocks.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot = std::sync::Mutex<Option<Result<(Vec<u8>, BlockOut), CompressError>>>;
    let results: Vec<Slot> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(n) {
            s.spawn(|| {
                let mut c = match BlockCompressor::new(codec) {
                    Ok(c) => c,
                    Err(e) => {
                        *results[0].lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(e));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let dict = if i == 0 || !codec.uses_dictionary() {
                        &[][..]
                    } else {
                        let prev = blocks[i - 1];
                        &prev[prev.len().saturating_sub(DICT_SIZE)..]
                    };
                    let mut out = Vec::new();
                    let r = c
                        .compress(dict, blocks[i], i + 1 == n, &mut out)
                        .map(|b| (out, b));
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    let mut out = gzip_header(codec).to_vec();
    let mut crc = CrcCombiner::new();
    for r in results {
        let (bytes, b) = r
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .expect("every block compressed")?;
        out.extend_from_slice(&bytes);
        crc.push(b);
    }
    out.extend_from_slice(&gzip_trailer(codec, crc.sum(), crc.len()));
    Ok(out)
}

/// A zstd encoder in zstd's own multithreaded mode (one frame, jobs
/// overlapping so later jobs see earlier data): its output is the same for
/// any `workers` ≥ 1 (zstd guarantees this for streaming compression; 0,
/// single-threaded mode, gives other bytes, so it is never used). Memory is
/// about `(workers + 2) × 2 × job size` (job size 4 × the window: 8 MiB at
/// levels 3–5), so the caller bounds `workers` in bytes, not by core count.
pub fn zstd_mt_encoder<W: std::io::Write>(
    out: W,
    level: i32,
    workers: u32,
) -> Result<zstd::stream::write::Encoder<'static, W>, CompressError> {
    Codec::Zstd(level).check()?;
    let codec = Codec::Zstd(level);
    let mut e = zstd::stream::write::Encoder::new(out, level).map_err(failed(codec))?;
    e.multithread(workers.max(1)).map_err(failed(codec))?;
    e.include_checksum(true).map_err(failed(codec))?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Text-like, code-like and incompressible stretches, several blocks long.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut v = Vec::with_capacity(len);
        let words = [
            &b"defmodule "[..],
            b"Guildhall.",
            b"Handler do\n",
            b"  def call(conn, opts), do: ",
            b"{:ok, conn}\n",
            b"end\n",
        ];
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (v.len() / 100_000) % 3 == 2 {
                // a stretch of noise (an image)
                v.extend_from_slice(&x.to_le_bytes());
            } else {
                v.extend_from_slice(words[(x % 6) as usize]);
            }
        }
        v.truncate(len);
        v
    }

    const BLOCK: usize = 64 * 1024;

    fn all_codecs() -> Vec<Codec> {
        vec![
            Codec::Zlib(1),
            Codec::Zlib(6),
            Codec::Libdeflate(1),
            Codec::Libdeflate(6),
            Codec::Zstd(3),
        ]
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_number_of_threads() {
        let input = sample(700_000);
        for codec in all_codecs() {
            let one = compress_in_memory(codec, &input, BLOCK, 1).unwrap();
            for threads in [2, 3, 8] {
                let other = compress_in_memory(codec, &input, BLOCK, threads).unwrap();
                assert!(one == other, "{codec:?} with {threads} threads");
            }
        }
    }

    #[test]
    fn zlib_blocks_make_one_gzip_member_that_flate2_reads_with_its_crc_checked() {
        let input = sample(500_000);
        let gz = compress_in_memory(Codec::Zlib(6), &input, BLOCK, 2).unwrap();
        let mut back = Vec::new();
        // GzDecoder reads one member only: all of it must be in that one.
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == input);
        let mut corrupt = gz.clone();
        let n = corrupt.len();
        corrupt[n - 8] ^= 1;
        assert!(
            flate2::read::GzDecoder::new(corrupt.as_slice())
                .read_to_end(&mut Vec::new())
                .is_err()
        );
    }

    #[test]
    fn every_codec_round_trips_through_the_standard_decoders() {
        let input = sample(600_000);
        for codec in all_codecs() {
            let bytes = compress_in_memory(codec, &input, BLOCK, 2).unwrap();
            let mut back = Vec::new();
            if codec.is_gzip() {
                flate2::read::MultiGzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut back)
                    .unwrap();
            } else {
                zstd::stream::read::Decoder::new(bytes.as_slice())
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
            }
            assert!(back == input, "{codec:?}");
        }
    }

    #[test]
    fn the_system_gzip_and_zstd_accept_the_streams() {
        let tmp = tempfile::tempdir().unwrap();
        let input = sample(400_000);
        for codec in all_codecs() {
            let bytes = compress_in_memory(codec, &input, BLOCK, 2).unwrap();
            let (tool, ext) = if codec.is_gzip() {
                ("gzip", "gz")
            } else {
                ("zstd", "zst")
            };
            let f = tmp.path().join(format!("s.{ext}"));
            std::fs::write(&f, &bytes).unwrap();
            let Ok(t) = crate::process::command(tool)
                .arg("-t")
                .arg("-q")
                .arg(&f)
                .status()
            else {
                panic!("{tool} is not installed (scripts/install-deps.sh)");
            };
            assert!(t.success(), "{tool} -t refused {codec:?}");
            let out = crate::process::command(tool)
                .args(["-d", "-c"])
                .arg(&f)
                .output()
                .unwrap();
            assert!(out.stdout == input, "{tool} -d of {codec:?}");
        }
    }

    #[test]
    fn the_zlib_blocks_are_the_layer_writers_bytes() {
        // The layer writer (src/layer.rs) makes today's layers; this module
        // must give the same bytes, or every digest would change on wiring.
        let input = sample(900_000);
        let opts = crate::layer::LayerOptions {
            threads: 2,
            block_size: BLOCK,
            ..crate::layer::LayerOptions::default()
        };
        let (_, layer) =
            crate::layer::compress_tar_stream("sample", input.as_slice(), &opts, Vec::new(), None)
                .unwrap();
        let ours = compress_in_memory(Codec::Zlib(6), &input, BLOCK, 3).unwrap();
        assert!(ours == layer);
    }

    #[test]
    fn an_empty_stream_is_a_valid_empty_member_or_frame() {
        for codec in all_codecs() {
            let bytes = compress_in_memory(codec, &[], BLOCK, 2).unwrap();
            let mut back = Vec::new();
            if codec.is_gzip() {
                flate2::read::MultiGzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut back)
                    .unwrap();
            } else {
                zstd::stream::read::Decoder::new(bytes.as_slice())
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
            }
            assert!(back.is_empty(), "{codec:?}");
        }
    }

    #[test]
    fn crc32_combine_agrees_with_hashing_the_concatenation() {
        let input = sample(300_000);
        for split in [0, 1, 4096, 123_457, 300_000] {
            let (a, b) = input.split_at(split);
            assert_eq!(
                crc32_combine(crc32(a), crc32(b), b.len() as u64),
                crc32(&input),
                "split at {split}"
            );
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_not_searched() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&noise));
        let text =
            b"defmodule Guildhall.Greeting do\n  def hello, do: :world\nend\n".repeat(20_000);
        assert!(!looks_incompressible(&text));
        for codec in all_codecs() {
            let bytes = compress_in_memory(codec, &noise, 1 << 20, 1).unwrap();
            // Stored: at most a few dozen bytes of framing over the input.
            assert!(
                bytes.len() < noise.len() + 256,
                "{codec:?}: {}",
                bytes.len()
            );
        }
    }

    #[test]
    fn levels_outside_a_codecs_range_and_tiny_blocks_are_refused() {
        for bad in [
            Codec::Zlib(0),
            Codec::Zlib(10),
            Codec::Libdeflate(13),
            Codec::Zstd(0),
            Codec::Zstd(23),
        ] {
            assert!(
                matches!(BlockCompressor::new(bad), Err(CompressError::Level { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            compress_in_memory(Codec::Zlib(6), b"x", 1000, 1),
            Err(CompressError::BlockSize(1000))
        ));
    }

    #[test]
    fn zstd_multithreaded_frames_do_not_depend_on_the_number_of_workers() {
        // Big enough for several jobs at level 1 (job size 4 x window).
        let input = sample(12 << 20);
        let encode = |workers: u32| {
            let mut e = zstd_mt_encoder(Vec::new(), 1, workers).unwrap();
            for chunk in input.chunks(300_000) {
                e.write_all(chunk).unwrap();
            }
            e.finish().unwrap()
        };
        let one = encode(1);
        assert!(one == encode(2));
        assert!(one == encode(4));
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(one.as_slice())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == input);
    }
}
