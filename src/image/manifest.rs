//! The typed documents every place an image can live speaks: descriptors,
//! image manifests and indexes (OCI, and Docker schema 2 read as the same
//! shapes), parsed once with errors that say what is wrong, and the raw
//! bytes kept beside the value so a digest never changes by re-serialising.
//!
//! Own types rather than oci-spec's: oci-spec keeps annotations in
//! `HashMap`s (its JSON changes order from run to run, and so its digest),
//! drops fields it does not know, and refuses Docker media types in places
//! registries still send them. Unknown fields here survive in `extra`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::{Digest, Platform, media};

/// A pointer to a blob: what it is, its digest and size, and for index
/// entries the platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type (filled with the spec's default when a document omits it).
    #[serde(default)]
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this tool does not model (`urls`, `artifactType`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// A descriptor of `media_type` for `digest`/`size`, nothing else.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The descriptor of some bytes.
    pub fn of(media_type: impl Into<String>, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
    }

    /// The `org.opencontainers.image.ref.name` annotation (a layout's tag).
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image manifest: config and layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The declared media type (OCI manifests may leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this tool does not model (`subject`, `artifactType`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An index (OCI image index, Docker manifest list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The declared media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The entries.
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this tool does not model.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why a manifest or index cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a valid manifest: {reason}")]
pub struct ManifestError {
    /// Which document (a digest, a path or a URL).
    pub what: String,
    /// Why.
    pub reason: String,
}

/// An index has no entry for the platform wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoSuchPlatform {
    /// The platforms it has (`unknown/unknown` attestation entries left out).
    pub available: Vec<String>,
}

impl NoSuchPlatform {
    /// The platforms there are, for a message: `linux/arm64, linux/arm/v7`.
    pub fn listed(&self) -> String {
        if self.available.is_empty() {
            "no declared platforms".to_owned()
        } else {
            self.available.join(", ")
        }
    }
}

/// A parsed document with the bytes it was parsed from (which its digest
/// is the digest of).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<T> {
    /// The document.
    pub value: T,
    /// Its bytes, exactly as stored or received.
    pub bytes: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
}

/// A manifest or an index, as the media type or the shape says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageDoc {
    /// A single-platform image.
    Manifest(Manifest),
    /// A multi-platform index.
    Index(Index),
}

fn parse_json(what: &str, bytes: &[u8]) -> Result<Value, ManifestError> {
    serde_json::from_slice(bytes).map_err(|e| ManifestError {
        what: what.to_owned(),
        reason: format!("not JSON ({e})"),
    })
}

/// The media type a manifest or index declares (or implies by its shape).
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    sniff(&v)
}

fn sniff(v: &Value) -> Option<String> {
    if let Some(mt) = v.get("mediaType").and_then(Value::as_str) {
        return Some(mt.to_owned());
    }
    if v.get("manifests").is_some() {
        Some(media::OCI_INDEX.to_owned())
    } else if v.get("config").is_some() {
        Some(media::OCI_MANIFEST.to_owned())
    } else {
        None
    }
}

impl Manifest {
    /// Parse an image manifest (OCI or Docker schema 2); `what` names it in errors.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let err = |reason: String| ManifestError {
            what: what.to_owned(),
            reason,
        };
        let v = parse_json(what, bytes)?;
        if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
            return Err(err("schemaVersion is not 2".into()));
        }
        if sniff(&v).is_some_and(|mt| media::is_index(&mt)) {
            return Err(err("it is an index, not an image manifest".into()));
        }
        if v.get("config").is_none_or(|c| !c.is_object()) {
            return Err(err("no valid config descriptor".into()));
        }
        if v.get("layers").is_none_or(|l| !l.is_array()) {
            return Err(err("no layers array".into()));
        }
        let mut m: Manifest = serde_json::from_value(v).map_err(|e| err(format!("{e}")))?;
        if m.config.media_type.is_empty() {
            m.config.media_type = media::OCI_CONFIG.to_owned();
        }
        for l in &mut m.layers {
            if l.media_type.is_empty() {
                l.media_type = media::OCI_LAYER_GZIP.to_owned();
            }
        }
        Ok(m)
    }

    /// The media type it declares, else the OCI manifest's.
    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(media::OCI_MANIFEST)
    }

    /// A new OCI manifest for a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_owned()),
            config,
            layers,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Canonical JSON (keys sorted, no white space): the same value always
    /// gives the same bytes, and so the same digest.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

