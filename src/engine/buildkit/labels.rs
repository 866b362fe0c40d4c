//! After the import: title and version labels filled from the release in
//! the image, `--label`s applied, a new config and manifest written when that
//! changes anything.

use std::collections::BTreeMap;

use super::context::{TITLE, VERSION};
use crate::archive::{self, Imported};
use crate::image::{ConfigFile, Descriptor, Manifest, media, mutate};
use crate::layout::Layout;

// --------------------------------------------------------------- labels ---

pub(super) struct Finished {
    pub(super) imported: Imported,
    pub(super) title: Option<String>,
    pub(super) version: Option<String>,
    pub(super) workdir: String,
}

/// Fill an empty or missing title/version label from the release in the
/// image, apply `extra` (the `--label`s and `[image] labels`; they win), and
/// drop empty `org.opencontainers.image.*` labels; when that
/// changes the config, a new config and manifest are written (an index —
/// a multi-platform build — is left as it is).
pub(super) fn finish_labels(
    layout: &Layout,
    mut imported: Imported,
    extra: &BTreeMap<String, String>,
) -> crate::error::Result<Finished> {
    let config = ConfigFile::parse(
        &imported.config.to_string(),
        &layout.read_blob(&imported.config)?,
    )?;
    let runtime = config.config.clone().unwrap_or_default();
    let workdir = runtime
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/app".to_owned());
    let labels = config.labels();
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let mut title = extra.get(TITLE).cloned().or_else(|| label(TITLE));
    let mut version = extra.get(VERSION).cloned().or_else(|| label(VERSION));
    if !media::is_manifest(&imported.media_type) {
        return Ok(Finished {
            imported,
            title,
            version,
            workdir,
        });
    }
    if title.is_none() || version.is_none() {
        let image = Descriptor::new(
            imported.media_type.clone(),
            imported.digest.clone(),
            imported.size,
        );
        if let Some((name, vsn)) =
            crate::release::project::release_in_image(layout, &image, &workdir)?
        {
            title = title.or(Some(name));
            version = version.or(Some(vsn));
        }
    }
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [(TITLE, &title), (VERSION, &version)] {
        if let Some(v) = v {
            set.insert(k.to_owned(), v.clone());
        }
    }
    set.extend(extra.clone());
    let relabelled = mutate::relabel(&config, &set);
    if relabelled == config {
        return Ok(Finished {
            imported,
            title,
            version,
            workdir,
        });
    }
    let (config_digest, config_size) = layout.write_blob(&relabelled.to_bytes())?;
    let manifest = Manifest::parse(
        &imported.digest.to_string(),
        &layout.read_blob(&imported.digest)?,
    )?;
    // The config the engine made: recorded by an earlier pass, else this one.
    let origin = manifest
        .annotations
        .get(archive::BUILT_CONFIG_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| imported.config.to_string());
    let mut new = mutate::manifest(
        Descriptor::new(media::OCI_CONFIG, config_digest.clone(), config_size),
        &manifest.layers,
    );
    new.annotations
        .insert(archive::BUILT_CONFIG_ANNOTATION.to_owned(), origin);
    let (digest, size) = layout.write_blob(&new.to_bytes())?;
    imported.digest = digest;
    imported.size = size;
    imported.config = config_digest;
    imported.media_type = media::OCI_MANIFEST.to_owned();
    Ok(Finished {
        imported,
        title,
        version,
        workdir,
    })
}
