//! `index.json`: the tagged images of a layout, read into the typed
//! [`Index`], tags added and moved under the layout lock, the file swapped
//! atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;

use super::{INDEX_FILE, Layout, LayoutError, Result, io_err};
use crate::image::manifest::REF_NAME;
use crate::image::{Descriptor, Digest, Index, media};

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

impl Layout {
    /// The parsed `index.json`.
    pub fn read_index(&self) -> Result<Index> {
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
        Index::parse(&p.display().to_string(), &text).map_err(|e| LayoutError::BadJson {
            path: p,
            reason: e.reason,
        })
    }

    /// Every entry of `index.json`.
    pub fn images(&self) -> Result<Vec<TaggedImage>> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .map(|d| TaggedImage {
                tag: d.ref_name().map(str::to_owned),
                media_type: d.media_type,
                digest: d.digest,
                size: d.size,
            })
            .collect())
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
        let wanted: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
        index.manifests.retain(|m| match m.ref_name() {
            Some(t) => !wanted.contains(t),
            // An untagged entry for the same manifest is replaced by the tagged ones.
            None => &m.digest != digest,
        });
        for t in tags {
            let mut d = Descriptor::new(media_type, digest.clone(), size);
            d.annotations.insert(REF_NAME.to_owned(), t.clone());
            index.manifests.push(d);
        }
        self.write_index(&index)
    }

    /// Remove tags (the blobs stay until [`Layout::gc`]).
    #[cfg(test)]
    pub(crate) fn remove_tags(&self, tags: &[String]) -> Result<usize> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|m| !m.ref_name().is_some_and(|t| tags.iter().any(|x| x == t)));
        let removed = before - index.manifests.len();
        self.write_index(&index)?;
        Ok(removed)
    }

    pub(super) fn write_index(&self, index: &Index) -> Result<()> {
        self.write_atomic(INDEX_FILE, &index_bytes(index))
    }
}

/// `index.json`'s bytes.
pub(super) fn index_bytes(index: &Index) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::to_value(index).expect("json")).expect("json")
}

/// An index with no images.
pub(super) fn empty_index() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_owned()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    }
}

fn list_tags(images: &[TaggedImage]) -> String {
    let tags: Vec<&str> = images.iter().filter_map(|i| i.tag.as_deref()).collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}
