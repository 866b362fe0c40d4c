//! What a layout's tags reach, and what they do not: garbage collection,
//! fsck, the gzip layers it holds by diff ID (for reuse), and the check that
//! a tag is only ever set on a complete image.

use std::collections::{BTreeSet, HashMap};
use std::fs;

use super::{Layout, LayoutError, Result, TMP_DIR, WRITERS_LOCK, io_err, work::remove_tree};
use crate::image::{ConfigFile, Descriptor, Digest, ImageDoc, Manifest, media};

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

impl Layout {
    /// The manifest or index `digest` of type `media_type`, parsed (`None`
    /// for any other kind of blob).
    fn doc(&self, media_type: &str, digest: &Digest) -> Result<Option<ImageDoc>> {
        if !(media::is_index(media_type) || media::is_manifest(media_type)) {
            return Ok(None);
        }
        let bytes = self.read_blob(digest)?;
        ImageDoc::parse(&digest.to_string(), Some(media_type), &bytes)
            .map(Some)
            .map_err(|e| LayoutError::BadJson {
                path: self.blob_path(digest),
                reason: e.reason,
            })
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
            if !seen.insert(d.clone()) || !self.has_blob(&d) {
                continue;
            }
            if let Some(doc) = self.doc(&mt, &d)? {
                todo.extend(
                    doc.children()
                        .into_iter()
                        .map(|c| (c.media_type.clone(), c.digest.clone())),
                );
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
        let mut todo: Vec<Descriptor> = self
            .images()?
            .into_iter()
            .map(|i| Descriptor::new(i.media_type, i.digest, i.size))
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(desc) = todo.pop() {
            let d = &desc.digest;
            if !seen.insert(d.clone()) {
                continue;
            }
            report.blobs_checked += 1;
            let p = self.blob_path(d);
            let Ok(meta) = fs::metadata(&p) else {
                report.problems.push(format!("blob {d} is missing"));
                continue;
            };
            if meta.len() != desc.size {
                report.problems.push(format!(
                    "blob {d} is {} bytes, its descriptor says {}",
                    meta.len(),
                    desc.size
                ));
            }
            let is_doc = media::is_index(&desc.media_type) || media::is_manifest(&desc.media_type);
            if verify_digests || is_doc {
                let actual = super::hash_file(&p).map_err(io_err("reading", &p))?;
                if &actual != d {
                    report.problems.push(format!("blob {d} hashes to {actual}"));
                    continue;
                }
            }
            if is_doc {
                let bytes = fs::read(&p).map_err(io_err("reading", &p))?;
                match ImageDoc::parse(&d.to_string(), Some(&desc.media_type), &bytes) {
                    Ok(doc) => todo.extend(doc.children().into_iter().cloned()),
                    Err(e) => report.problems.push(format!("manifest {d}: {}", e.reason)),
                }
            }
        }
        Ok(report)
    }

    /// Gzip layers this layout already holds, by diff ID: read from the
    /// configs of its images (`rootfs.diff_ids[i]` belongs to `layers[i]`).
    /// Derived state, so there is no cache to go stale; unreadable images
    /// are passed over.
    pub fn known_layers(&self) -> HashMap<Digest, Descriptor> {
        self.known_layers_of(media::OCI_LAYER_GZIP)
    }

    /// [`Layout::known_layers`] of one kind: gzip (OCI or Docker) when
    /// `media_type` is a gzip layer type, else exactly `media_type` (zstd).
    pub fn known_layers_of(&self, media_type: &str) -> HashMap<Digest, Descriptor> {
        let wanted = |t: &str| {
            if media::is_gzip_layer(media_type) {
                media::is_gzip_layer(t)
            } else {
                t == media_type
            }
        };
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
            let Ok(m) = Manifest::parse(&img.digest.to_string(), &bytes) else {
                continue;
            };
            let Some(cfg) = self
                .read_blob(&m.config.digest)
                .ok()
                .and_then(|b| ConfigFile::parse(&m.config.digest.to_string(), &b).ok())
            else {
                continue;
            };
            for (id, l) in cfg.diff_ids().into_iter().zip(&m.layers) {
                let Some(id) = id else { continue };
                if wanted(&l.media_type) && self.blob_size(&l.digest).ok() == Some(l.size) {
                    out.insert(id, l.clone());
                }
            }
        }
        out
    }

    /// The first blob reachable from `digest` that is not stored.
    pub(super) fn first_missing_blob(
        &self,
        media_type: &str,
        digest: &Digest,
    ) -> Result<Option<Digest>> {
        let mut todo = vec![(media_type.to_owned(), digest.clone())];
        let mut seen = BTreeSet::new();
        while let Some((mt, d)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if !self.has_blob(&d) {
                return Ok(Some(d));
            }
            if let Some(doc) = self.doc(&mt, &d)? {
                todo.extend(
                    doc.children()
                        .into_iter()
                        .map(|c| (c.media_type.clone(), c.digest.clone())),
                );
            }
        }
        Ok(None)
    }
}
