//! Reading manifests and indexes: the few fields the tool needs, from OCI or
//! Docker schema 2 JSON, with errors that say what is wrong.

use serde_json::Value;

use crate::image::{Digest, Platform, media};

/// A blob reference in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlobRef {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// An image manifest's config and layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The manifest's media type.
    pub media_type: String,
    /// The config blob.
    pub config: BlobRef,
    /// Layers, base first.
    pub layers: Vec<BlobRef>,
}

/// An index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest.
    pub blob: BlobRef,
    /// Its platform, when declared.
    pub platform: Option<Platform>,
}

/// Why a manifest or index cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a valid manifest: {reason}")]
pub struct ManifestError {
    /// Which document (a digest or URL).
    pub what: String,
    /// Why.
    pub reason: String,
}

fn blob_ref(v: &Value, default_mt: &str) -> Option<BlobRef> {
    Some(BlobRef {
        media_type: v
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(default_mt)
            .to_owned(),
        digest: v.get("digest")?.as_str()?.parse().ok()?,
        size: v.get("size")?.as_u64()?,
    })
}

/// The media type a manifest or index declares (or implies by its shape).
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
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

/// Parse an image manifest (OCI or Docker schema 2).
pub fn parse_manifest(what: &str, bytes: &[u8]) -> Result<ManifestInfo, ManifestError> {
    let err = |reason: &str| ManifestError {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err(&format!("not JSON ({e})")))?;
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(err("schemaVersion is not 2"));
    }
    let media_type = sniff_media_type(bytes).unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
    if media::is_index(&media_type) {
        return Err(err("it is an index, not an image manifest"));
    }
    let config = v
        .get("config")
        .and_then(|c| blob_ref(c, media::OCI_CONFIG))
        .ok_or_else(|| err("no valid config descriptor"))?;
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| err("no layers array"))?
        .iter()
        .map(|l| {
            blob_ref(l, media::OCI_LAYER_GZIP).ok_or_else(|| err("a layer descriptor is invalid"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ManifestInfo {
        media_type,
        config,
        layers,
    })
}

/// Parse an index (OCI index or Docker manifest list).
pub fn parse_index(what: &str, bytes: &[u8]) -> Result<Vec<IndexEntry>, ManifestError> {
    let err = |reason: &str| ManifestError {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err(&format!("not JSON ({e})")))?;
    let list = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| err("no manifests array"))?;
    list.iter()
        .map(|m| {
            let blob =
                blob_ref(m, media::OCI_MANIFEST).ok_or_else(|| err("an entry is invalid"))?;
            let platform = m.get("platform").and_then(|p| {
                Some(Platform {
                    os: p.get("os")?.as_str()?.to_owned(),
                    architecture: p.get("architecture")?.as_str()?.to_owned(),
                    variant: p.get("variant").and_then(Value::as_str).map(str::to_owned),
                })
            });
            Ok(IndexEntry { blob, platform })
        })
        .collect()
}

/// The entry for `want` in an index, or the platforms there are.
pub fn select_platform<'a>(
    entries: &'a [IndexEntry],
    want: &Platform,
) -> Result<&'a IndexEntry, Vec<String>> {
    entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(|p| p.satisfies(want)))
        .ok_or_else(|| {
            entries
                .iter()
                .filter_map(|e| e.platform.as_ref().map(ToString::to_string))
                .filter(|p| p != "unknown/unknown")
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifests_and_lists_are_read() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":7}},"layers":[{{"mediaType":"{}","digest":"{d}","size":9}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        );
        let info = parse_manifest("m", m.as_bytes()).unwrap();
        assert_eq!(info.layers.len(), 1);
        assert_eq!(info.config.size, 7);
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let entries = parse_index("i", idx.as_bytes()).unwrap();
        assert!(select_platform(&entries, &"linux/arm64".parse().unwrap()).is_ok());
        let avail = select_platform(&entries, &Platform::linux("amd64")).unwrap_err();
        assert_eq!(avail, vec!["linux/arm64/v8"]);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = parse_manifest("sha256:x", b"<html>").unwrap_err();
        assert!(e.to_string().contains("not JSON"));
    }
}
