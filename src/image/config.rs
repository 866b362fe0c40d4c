//! Deriving the image config and manifest of a built image from its base's:
//! runtime settings, labels, layers (diff IDs) and history. Works on JSON
//! values so fields this tool does not know survive, and output is canonical.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::image::{Digest, Platform, media};

/// One layer appended to the base, as the config records it.
#[derive(Clone, Debug)]
pub struct AppendedLayer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// History `created_by`, e.g. `guildhall-image: ERTS and OTP applications`.
    pub created_by: String,
    /// History `comment`.
    pub comment: Option<String>,
}

/// Everything the new config sets on top of the base's.
#[derive(Clone, Debug, Default)]
pub struct ConfigSpec {
    /// RFC 3339 creation time (from `SOURCE_DATE_EPOCH`); `None` keeps it out.
    pub created: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `Cmd`; `Entrypoint` is cleared when this is set.
    pub cmd: Option<Vec<String>>,
    /// `Env` entries added or replaced, in order (`KEY`, `VALUE`).
    pub env: Vec<(String, String)>,
    /// Ports to expose, e.g. `4000/tcp`.
    pub exposed_ports: Vec<String>,
    /// Labels added or replaced.
    pub labels: BTreeMap<String, String>,
    /// Layers appended, stablest first.
    pub layers: Vec<AppendedLayer>,
}

/// Why a base config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not an object.
    #[error("the base image config is not a JSON object: {0}")]
    NotAnObject(String),
}

