//! OCI image layout on disk (image-spec 1.1): content-addressed blobs written
//! through a temp file and renamed into place, `index.json` swapped atomically
//! under a lock, tags as `org.opencontainers.image.ref.name` annotations,
//! garbage collection and fsck. Speaks no HTTP.

use crate::error::io as io_err;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use std::collections::HashMap;

use crate::image::config::descriptor_json;
use crate::image::manifest::{BlobRef, parse_manifest};
use crate::image::{Digest, DigestWriter, media};

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
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
            | LayoutError::BadJson { .. } => crate::error::ExitCode::Input,
        }
    }
}

type Result<T> = std::result::Result<T, LayoutError>;

/// One tagged image in a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedImage {
    /// The tag (`None` for an untagged entry).
    pub tag: Option<String>,
    /// Manifest (or index) media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// What garbage collection removed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub removed: Vec<Digest>,
    /// Bytes freed.
    pub bytes: u64,
}

/// What fsck found wrong (empty when all is well).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Blobs checked.
    pub blobs_checked: usize,
    /// Problems, one sentence each.
    pub problems: Vec<String>,
}

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
        layout.write_atomic(
            OCI_LAYOUT_FILE,
            &serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"})).expect("json"),
        )?;
        layout.write_index(&empty_index())?;
        Ok(layout)
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

    /// Remove one blob (a corrupt cache entry); absent is fine.
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &p)(e).into()),
        }
    }

    /// The parsed `index.json`.
    pub fn read_index(&self) -> Result<Value> {
        let p = self.root.join(INDEX_FILE);
        let text = fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::NotALayout {
                    path: self.root.clone(),
                    reason: "no index.json".into(),
                }
            } else {
                io_err("reading", &p)(e).into()
            }
        })?;
        let v: Value = serde_json::from_slice(&text).map_err(|e| LayoutError::BadJson {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if !v.get("manifests").is_some_and(Value::is_array) {
            return Err(LayoutError::BadJson {
                path: p,
                reason: "no `manifests` array".into(),
            });
        }
        Ok(v)
    }

    /// Every entry of `index.json`.
    pub fn images(&self) -> Result<Vec<TaggedImage>> {
        let index = self.read_index()?;
        let p = self.root.join(INDEX_FILE);
        let mut out = Vec::new();
        for m in index["manifests"]
            .as_array()
            .expect("checked in read_index")
        {
            let digest = m
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| LayoutError::BadJson {
                    path: p.clone(),
                    reason: "a manifest entry has no valid sha256 digest".into(),
                })?;
            out.push(TaggedImage {
                tag: m
                    .pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                media_type: m
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .unwrap_or(media::OCI_MANIFEST)
                    .to_owned(),
                digest,
                size: m.get("size").and_then(Value::as_u64).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The image under `tag`, or the only image when `tag` is `None`.
    pub fn resolve(&self, tag: Option<&str>) -> Result<TaggedImage> {
        let images = self.images()?;
        match tag {
            Some(t) => images
                .iter()
                .find(|i| i.tag.as_deref() == Some(t))
                .cloned()
                .ok_or_else(|| LayoutError::UnknownTag {
                    path: self.root.clone(),
                    tag: t.to_owned(),
                    available: list_tags(&images),
                }),
            None if images.len() == 1 => Ok(images[0].clone()),
            None if images.is_empty() => Err(LayoutError::UnknownTag {
                path: self.root.clone(),
                tag: "(any)".into(),
                available: "none".into(),
            }),
            None => Err(LayoutError::Ambiguous {
                path: self.root.clone(),
                count: images.len(),
            }),
        }
    }

    /// Point each tag at the manifest `digest` (adding it, or moving it from
    /// another image), under the layout lock, swapping `index.json`
    /// atomically. The manifest blob must already be stored.
    ///
    /// Every blob the image references (config, layers, the manifests of an
    /// index) must be present: a tag never points at an incomplete image.
    pub fn set_tags(&self, media_type: &str, digest: &Digest, tags: &[String]) -> Result<()> {
        let size = self.blob_size(digest)?;
        let _lock = self.lock()?;
        if let Some(missing) = self.first_missing_blob(media_type, digest)? {
            return Err(LayoutError::MissingBlob {
                path: self.root.clone(),
                digest: missing,
            });
        }
        let mut index = self.read_index()?;
        let manifests = index["manifests"]
            .as_array_mut()
            .expect("checked in read_index");
        let wanted: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
        manifests.retain(|m| {
            let tag = m
                .pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(Value::as_str);
            match tag {
                Some(t) => !wanted.contains(t),
                // An untagged entry for the same manifest is replaced by the tagged ones.
                None => m.get("digest").and_then(Value::as_str) != Some(&digest.to_string()),
            }
        });
        for t in tags {
            let ann: BTreeMap<String, String> = [(REF_NAME.to_owned(), t.clone())].into();
            manifests.push(descriptor_json(media_type, digest, size, &ann));
        }
        self.write_index(&index)
    }

    /// Remove tags (the blobs stay until [`Layout::gc`]).
    pub fn remove_tags(&self, tags: &[String]) -> Result<usize> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let manifests = index["manifests"].as_array_mut().expect("checked");
        let before = manifests.len();
        manifests.retain(|m| {
            let tag = m
                .pointer("/annotations/org.opencontainers.image.ref.name")
                .and_then(Value::as_str);
            !tag.is_some_and(|t| tags.iter().any(|x| x == t))
        });
        let removed = before - manifests.len();
        self.write_index(&index)?;
        Ok(removed)
    }

    /// Every blob reachable from `index.json` (manifests, indexes, configs, layers).
    pub fn reachable(&self) -> Result<BTreeSet<Digest>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Digest)> = self
            .images()?
            .into_iter()
            .map(|i| (i.media_type, i.digest))
            .collect();
        while let Some((mt, d)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if !(media::is_index(&mt) || media::is_manifest(&mt)) || !self.has_blob(&d) {
                continue;
            }
            let bytes = self.read_blob(&d)?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| LayoutError::BadJson {
                path: self.blob_path(&d),
                reason: e.to_string(),
            })?;
            for child in children(&v) {
                todo.push(child);
            }
        }
        Ok(seen)
    }

    /// Delete blobs nothing in `index.json` reaches, and stale temp files.
    ///
    /// Waits until no command is writing to the layout (see [`Layout::work`]):
    /// blobs of an image being built are referenced by nothing yet.
    pub fn gc(&self) -> Result<GcReport> {
        let _writers = self.flock(WRITERS_LOCK, libc::LOCK_EX)?;
        let _lock = self.lock()?;
        let keep = self.reachable()?;
        let mut report = GcReport::default();
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let name = entry.file_name();
            let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
                continue;
            };
            if keep.contains(&d) {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path()).map_err(io_err("removing", &entry.path()))?;
            report.bytes += len;
            report.removed.push(d);
        }
        remove_tree(&self.root.join(TMP_DIR));
        report.removed.sort();
        Ok(report)
    }

    /// Check the layout: every reachable blob present, with the size its
    /// descriptor claims and (when `verify_digests`) the digest.
    pub fn fsck(&self, verify_digests: bool) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut todo: Vec<(String, Digest, u64)> = self
            .images()?
            .into_iter()
            .map(|i| (i.media_type, i.digest, i.size))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some((mt, d, size)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            report.blobs_checked += 1;
            let p = self.blob_path(&d);
            let Ok(meta) = fs::metadata(&p) else {
                report.problems.push(format!("blob {d} is missing"));
                continue;
            };
            if meta.len() != size {
                report.problems.push(format!(
                    "blob {d} is {} bytes, its descriptor says {size}",
                    meta.len()
                ));
            }
            if verify_digests || media::is_index(&mt) || media::is_manifest(&mt) {
                let actual = hash_file(&p).map_err(io_err("reading", &p))?;
                if actual != d {
                    report.problems.push(format!("blob {d} hashes to {actual}"));
                    continue;
                }
            }
            if media::is_index(&mt) || media::is_manifest(&mt) {
                let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => todo.extend(children_sized(&v)),
                    Err(e) => report
                        .problems
                        .push(format!("manifest {d} is not JSON: {e}")),
                }
            }
        }
        Ok(report)
    }

    /// Gzip layers this layout already holds, by diff ID: read from the
    /// configs of its images (`rootfs.diff_ids[i]` belongs to `layers[i]`).
    /// Derived state, so there is no cache to go stale; unreadable images
    /// are passed over.
    pub fn known_layers(&self) -> HashMap<Digest, BlobRef> {
        let mut out = HashMap::new();
        let Ok(images) = self.images() else {
            return out;
        };
        for img in images {
            if !media::is_manifest(&img.media_type) {
                continue;
            }
            let Ok(bytes) = self.read_blob(&img.digest) else {
                continue;
            };
            let Ok(m) = parse_manifest(&img.digest.to_string(), &bytes) else {
                continue;
            };
            let Ok(cfg) = self.read_blob(&m.config.digest) else {
                continue;
            };
            let Ok(cfg) = serde_json::from_slice::<Value>(&cfg) else {
                continue;
            };
            let Some(ids) = cfg.pointer("/rootfs/diff_ids").and_then(Value::as_array) else {
                continue;
            };
            for (id, l) in ids.iter().zip(&m.layers) {
                let Some(id) = id.as_str().and_then(|s| s.parse::<Digest>().ok()) else {
                    continue;
                };
                if media::is_gzip_layer(&l.media_type)
                    && self.blob_size(&l.digest).ok() == Some(l.size)
                {
                    out.insert(id, l.clone());
                }
            }
        }
        out
    }

    fn lock(&self) -> Result<LockGuard> {
        self.flock(LOCK_FILE, libc::LOCK_EX)
    }

    fn flock(&self, name: &str, how: libc::c_int) -> Result<LockGuard> {
        let p = self.root.join(name);
        flock_path(&p, how)?
            .ok_or_else(|| io_err("locking", &p)(io::Error::from(io::ErrorKind::WouldBlock)).into())
    }

    /// The first blob reachable from `digest` that is not stored.
    fn first_missing_blob(&self, media_type: &str, digest: &Digest) -> Result<Option<Digest>> {
        let mut todo = vec![(media_type.to_owned(), digest.clone())];
        let mut seen = BTreeSet::new();
        while let Some((mt, d)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if !self.has_blob(&d) {
                return Ok(Some(d));
            }
            if media::is_index(&mt) || media::is_manifest(&mt) {
                let bytes = self.read_blob(&d)?;
                let v: Value =
                    serde_json::from_slice(&bytes).map_err(|e| LayoutError::BadJson {
                        path: self.blob_path(&d),
                        reason: e.to_string(),
                    })?;
                todo.extend(children(&v));
            }
        }
        Ok(None)
    }

    /// Start writing to the layout: a shared hold that keeps `gc` out until
    /// it is dropped, and a scratch directory of this command's own under
    /// `.guildhall-tmp/` (removed on drop). Scratch left behind by commands
    /// that died (`kill -9`, a crash) is removed first: each scratch
    /// directory is flock-ed by its owner, so a lock that can be taken
    /// belongs to no live process.
    pub fn work(&self) -> Result<Work> {
        let writers = self.flock(WRITERS_LOCK, libc::LOCK_SH)?;
        let tmp = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        self.sweep_dead_scratch(&tmp);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("work-{}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let lock = match flock_path(&dir.join(".lock"), libc::LOCK_EX | libc::LOCK_NB)? {
            Some(l) => l,
            None => {
                return Err(
                    io_err("locking", &dir)(io::Error::from(io::ErrorKind::WouldBlock)).into(),
                );
            }
        };
        Ok(Work {
            dir,
            _lock: lock,
            _writers: writers,
        })
    }

    /// Whether another command is writing to the layout right now (so `gc`
    /// would wait for it).
    pub fn is_being_written(&self) -> bool {
        matches!(
            flock_path(&self.root.join(WRITERS_LOCK), libc::LOCK_EX | libc::LOCK_NB),
            Ok(None)
        )
    }

    /// Remove the scratch directories and blob temp files of dead commands.
    fn sweep_dead_scratch(&self, tmp: &Path) {
        let Ok(entries) = fs::read_dir(tmp) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let dead = if name.starts_with("work-") {
                // Taking the owner's lock proves the owner is gone.
                matches!(
                    flock_path(&path.join(".lock"), libc::LOCK_EX | libc::LOCK_NB),
                    Ok(Some(_))
                ) || !path.join(".lock").exists()
            } else if let Some(pid) = name
                .strip_prefix("blob-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            } else {
                // Scratch of older versions (release-*, buildkit-*), by age.
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600))
            };
            if dead {
                tracing::debug!(path = %path.display(), "removing scratch of a command that is gone");
                remove_tree(&path);
            }
        }
    }

    fn write_index(&self, index: &Value) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(index).expect("json");
        self.write_atomic(INDEX_FILE, &bytes)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dst = self.root.join(name);
        let tmp = self
            .root
            .join(format!(".{name}.tmp-{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        f.write_all(bytes).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &dst).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("replacing", &dst)(e).into()
        })
    }
}

