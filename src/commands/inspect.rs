//! `inspect`: an image in a layout or a registry: manifest digest, platform,
//! each layer (size, what it holds), config (cmd, user, env, ports, labels).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cli::InspectArgs;
use crate::credentials::{ChainEnv, chain_for};
use crate::error::{Error, Result};
use crate::image::manifest::NoSuchPlatform;
use crate::image::{ConfigFile, Descriptor, Digest, ImageDoc, ImageRef, Manifest, Platform, media};
use crate::layout::Layout;
use crate::progress::human_bytes;
use crate::settings::Settings;

/// Run `inspect`.
pub async fn run(settings: &Settings, a: &InspectArgs) -> Result<()> {
    let r: ImageRef = a.image.parse()?;
    let want: Platform = match &a.platform {
        Some(p) => p.parse()?,
        None => Platform::host(),
    };
    let no_platform = |none: NoSuchPlatform| {
        Error::input(format!(
            "{r} has no image for {want} (it has: {})",
            none.listed()
        ))
    };
    let (digest, manifest, config) = match &r {
        ImageRef::Layout(l) => {
            let layout = Layout::open(&l.dir)?;
            let entry = layout.resolve(l.tag.as_deref())?;
            let (d, bytes) = if media::is_index(&entry.media_type) {
                let idx = layout.read_blob(&entry.digest)?;
                let idx = crate::image::Index::parse(&entry.digest.to_string(), &idx)?;
                let e = idx.select(&want).map_err(no_platform)?;
                (e.digest.clone(), layout.read_blob(&e.digest)?)
            } else {
                (entry.digest.clone(), layout.read_blob(&entry.digest)?)
            };
            let m = Manifest::parse(&d.to_string(), &bytes)?;
            let cfg = layout.read_blob(&m.config.digest)?;
            (d, m, cfg)
        }
        ImageRef::Registry(rr) => {
            let client = super::client(
                settings,
                chain_for(None, None, ChainEnv::from_process()),
                None,
            )?;
            let mut fetched = client.fetch_manifest(rr).await?;
            if let ImageDoc::Index(idx) = &fetched.doc {
                let e = idx.select(&want).map_err(no_platform)?;
                fetched = client
                    .fetch_manifest(&rr.with_digest(e.digest.clone()))
                    .await?;
            }
            let ImageDoc::Manifest(m) = fetched.doc else {
                return Err(Error::input(format!("{r}: an index inside an index")));
            };
            let cfg = client.fetch_small_blob(rr, &m.config.digest).await?;
            (fetched.digest, m, cfg)
        }
    };
    let config = ConfigFile::parse(&manifest.config.digest.to_string(), &config)?;
    let summary = summarize(&r.to_string(), &digest, &manifest, &config);
    if settings.json {
        super::print_json(&serde_json::to_value(&summary)?);
    } else {
        print_text(&serde_json::to_value(&summary)?);
    }
    Ok(())
}

/// What `inspect` shows.
#[derive(Debug, Serialize)]
pub struct Summary {
    name: String,
    digest: Digest,
    #[serde(rename = "mediaType")]
    media_type: String,
    platform: String,
    created: Option<String>,
    config_digest: Digest,
    size: u64,
    layers: Vec<LayerSummary>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    env: Option<Vec<String>>,
    exposed_ports: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// One layer of [`Summary`].
#[derive(Debug, Serialize)]
struct LayerSummary {
    digest: Digest,
    size: u64,
    #[serde(rename = "mediaType")]
    media_type: String,
    diff_id: Option<String>,
    created_by: Option<String>,
}

/// The inspect summary of an image.
pub fn summarize(name: &str, digest: &Digest, m: &Manifest, cfg: &ConfigFile) -> Summary {
    // History entries that made a layer, in order, describe the layers.
    let history = cfg.layer_history();
    let layers = m
        .layers
        .iter()
        .enumerate()
        .map(|(i, l): (usize, &Descriptor)| LayerSummary {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            diff_id: cfg.rootfs.diff_ids.get(i).cloned(),
            created_by: history.get(i).and_then(|h| h.created_by.clone()),
        })
        .collect();
    let c = cfg.config.clone().unwrap_or_default();
    Summary {
        name: name.to_owned(),
        digest: digest.clone(),
        media_type: m.media_type().to_owned(),
        platform: cfg
            .platform()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?/?".into()),
        created: cfg.created.clone(),
        config_digest: m.config.digest.clone(),
        size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
        layers,
        cmd: c.cmd,
        entrypoint: c.entrypoint,
        user: c.user,
        working_dir: c.working_dir,
        env: c.env,
        exposed_ports: c.exposed_ports.map(|p| p.into_keys().collect()),
        labels: c.labels,
    }
}

fn print_text(s: &Value) {
    let str_of = |v: &Value| {
        v.as_str().map(str::to_owned).unwrap_or_else(|| {
            if v.is_null() {
                "-".into()
            } else {
                v.to_string()
            }
        })
    };
    crate::out!("{}", str_of(&s["name"]));
    crate::out!("  digest:    {}", str_of(&s["digest"]));
    crate::out!("  platform:  {}", str_of(&s["platform"]));
    crate::out!("  created:   {}", str_of(&s["created"]));
    crate::out!(
        "  size:      {}",
        human_bytes(s["size"].as_u64().unwrap_or(0))
    );
    crate::out!("  cmd:       {}", str_of(&s["cmd"]));
    if !s["entrypoint"].is_null() {
        crate::out!("  entrypoint: {}", str_of(&s["entrypoint"]));
    }
    crate::out!("  user:      {}", str_of(&s["user"]));
    crate::out!("  workdir:   {}", str_of(&s["working_dir"]));
    crate::out!("  ports:     {}", str_of(&s["exposed_ports"]));
    crate::out!("  env:");
    for e in s["env"].as_array().into_iter().flatten() {
        crate::out!("    {}", str_of(e));
    }
    crate::out!("  labels:");
    for (k, v) in s["labels"].as_object().into_iter().flatten() {
        crate::out!("    {k}={}", str_of(v));
    }
    crate::out!("  layers:");
    for l in s["layers"].as_array().into_iter().flatten() {
        let d = str_of(&l["digest"]);
        crate::out!(
            "    {}  {:>10}  {}",
            d.get(7..19).unwrap_or(&d),
            human_bytes(l["size"].as_u64().unwrap_or(0)),
            str_of(&l["created_by"])
        );
    }
}
