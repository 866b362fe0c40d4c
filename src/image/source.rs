//! What a place holding an image's blobs must offer for that image to be
//! pushed or copied: a trait of the model (as go-containerregistry's
//! `v1.Image`), implemented by the OCI layout; `image/` itself does no I/O.

use std::io;
use std::path::PathBuf;

use crate::image::Digest;

/// Blobs by digest.
pub trait BlobSource: Sync {
    /// What it is, for messages (`the layout _build/image`).
    fn name(&self) -> String;
    /// A small blob (a manifest, an index, a config), whole and verified
    /// against its digest.
    fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>>;
    /// Where a blob's bytes are, and how many there are, to stream from (and
    /// seek into, to resume an upload).
    fn blob_file(&self, digest: &Digest) -> io::Result<(PathBuf, u64)>;
}