/// The platform a config declares.
pub fn config_platform(config: &Value) -> Option<Platform> {
    let os = config.get("os")?.as_str()?;
    let arch = config.get("architecture")?.as_str()?;
    Some(Platform {
        os: os.to_owned(),
        architecture: arch.to_owned(),
        variant: config
            .get("variant")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The config of the built image: the base's, with `spec` applied.
pub fn derive_config(base: &[u8], spec: &ConfigSpec) -> Result<Vec<u8>, ConfigError> {
    let mut root: Value =
        serde_json::from_slice(base).map_err(|e| ConfigError::NotAnObject(e.to_string()))?;
    let obj = root
        .as_object_mut()
        .ok_or_else(|| ConfigError::NotAnObject("top level is not an object".into()))?;
    // Fields Docker writes about the build container mean nothing here.
    for k in ["container", "container_config", "docker_version", "author"] {
        obj.remove(k);
    }
    match &spec.created {
        Some(c) => {
            obj.insert("created".into(), json!(c));
        }
        None => {
            obj.remove("created");
        }
    }

    let config = obj.entry("config").or_insert_with(|| json!({}));
    if !config.is_object() {
        *config = json!({});
    }
    let config = config.as_object_mut().expect("made an object above");
    if let Some(u) = &spec.user {
        config.insert("User".into(), json!(u));
    }
    if let Some(w) = &spec.working_dir {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(cmd) = &spec.cmd {
        config.insert("Cmd".into(), json!(cmd));
        config.remove("Entrypoint");
    }
    let env = merge_env(config.get("Env"), &spec.env);
    config.insert("Env".into(), json!(env));
    if !spec.exposed_ports.is_empty() {
        let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
        if !ports.is_object() {
            *ports = json!({});
        }
        let ports = ports.as_object_mut().expect("object");
        for p in &spec.exposed_ports {
            ports.insert(p.clone(), json!({}));
        }
    }
    if !spec.labels.is_empty() {
        let labels = config.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        let labels = labels.as_object_mut().expect("object");
        for (k, v) in &spec.labels {
            labels.insert(k.clone(), json!(v));
        }
    }

    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let rootfs = rootfs
        .as_object_mut()
        .ok_or_else(|| ConfigError::NotAnObject("rootfs is not an object".into()))?;
    rootfs.insert("type".into(), json!("layers"));
    let diff_ids = rootfs.entry("diff_ids").or_insert_with(|| json!([]));
    let diff_ids = diff_ids
        .as_array_mut()
        .ok_or_else(|| ConfigError::NotAnObject("rootfs.diff_ids is not an array".into()))?;
    for l in &spec.layers {
        diff_ids.push(json!(l.diff_id.to_string()));
    }

    let history = obj.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    let history = history.as_array_mut().expect("array");
    for l in &spec.layers {
        let mut h = Map::new();
        if let Some(c) = &spec.created {
            h.insert("created".into(), json!(c));
        }
        h.insert("created_by".into(), json!(l.created_by));
        if let Some(c) = &l.comment {
            h.insert("comment".into(), json!(c));
        }
        history.push(Value::Object(h));
    }
    Ok(serde_json::to_vec(&root).expect("a JSON value serialises"))
}

/// The history entries of a config that made a layer (not `empty_layer`),
/// in order: entry `i` describes layer `i`.
pub fn layer_history(config: &Value) -> Vec<&Value> {
    config
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| {
                    !e.get("empty_layer")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `Env` of the base with `overrides` applied: a key already present keeps its
/// place and takes the new value; new keys are appended in order.
pub fn merge_env(base: Option<&Value>, overrides: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = base
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in overrides {
        let entry = format!("{k}={v}");
        match out
            .iter_mut()
            .find(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(slot) => *slot = entry,
            None => out.push(entry),
        }
    }
    out
}

/// A descriptor as JSON, in the field order of the spec.
pub fn descriptor_json(
    media_type: &str,
    digest: &Digest,
    size: u64,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(media_type));
    d.insert("digest".into(), json!(digest.to_string()));
    d.insert("size".into(), json!(size));
    if !annotations.is_empty() {
        d.insert("annotations".into(), json!(annotations));
    }
    Value::Object(d)
}

/// An OCI image manifest (canonical JSON) for a config and layers, each given
/// as `(media type, digest, size)`.
pub fn build_manifest(
    config: (&Digest, u64),
    layers: &[(String, Digest, u64)],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(media::OCI_MANIFEST));
    m.insert(
        "config".into(),
        descriptor_json(media::OCI_CONFIG, config.0, config.1, &BTreeMap::new()),
    );
    m.insert(
        "layers".into(),
        Value::Array(
            layers
                .iter()
                .map(|(mt, d, s)| descriptor_json(mt, d, *s, &BTreeMap::new()))
                .collect(),
        ),
    );
    if !annotations.is_empty() {
        m.insert("annotations".into(), json!(annotations));
    }
    serde_json::to_vec(&Value::Object(m)).expect("a JSON value serialises")
}

/// Media type for a layer in an OCI manifest, given the (possibly Docker)
/// media type of the base's manifest: Docker gzip layers become OCI gzip
/// layers, byte-identical.
pub fn oci_layer_media_type(media_type: &str) -> String {
    match media_type {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP.to_owned(),
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".to_owned()
        }
        other => other.to_owned(),
    }
}

/// RFC 3339 UTC time for seconds since the epoch (for `SOURCE_DATE_EPOCH`).
pub fn rfc3339_from_epoch(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, mi, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_format_as_rfc3339() {
        assert_eq!(rfc3339_from_epoch(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_epoch(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_from_epoch(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn env_overrides_replace_in_place_and_append_new_keys() {
        let base = json!(["PATH=/usr/bin", "LANG=C"]);
        let out = merge_env(
            Some(&base),
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("HOME".into(), "/app".into()),
            ],
        );
        assert_eq!(out, vec!["PATH=/usr/bin", "LANG=C.UTF-8", "HOME=/app"]);
    }

    #[test]
    fn derived_config_appends_layers_and_is_canonical() {
        let base = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["x"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}],"container_config":{}}"#;
        let d = Digest::of(b"x");
        let spec = ConfigSpec {
            created: Some("2024-01-01T00:00:00Z".into()),
            cmd: Some(vec!["/app/bin/server".into()]),
            labels: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into(),
            exposed_ports: vec!["4000/tcp".into()],
            layers: vec![AppendedLayer {
                diff_id: d.clone(),
                created_by: "app".into(),
                comment: None,
            }],
            ..Default::default()
        };
        let out = derive_config(base, &spec).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["config"]["Cmd"], json!(["/app/bin/server"]));
        assert!(v["config"].get("Entrypoint").is_none());
        assert!(v.get("container_config").is_none());
        assert_eq!(v["rootfs"]["diff_ids"][1], json!(d.to_string()));
        assert_eq!(v["history"][1]["created_by"], json!("app"));
        assert_eq!(out, derive_config(base, &spec).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.find("\"a\":\"1\"").unwrap() < text.find("\"b\":\"2\"").unwrap());
    }
}
