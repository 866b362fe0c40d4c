//! OCI image layout on disk (image-spec 1.1): content-addressed blobs written
//! through a temp file and renamed into place, `index.json` swapped atomically
//! under a lock, tags as `org.opencontainers.image.ref.name` annotations,
//! garbage collection and fsck, and the lock that keeps `gc` away from a
//! running build. Speaks the model in `image/`; no HTTP.

mod blob;
mod gc;
mod index;
mod work;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::error::io as io_err;
use crate::image::{Digest, DigestWriter};
use index::empty_index;

pub use blob::{BlobWriter, FinishedBlob, hash_file};
pub use gc::{FsckReport, GcReport};
pub use index::TaggedImage;
pub use work::Work;

/// The annotation that names a tag in `index.json`.
pub use crate::image::manifest::REF_NAME;

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
const TMP_DIR: &str = ".guildhall-tmp";
const LOCK_FILE: &str = ".guildhall-lock";
/// Held shared by every command writing blobs of an image not yet tagged
/// (a build, a base pull), exclusively by `gc`: so `gc` never deletes what a
/// running build is about to tag.
const WRITERS_LOCK: &str = ".guildhall-writers";

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// The directory is not an OCI layout.
    #[error("{path} is not an OCI image layout: {reason}")]
    NotALayout {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No image under that tag.
    #[error("no image tagged `{tag}` in {path} (tags there: {available})")]
    UnknownTag {
        /// The layout.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags it has, comma-separated.
        available: String,
    },
    /// The layout holds several images and no tag was given.
    #[error("{path} holds {count} images; name one with oci:{path}:TAG")]
    Ambiguous {
        /// The layout.
        path: PathBuf,
        /// How many images.
        count: usize,
    },
    /// A blob's bytes do not hash to the digest they were stored or fetched under.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What blob (a URL or path).
        what: String,
        /// The digest expected.
        expected: Digest,
        /// The digest of the bytes.
        actual: Digest,
    },
    /// A blob the layout needs is missing.
    #[error("blob {digest} is missing from {path}")]
    MissingBlob {
        /// The layout.
        path: PathBuf,
        /// The blob.
        digest: Digest,
    },
    /// A layer whose media type says neither tar, gzip nor zstd.
    #[error("layer {digest} has media type {media_type}, which is not a tar, gzip or zstd layer")]
    UnknownLayer {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A JSON document in the layout does not parse.
    #[error("{path} is not valid JSON: {reason}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
}

impl LayoutError {
    /// The exit code this error ends the process with: I/O is a failure,
    /// anything else a bad layout (input).
    pub fn exit_code(&self) -> crate::error::ExitCode {
        match self {
            LayoutError::Io(_) => crate::error::ExitCode::Failure,
            LayoutError::NotALayout { .. }
            | LayoutError::UnknownTag { .. }
            | LayoutError::Ambiguous { .. }
            | LayoutError::DigestMismatch { .. }
            | LayoutError::MissingBlob { .. }
            | LayoutError::UnknownLayer { .. }
            | LayoutError::BadJson { .. } => crate::error::ExitCode::Input,
        }
    }
}