struct LockGuard {
    _file: File,
}

/// A command writing to a layout (see [`Layout::work`]).
pub struct Work {
    dir: PathBuf,
    _lock: LockGuard,
    _writers: LockGuard,
}

impl Work {
    /// This command's scratch directory (inside the layout, so files can be
    /// renamed into `blobs/` and extracted trees stay on the same disk).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// `flock` a file (created if need be); `Ok(None)` when `LOCK_NB` was asked
/// and someone else holds it.
fn flock_path(p: &Path, how: libc::c_int) -> Result<Option<LockGuard>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .map_err(io_err("opening", p))?;
    // SAFETY: flock on a valid open descriptor; released when `f` closes.
    let rc = unsafe { libc::flock(f.as_raw_fd(), how) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(io_err("locking", p)(e).into());
    }
    Ok(Some(LockGuard { _file: f }))
}

/// Remove a directory tree, making read-only directories writable first
/// (an extracted release may have some); failures are only logged.
fn remove_tree(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn unlock(p: &Path) {
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(it) = fs::read_dir(p) {
                    for e in it.flatten() {
                        unlock(&e.path());
                    }
                }
            }
        }
    }
    unlock(path);
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!("could not remove scratch {}: {e}", path.display());
    }
}

/// A blob being written: hashing as it goes, committed under its digest.
pub struct BlobWriter {
    inner: Option<DigestWriter<BufWriter<File>>>,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.inner.as_ref().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flush, check the digest against `expected` (if given), fsync and
    /// rename into `blobs/sha256/`. On mismatch the temp file is removed.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let w = self.inner.take().expect("commit once");
        let (buf, digest, len) = w.finish();
        let file = buf
            .into_inner()
            .map_err(|e| io_err("writing", &self.tmp)(e.into_error()))?;
        if let Some(exp) = expected {
            if exp != &digest {
                let _ = fs::remove_file(&self.tmp);
                return Err(LayoutError::DigestMismatch {
                    what: self.tmp.display().to_string(),
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        file.sync_all().map_err(io_err("syncing", &self.tmp))?;
        drop(file);
        let dst = self.blobs.join(digest.hex());
        fs::rename(&self.tmp, &dst).map_err(io_err("storing", &dst))?;
        Ok((digest, len))
    }

    /// The temp file (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn empty_index() -> Value {
    json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": []})
}

fn list_tags(images: &[TaggedImage]) -> String {
    let tags: Vec<&str> = images.iter().filter_map(|i| i.tag.as_deref()).collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

fn children(v: &Value) -> Vec<(String, Digest)> {
    children_sized(v)
        .into_iter()
        .map(|(m, d, _)| (m, d))
        .collect()
}

fn children_sized(v: &Value) -> Vec<(String, Digest, u64)> {
    let mut out = Vec::new();
    let mut push = |d: &Value, default_mt: &str| {
        if let Some(dg) = d
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            let mt = d
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(default_mt)
                .to_owned();
            out.push((mt, dg, d.get("size").and_then(Value::as_u64).unwrap_or(0)));
        }
    };
    if let Some(c) = v.get("config") {
        push(c, media::OCI_CONFIG);
    }
    for l in v
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push(l, media::OCI_LAYER_GZIP);
    }
    for m in v
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push(m, media::OCI_MANIFEST);
    }
    out
}

/// sha256 of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = crate::image::Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_in(l: &Layout, layer: &[u8]) -> Digest {
        let (ld, ls) = l.write_blob(layer).unwrap();
        let (cd, cs) = l.write_blob(b"{}").unwrap();
        let m = crate::image::config::build_manifest(
            (&cd, cs),
            &[(media::OCI_LAYER_GZIP.into(), ld, ls)],
            &BTreeMap::new(),
        );
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
