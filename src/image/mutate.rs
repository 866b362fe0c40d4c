//! Transformations of the model, in one place (go-containerregistry's
//! `mutate`): a base config with layers appended and runtime settings
//! applied, the manifest of the result, the creation time as RFC 3339.
//! Pure: time is an input, nothing reads the clock.

use std::collections::BTreeMap;

use crate::image::config::{ConfigFile, History, RuntimeConfig};
use crate::image::manifest::{Descriptor, Manifest};
use crate::image::{Digest, media};

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

/// Fields Docker writes about the build container: they mean nothing in an
/// image built here.
const BUILD_CONTAINER_FIELDS: &[&str] =
    &["container", "container_config", "docker_version", "author"];

/// The config of the built image: the base's, with `spec` applied.
pub fn append(base: &ConfigFile, spec: &ConfigSpec) -> ConfigFile {
    let mut c = base.clone();
    for k in BUILD_CONTAINER_FIELDS {
        c.extra.remove(*k);
    }
    c.created = spec.created.clone();
    let rc = c.config.get_or_insert_with(RuntimeConfig::default);
    if let Some(u) = &spec.user {
        rc.user = Some(u.clone());
    }
    if let Some(w) = &spec.working_dir {
        rc.working_dir = Some(w.clone());
    }
    if let Some(cmd) = &spec.cmd {
        rc.cmd = Some(cmd.clone());
        rc.entrypoint = None;
    }
    rc.env = Some(merge_env(rc.env.as_deref().unwrap_or_default(), &spec.env));
    if !spec.exposed_ports.is_empty() {
        let ports = rc.exposed_ports.get_or_insert_with(BTreeMap::new);
        for p in &spec.exposed_ports {
            ports.insert(p.clone(), serde_json::json!({}));
        }
    }
    if !spec.labels.is_empty() {
        let labels = rc.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(spec.labels.clone());
    }
    c.rootfs.kind = "layers".into();
    for l in &spec.layers {
        c.rootfs.diff_ids.push(l.diff_id.to_string());
        c.history.push(History {
            created: spec.created.clone(),
            created_by: Some(l.created_by.clone()),
            comment: l.comment.clone(),
            ..History::default()
        });
    }
    c
}

/// The config with `set` labels added or replaced, and empty
/// `org.opencontainers.image.*` labels dropped (an engine's build arguments
/// that were not given leave them empty).
pub fn relabel(config: &ConfigFile, set: &BTreeMap<String, String>) -> ConfigFile {
    let mut c = config.clone();
    let rc = c.config.get_or_insert_with(RuntimeConfig::default);
    let labels = rc.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(set.clone());
    labels.retain(|k, v| !(k.starts_with("org.opencontainers.image.") && v.is_empty()));
    if labels.is_empty() && config.config.as_ref().is_none_or(|r| r.labels.is_none()) {
        rc.labels = None;
    }
    c
}

/// `Env` with `overrides` applied: a key already present keeps its place and
/// takes the new value; new keys are appended in order.
pub fn merge_env(base: &[String], overrides: &[(String, String)]) -> Vec<String> {
    let mut out = base.to_vec();
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

/// The OCI manifest of an image whose config and layers are these blobs.
/// Docker layer media types of a base become their OCI twins (the bytes
/// are the same).
pub fn manifest(config: Descriptor, layers: &[Descriptor]) -> Manifest {
    let layers = layers
        .iter()
        .map(|l| {
            Descriptor::new(
                oci_layer_media_type(&l.media_type),
                l.digest.clone(),
                l.size,
            )
        })
        .collect();
    Manifest::oci(
        Descriptor::new(media::OCI_CONFIG, config.digest, config.size),
        layers,
    )
}

/// Media type for a layer in an OCI manifest, given a (possibly Docker)
/// layer media type: Docker gzip layers become OCI gzip layers, byte-identical.
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
    use serde_json::{Value, json};

    #[test]
    fn epoch_seconds_format_as_rfc3339() {
        assert_eq!(rfc3339_from_epoch(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_epoch(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_from_epoch(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn env_overrides_replace_in_place_and_append_new_keys() {
        let base = vec!["PATH=/usr/bin".to_owned(), "LANG=C".to_owned()];
        let out = merge_env(
            &base,
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("HOME".into(), "/app".into()),
            ],
        );
        assert_eq!(out, vec!["PATH=/usr/bin", "LANG=C.UTF-8", "HOME=/app"]);
    }

    fn spec(d: &Digest) -> ConfigSpec {
        ConfigSpec {
            created: Some("2024-01-01T00:00:00Z".into()),
            user: Some("65534:65534".into()),
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
        }
    }

    const BASE: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["x"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"base"}],"container_config":{}}"#;

    #[test]
    fn the_derived_config_appends_layers_and_is_canonical() {
        let base = ConfigFile::parse("base", BASE).unwrap();
        let d = Digest::of(b"x");
        let out = append(&base, &spec(&d)).to_bytes();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["config"]["Cmd"], json!(["/app/bin/server"]));
        assert!(v["config"].get("Entrypoint").is_none());
        assert!(v.get("container_config").is_none());
        assert_eq!(v["rootfs"]["diff_ids"][1], json!(d.to_string()));
        assert_eq!(v["history"][1]["created_by"], json!("app"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.find("\"a\":\"1\"").unwrap() < text.find("\"b\":\"2\"").unwrap());
    }

    /// Pins the canonical form: a change here changes every image's digest.
    #[test]
    fn config_and_manifest_bytes_are_pinned_by_a_golden_digest() {
        let base = ConfigFile::parse("base", BASE).unwrap();
        let d = Digest::of(b"x");
        let config = append(&base, &spec(&d)).to_bytes();
        let layer = Descriptor::new(media::DOCKER_LAYER_GZIP, Digest::of(b"layer"), 5);
        let m = manifest(Descriptor::of(media::OCI_CONFIG, &config), &[layer]).to_bytes();
        assert_eq!(
            Digest::of(&config).to_string(),
            "sha256:22334851a0e4708839af9c98382f5add39b2b6f381f5f74744f2946f85ee2e22",
            "config: {}",
            String::from_utf8_lossy(&config)
        );
        assert_eq!(
            Digest::of(&m).to_string(),
            "sha256:ae72bab69901bbe21942055f52747e3f2c46ca62645acc05eb58c7704dfba768",
            "manifest: {}",
            String::from_utf8_lossy(&m)
        );
    }
}