type Result<T> = std::result::Result<T, LayoutError>;

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Layout {
    /// Open an existing layout; it must have `oci-layout` and `index.json`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Layout> {
        let root = dir.as_ref().to_owned();
        let marker = root.join(OCI_LAYOUT_FILE);
        let text = fs::read_to_string(&marker).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::NotALayout {
                    path: root.clone(),
                    reason: "no oci-layout file".into(),
                }
            } else {
                LayoutError::Io(crate::error::IoError {
                    action: "reading",
                    path: marker.clone(),
                    source: e,
                })
            }
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| LayoutError::BadJson {
            path: marker.clone(),
            reason: e.to_string(),
        })?;
        if v.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
            return Err(LayoutError::NotALayout {
                path: root,
                reason: "oci-layout does not declare imageLayoutVersion 1.0.0".into(),
            });
        }
        let layout = Layout { root };
        layout.read_index()?;
        Ok(layout)
    }

    /// Open a layout, creating an empty one when the directory does not exist
    /// or is empty.
    pub fn create_or_open(dir: impl AsRef<Path>) -> Result<Layout> {
        let root = dir.as_ref().to_owned();
        if root.exists() && !root.is_dir() {
            return Err(LayoutError::NotALayout {
                path: root,
                reason: "it is not a directory".into(),
            });
        }
        let empty = match fs::read_dir(&root) {
            Ok(mut it) => it.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err("reading", &root)(e).into()),
        };
        if !empty {
            return Layout::open(&root);
        }
        fs::create_dir_all(root.join("blobs/sha256")).map_err(io_err("creating", &root))?;
        let layout = Layout { root };
        // Not fsynced here: the first fsync after a job wrote its release
        // waits for the disk (tens of ms), and an empty layout holds nothing
        // to lose. They are flushed on a thread of their own, and every
        // later index.json is written with an fsync.
        layout.write_atomic_with(
            OCI_LAYOUT_FILE,
            &serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"})).expect("json"),
            false,
        )?;
        layout.write_atomic_with(INDEX_FILE, &index::index_bytes(&empty_index()), false)?;
        layout.flush_in_background();
        Ok(layout)
    }

    /// fsync the layout's `oci-layout`, `index.json` and directory on a
    /// thread of its own, not waited for. The first fsync of a process
    /// commits the file system's journal, which first writes out what was
    /// written just before (the release tarball a CI job has just made,
    /// tens of ms on a small runner's disk); started as a build starts,
    /// that wait overlaps with reading the release instead of holding up
    /// the first blob stored.
    pub fn flush_in_background(&self) {
        let root = self.root.clone();
        std::thread::spawn(move || {
            for p in [root.join(OCI_LAYOUT_FILE), root.join(INDEX_FILE), root] {
                let _ = File::open(&p).and_then(|f| f.sync_all());
            }
        });
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LayoutError::MissingBlob {
                path: self.root.clone(),
                digest: digest.clone(),
            }),
            Err(e) => Err(io_err("reading", &p)(e).into()),
        }
    }

    /// Open a blob for streaming.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::MissingBlob {
                    path: self.root.clone(),
                    digest: digest.clone(),
                }
            } else {
                io_err("opening", &p)(e).into()
            }
        })
    }

    /// The blobs of these layers opened for streaming, each with its
    /// packing (tar, gzip, zstd), in order: what the readers of a base's
    /// file tree take. A layer of another media type is an error.
    pub fn layer_readers<'d>(
        &self,
        layers: impl IntoIterator<Item = &'d crate::image::Descriptor>,
    ) -> Result<Vec<(io::BufReader<File>, crate::compress::Packing)>> {
        layers
            .into_iter()
            .map(|l| {
                let packing =
                    crate::compress::Packing::of_media_type(&l.media_type).ok_or_else(|| {
                        LayoutError::UnknownLayer {
                            digest: l.digest.clone(),
                            media_type: l.media_type.clone(),
                        }
                    })?;
                Ok((io::BufReader::new(self.open_blob(&l.digest)?), packing))
            })
            .collect()
    }

    /// Read a small blob (a manifest or config) whole, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &p))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(LayoutError::DigestMismatch {
                what: p.display().to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Start writing a blob of unknown digest; bytes go to a temp file in
    /// the layout and are renamed into place by [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(io_err("creating", &tmp_dir))?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("blob-{}-{n}", std::process::id()));
        let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            inner: Some(DigestWriter::new(BufWriter::with_capacity(
                256 * 1024,
                file,
            ))),
            tmp,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    /// Store bytes as a blob; returns its digest and size.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            return Ok((digest, bytes.len() as u64));
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(io_err("writing", &w.tmp.clone()))?;
        w.commit(Some(&digest))
    }

    /// Copy a blob from another layout, verifying its digest on the way.
    ///
    /// Never a hard link: the other layout (the base cache, an `oci:` base)
    /// is another trust domain, and a shared inode would let a later change
    /// there alter this layout's blob unseen. A blob whose bytes do not hash
    /// to its name is refused ([`LayoutError::DigestMismatch`] naming the
    /// source file) and nothing is stored.
    pub fn copy_blob_from(&self, other: &Layout, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let src = other.blob_path(digest);
        let mut r = other.open_blob(digest)?;
        let mut w = self.blob_writer()?;
        let tmp = w.tmp_path().to_owned();
        io::copy(&mut r, &mut w).map_err(io_err("copying a blob into", &tmp))?;
        w.commit(Some(digest)).map_err(|e| match e {
            LayoutError::DigestMismatch {
                expected, actual, ..
            } => LayoutError::DigestMismatch {
                what: src.display().to_string(),
                expected,
                actual,
            },
            e => e,
        })?;
        Ok(())
    }

    /// Copy a blob from another layout without hashing it, for a source
    /// the caller has verified before and knows unchanged since (same inode,
    /// size, mtime and ctime). A kernel-side copy (`copy_file_range`),
    /// fsynced before it is renamed into place like every other blob.
    pub fn copy_verified_blob_from(&self, other: &Layout, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let src = other.blob_path(digest);
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(io_err("creating", &tmp_dir))?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("blob-{}-{n}", std::process::id()));
        let synced = fs::copy(&src, &tmp)
            .map_err(io_err("copying", &src))
            .and_then(|_| {
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("syncing", &tmp))
            });
        if let Err(e) = synced {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let dst = self.blob_path(digest);
        fs::rename(&tmp, &dst).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("storing", &dst)(e).into()
        })
    }

    /// Remove one blob (a corrupt cache entry); absent is fine.
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &p)(e).into()),
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic_with(name, bytes, true)
    }

    fn write_atomic_with(&self, name: &str, bytes: &[u8], sync: bool) -> Result<()> {
        let dst = self.root.join(name);
        let tmp = self
            .root
            .join(format!(".{name}.tmp-{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(bytes).map_err(io_err("writing", &tmp))?;
        if sync {
            f.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        drop(f);
        fs::rename(&tmp, &dst).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("replacing", &dst)(e).into()
        })
    }
}

