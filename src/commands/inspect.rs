//! `inspect`: an image in a layout or a registry: manifest digest, platform,
//! each layer (size, what it holds), config (cmd, user, env, ports, labels).

use crate::error::{Context as _, Error, Result};
use serde_json::{Value, json};

use crate::cli::InspectArgs;
use crate::credentials::{ChainEnv, chain_for};
use crate::image::config::layer_history;
use crate::image::manifest::{parse_index, parse_manifest, select_platform, sniff_media_type};
use crate::image::{Digest, ImageRef, Platform, media};
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
    let (digest, manifest, config) = match &r {
        ImageRef::Layout(l) => {
            let layout = Layout::open(&l.dir)?;
            let entry = layout.resolve(l.tag.as_deref())?;
            let (d, bytes) = if media::is_index(&entry.media_type) {
                let idx = layout.read_blob(&entry.digest)?;
                let entries = parse_index(&entry.digest.to_string(), &idx)?;
                let e = select_platform(&entries, &want).map_err(|avail| {
                    Error::input(format!(
                        "{r} has no image for {want} (it has: {})",
                        avail.join(", ")
                    ))
                })?;
                (e.blob.digest.clone(), layout.read_blob(&e.blob.digest)?)
            } else {
                (entry.digest.clone(), layout.read_blob(&entry.digest)?)
            };
            let m = parse_manifest(&d.to_string(), &bytes)?;
            let cfg = layout.read_blob(&m.config.digest)?;
            (d, bytes, cfg)
        }
        ImageRef::Registry(rr) => {
            let client = super::client(
                settings,
                chain_for(None, None, ChainEnv::from_process()),
                None,
            )?;
            let mut fetched = client.fetch_manifest(rr).await?;
            if sniff_media_type(&fetched.bytes).is_some_and(|m| media::is_index(&m)) {
                let entries = parse_index(&fetched.digest.to_string(), &fetched.bytes)?;
                let e = select_platform(&entries, &want).map_err(|avail| {
                    Error::input(format!(
                        "{r} has no image for {want} (it has: {})",
                        avail.join(", ")
                    ))
                })?;
                fetched = client
                    .fetch_manifest(&rr.with_digest(e.blob.digest.clone()))
                    .await?;
            }
            let m = parse_manifest(&fetched.digest.to_string(), &fetched.bytes)?;
            let cfg = client.fetch_small_blob(rr, &m.config.digest).await?;
            (fetched.digest, fetched.bytes, cfg)
        }
    };
    let summary = summarize(&r.to_string(), &digest, &manifest, &config)?;
    if settings.json {
        super::print_json(&summary);
    } else {
        print_text(&summary);
    }
    Ok(())
}

/// The inspect summary as JSON.
pub fn summarize(name: &str, digest: &Digest, manifest: &[u8], config: &[u8]) -> Result<Value> {
    let m = parse_manifest(&digest.to_string(), manifest)?;
    let cfg: Value = serde_json::from_slice(config)
        .with_context(|| format!("the config {} is not JSON", m.config.digest))?;
    // History entries that made a layer, in order, describe the layers.
    let history = layer_history(&cfg);
    let diff_ids: Vec<&Value> = cfg
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let layers: Vec<Value> = m
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "digest": l.digest,
                "size": l.size,
                "mediaType": l.media_type,
                "diff_id": diff_ids.get(i),
                "created_by": history.get(i).and_then(|h| h.get("created_by")),
            })
        })
        .collect();
    let c = cfg.get("config").cloned().unwrap_or(json!({}));
    Ok(json!({
        "name": name,
        "digest": digest,
        "mediaType": m.media_type,
        "platform": format!("{}/{}{}", cfg["os"].as_str().unwrap_or("?"), cfg["architecture"].as_str().unwrap_or("?"),
            cfg.get("variant").and_then(Value::as_str).map(|v| format!("/{v}")).unwrap_or_default()),
        "created": cfg.get("created"),
        "config_digest": m.config.digest,
        "size": m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
        "layers": layers,
        "cmd": c.get("Cmd"),
        "entrypoint": c.get("Entrypoint"),
        "user": c.get("User"),
        "working_dir": c.get("WorkingDir"),
        "env": c.get("Env"),
        "exposed_ports": c.get("ExposedPorts").and_then(Value::as_object).map(|o| o.keys().cloned().collect::<Vec<_>>()),
        "labels": c.get("Labels"),
    }))
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
