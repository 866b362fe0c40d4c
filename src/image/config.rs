//! The image config (`application/vnd.oci.image.config.v1+json`, Docker's
//! `container.image.v1`): platform, runtime settings, labels, diff IDs and
//! history, typed, with every field this tool does not model kept in
//! `extra` so a base's config survives a rebuild untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::image::manifest::canonical;
use crate::image::{Digest, Platform};

/// An image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// `amd64`, `arm64`, …
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// What the container runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    /// The layers' diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// How each layer (and empty step) was made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Everything else (`author`, `os.version`, Docker's `container_config`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The `config` object: how a container of the image runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `Env`, `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `ExposedPorts`: `4000/tcp` → `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// `Labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Everything else (`Volumes`, `StopSignal`, `Healthcheck`, …).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `rootfs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:…` of each uncompressed layer, base first (kept as text: a
    /// base may use an algorithm this tool does not).
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The step (`guildhall-image: app (the application)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why a config cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a valid image config: {reason}")]
pub struct ConfigError {
    /// Which config (a digest).
    pub what: String,
    /// Why.
    pub reason: String,
}

impl ConfigFile {
    /// Parse a config; `what` names it in errors.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<ConfigFile, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError {
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The platform it declares, when it declares one.
    pub fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty()).then(|| Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        })
    }

    /// The labels (empty when there are none).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }

    /// The diff IDs that are sha256 digests, in layer order (`None` for
    /// one that is not).
    pub fn diff_ids(&self) -> Vec<Option<Digest>> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| d.parse().ok())
            .collect()
    }

    /// The history entries that made a layer (not `empty_layer`), in
    /// order: entry `i` describes layer `i`.
    pub fn layer_history(&self) -> Vec<&History> {
        self.history
            .iter()
            .filter(|h| !h.empty_layer.unwrap_or(false))
            .collect()
    }

    /// Canonical JSON (keys sorted, no white space).
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_config_round_trips_with_the_fields_it_does_not_model() {
        let text = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Volumes":null,"Labels":{"x":"1"}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base","empty_layer":true},{"created_by":"l"}],"os.version":"10"}"#;
        let c = ConfigFile::parse("c", text).unwrap();
        assert_eq!(c.platform(), Some(Platform::linux("amd64")));
        assert_eq!(c.labels()["x"], "1");
        assert_eq!(c.layer_history().len(), 1);
        assert_eq!(c.diff_ids(), vec![None]);
        let out = c.to_bytes();
        let again = ConfigFile::parse("c", &out).unwrap();
        assert_eq!(again, c);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["config"]["Volumes"].is_null() && v["os.version"] == "10");
    }
}
