//! Content digests (`sha256:<64 hex>`), and hashing while bytes pass through.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` content digest. Only sha256 is produced or accepted:
/// it is what every registry and runtime the tool meets uses.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a sha256 digest (expected sha256:<64 lowercase hex digits>)")]
pub struct DigestParseError {
    /// What was given.
    pub input: String,
}

impl Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Sha256Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// Build from a 64-character lowercase hex string.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestParseError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(DigestParseError {
                input: hex.to_owned(),
            })
        }
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// First 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex).map_err(|_| DigestParseError {
                input: s.to_owned(),
            }),
            None => Err(DigestParseError {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The raw 32 bytes of the digest of everything fed.
    pub fn finish_bytes(self) -> [u8; 32] {
        self.inner.finalize().into()
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.inner.finalize()),
        }
    }
}

/// A `Write` adapter that hashes and counts what passes through to `inner`.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> DigestWriter<W> {
    /// Wrap a writer.
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }
    /// The digest of what was written so far (writing may go on).
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }
    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parsing_rejects_other_algorithms_and_bad_hex() {
        assert!("sha512:abc".parse::<Digest>().is_err());
        assert!("sha256:ABC".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}", "g".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok.parse::<Digest>().unwrap().to_string(), ok);
    }

    #[test]
    fn digest_writer_hashes_what_passes_through() {
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of(b"hello"));
    }
}
