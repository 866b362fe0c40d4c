//! Whole buffers compressed on several threads (for tests and the compressor
//! study), and zstd's own multithreaded encoder.

use super::{
    BlockCompressor, BlockOut, Codec, CompressError, CrcCombiner, DICT_SIZE, block::failed,
    gzip_header, gzip_trailer,
};

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
