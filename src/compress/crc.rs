//! CRC32 over blocks: each block's CRC and length, combined in stream order
//! into the one gzip trailer of a dictionary-primed member.

use flate2::Crc;

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