impl crate::image::source::BlobSource for Layout {
    fn name(&self) -> String {
        format!("the layout {}", self.root.display())
    }

    fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        Layout::read_blob(self, digest).map_err(io::Error::other)
    }

    fn blob_file(&self, digest: &Digest) -> io::Result<(PathBuf, u64)> {
        let size = self.blob_size(digest).map_err(io::Error::other)?;
        Ok((self.blob_path(digest), size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media;
    use std::io::Write;

    fn manifest_in(l: &Layout, layer: &[u8]) -> Digest {
        let (ld, ls) = l.write_blob(layer).unwrap();
        let (cd, cs) = l.write_blob(b"{}").unwrap();
        let m = crate::image::mutate::manifest(
            crate::image::Descriptor::new(media::OCI_CONFIG, cd, cs),
            &[crate::image::Descriptor::new(media::OCI_LAYER_GZIP, ld, ls)],
        )
        .to_bytes();
        l.write_blob(&m).unwrap().0
    }

    #[test]
    fn tags_move_between_images_and_gc_frees_what_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create_or_open(dir.path().join("img")).unwrap();
        let a = manifest_in(&l, b"layer-a");
        let b = manifest_in(&l, b"layer-b");
        l.set_tags(media::OCI_MANIFEST, &a, &["v1".into(), "latest".into()])
            .unwrap();
        l.set_tags(media::OCI_MANIFEST, &b, &["latest".into()])
            .unwrap();
        assert_eq!(l.resolve(Some("v1")).unwrap().digest, a);
        assert_eq!(l.resolve(Some("latest")).unwrap().digest, b);
        assert!(matches!(
            l.resolve(None),
            Err(LayoutError::Ambiguous { .. })
        ));
        assert!(l.gc().unwrap().removed.is_empty());
        l.remove_tags(&["v1".into()]).unwrap();
        let report = l.gc().unwrap();
        assert!(report.removed.contains(&a));
        assert!(report.removed.contains(&Digest::of(b"layer-a")));
        assert!(
            !report.removed.contains(&Digest::of(b"{}")),
            "shared config stays"
        );
        assert!(
            Layout::open(l.root())
                .unwrap()
                .fsck(true)
                .unwrap()
                .problems
                .is_empty()
        );
    }

    #[test]
    fn a_blob_with_the_wrong_digest_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create_or_open(dir.path()).unwrap();
        let mut w = l.blob_writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(Some(&Digest::of(b"abd"))).unwrap_err();
        assert!(matches!(err, LayoutError::DigestMismatch { .. }));
        assert!(!l.has_blob(&Digest::of(b"abc")));
    }

    #[test]
    fn an_unknown_tag_names_the_tags_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create_or_open(dir.path()).unwrap();
        let a = manifest_in(&l, b"x");
        l.set_tags(media::OCI_MANIFEST, &a, &["v1".into()]).unwrap();
        let e = l.resolve(Some("v2")).unwrap_err().to_string();
        assert!(e.contains("v2") && e.contains("v1"), "{e}");
    }

    #[test]
    fn a_directory_that_is_not_a_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x"), b"").unwrap();
        assert!(matches!(
            Layout::create_or_open(dir.path()),
            Err(LayoutError::NotALayout { .. })
        ));
    }
}