impl Index {
    /// Parse an index (OCI image index or Docker manifest list).
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Index, ManifestError> {
        let v = parse_json(what, bytes)?;
        if v.get("manifests").is_none_or(|m| !m.is_array()) {
            return Err(ManifestError {
                what: what.to_owned(),
                reason: "no manifests array".into(),
            });
        }
        let mut idx: Index = serde_json::from_value(v).map_err(|e| ManifestError {
            what: what.to_owned(),
            reason: format!("an entry is invalid ({e})"),
        })?;
        for m in &mut idx.manifests {
            if m.media_type.is_empty() {
                m.media_type = media::OCI_MANIFEST.to_owned();
            }
        }
        Ok(idx)
    }

    /// The media type it declares, else the OCI index's.
    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(media::OCI_INDEX)
    }

    /// The entry for `want` (variants count only when both name one).
    pub fn select(&self, want: &Platform) -> Result<&Descriptor, NoSuchPlatform> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)))
            .ok_or_else(|| NoSuchPlatform {
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .filter(|p| p != "unknown/unknown")
                    .collect(),
            })
    }

    /// Canonical JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

impl ImageDoc {
    /// Parse a manifest or an index: `media_type` (from a header or a
    /// descriptor) decides, else the document's own.
    pub fn parse(
        what: &str,
        media_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<ImageDoc, ManifestError> {
        let mt = media_type
            .map(str::to_owned)
            .or_else(|| sniff_media_type(bytes))
            .unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
        if media::is_index(&mt) {
            Index::parse(what, bytes).map(ImageDoc::Index)
        } else if media::is_manifest(&mt) {
            Manifest::parse(what, bytes).map(ImageDoc::Manifest)
        } else {
            Err(ManifestError {
                what: what.to_owned(),
                reason: format!("`{mt}` is not a manifest or index media type"),
            })
        }
    }

    /// Every descriptor it points at: an index's manifests, or a manifest's
    /// config and layers.
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            ImageDoc::Manifest(m) => std::iter::once(&m.config).chain(&m.layers).collect(),
            ImageDoc::Index(i) => i.manifests.iter().collect(),
        }
    }
}

/// Serialise through `serde_json::Value`, whose maps are sorted: canonical
/// bytes whatever the field order of the types.
pub(crate) fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    let v = serde_json::to_value(value).expect("image documents serialise to JSON");
    serde_json::to_vec(&v).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn docker_manifests_and_lists_are_read() {
        let d = d();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":7}},"layers":[{{"mediaType":"{}","digest":"{d}","size":9}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let info = Manifest::parse("m", m.as_bytes()).unwrap();
        assert_eq!(info.layers.len(), 1);
        assert_eq!(info.config.size, 7);
        assert_eq!(info.media_type(), media::DOCKER_MANIFEST);
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let idx = Index::parse("i", idx.as_bytes()).unwrap();
        assert!(idx.select(&"linux/arm64".parse().unwrap()).is_ok());
        let none = idx.select(&Platform::linux("amd64")).unwrap_err();
        assert_eq!(none.available, vec!["linux/arm64/v8"]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = Manifest::parse("sha256:x", b"<html>").unwrap_err();
        assert!(e.to_string().contains("not JSON"));
        let e = Manifest::parse("m", br#"{"schemaVersion":2,"layers":[]}"#).unwrap_err();
        assert!(e.to_string().contains("config"), "{e}");
    }

    #[test]
    fn unknown_fields_survive_and_output_is_canonical() {
        let d = d();
        let text = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{d}","size":1,"mediaType":"x"}},"layers":[],"subject":{{"digest":"{d}","size":2,"mediaType":"y"}},"annotations":{{"b":"2","a":"1"}}}}"#
        );
        let m = Manifest::parse("m", text.as_bytes()).unwrap();
        assert!(m.extra.contains_key("subject"));
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert!(
            out.find("\"a\"").unwrap() < out.find("\"b\"").unwrap(),
            "{out}"
        );
        assert!(out.contains("\"subject\""));
        assert_eq!(Manifest::parse("m2", out.as_bytes()).unwrap(), m);
    }
}
