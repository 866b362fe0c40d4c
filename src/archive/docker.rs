//! `docker save` archives: `manifest.json`, the config under its digest, each layer checked against its diff ID (gzip members kept as they are, plain tars compressed like the direct engine's layers).

#[allow(unused_imports)]
use super::*;

pub(super) fn import_docker(
    layout: &Layout,
    ar: &TarIndex,
    progress: &Progress,
) -> Result<Imported> {
    let manifest: Value = ar.json("manifest.json", "archive")?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| ar.invalid("manifest.json is not an array"))?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(ar.invalid("manifest.json lists no image")),
        many => {
            return Err(ar.invalid(&format!(
                "manifest.json lists {} images; save one image per archive",
                many.len()
            )));
        }
    };
    let config_name = entry
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| ar.invalid("manifest.json has no Config"))?;
    let layer_names: Vec<&str> = entry
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| ar.invalid("manifest.json has no Layers"))?
        .iter()
        .map(|l| {
            l.as_str()
                .ok_or_else(|| ar.invalid("a Layers entry is not a string"))
        })
        .collect::<Result<_>>()?;

    let config_bytes = ar.read_small(config_name, "manifest.json")?;
    let config_digest = Digest::of(&config_bytes);
    // The config is stored under its own digest: `<hex>.json` or `blobs/sha256/<hex>`.
    if let Some(named) = digest_in_name(config_name) {
        if named != config_digest {
            return Err(ImportError::DigestMismatch {
                archive: ar.path.clone(),
                member: config_name.to_owned(),
                what: "the image config".into(),
                expected: named,
                actual: config_digest,
            });
        }
    }
    let config =
        ConfigFile::parse(config_name, &config_bytes).map_err(|e| ar.invalid(&e.to_string()))?;
    let diff_ids: Vec<Digest> = config
        .diff_ids()
        .into_iter()
        .map(|d| d.ok_or_else(|| ar.invalid("a rootfs.diff_ids entry is not a sha256 digest")))
        .collect::<Result<_>>()?;
    if diff_ids.len() != layer_names.len() {
        return Err(ar.invalid(&format!(
            "manifest.json lists {} layers but the config has {} diff IDs",
            layer_names.len(),
            diff_ids.len()
        )));
    }
    let known = layout.known_layers();
    let total = layer_names.len();
    let jobs: Vec<LayerJob> = layer_names
        .iter()
        .zip(&diff_ids)
        .enumerate()
        .map(|(i, (name, diff_id))| LayerJob {
            member: (*name).to_owned(),
            diff_id: diff_id.clone(),
            what: format!("layer {} of {total}", i + 1),
            known: known.get(diff_id).cloned(),
        })
        .collect();
    let results = run_parallel(&jobs, |job| import_docker_layer(layout, ar, job, progress))?;

    let (blobs, reused): (Vec<Descriptor>, Vec<bool>) = results.into_iter().unzip();
    let outcomes = layer_outcomes(&config, &blobs, &reused);
    let (config_digest, config_size) = layout
        .write_blob(&config_bytes)
        .map_err(|e| ar.layout_err(e))?;
    let manifest = mutate::manifest(
        Descriptor::new(media::OCI_CONFIG, config_digest.clone(), config_size),
        &blobs,
    )
    .to_bytes();
    let (digest, size) = layout.write_blob(&manifest).map_err(|e| ar.layout_err(e))?;
    Ok(Imported {
        format: ArchiveFormat::DockerArchive,
        media_type: media::OCI_MANIFEST.to_owned(),
        digest,
        size,
        config: config_digest,
        platform: config
            .platform()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into()),
        layers: outcomes,
    })
}

pub(super) struct LayerJob {
    pub(super) member: String,
    pub(super) diff_id: Digest,
    pub(super) what: String,
    pub(super) known: Option<Descriptor>,
}

/// One docker layer into the layout: verified against its diff ID; gzip
/// members are stored as they are, plain tars compressed; a layer the layout
/// already holds (by diff ID) is only hashed.
pub(super) fn import_docker_layer(
    layout: &Layout,
    ar: &TarIndex,
    job: &LayerJob,
    progress: &Progress,
) -> Result<(Descriptor, bool)> {
    let (mut r, len) = ar.open(&job.member, "manifest.json")?;
    let task = progress.task(format!("import {}", job.what), Some(len));
    let mut magic = [0u8; 4];
    let n = read_full(&mut r, &mut magic).map_err(|e| ar.io("reading", e))?;
    let head = &magic[..n];
    let mut r = io::Cursor::new(head.to_vec()).chain(r);
    let gzipped = head.starts_with(&[0x1f, 0x8b]);

    if let Some(known) = &job.known {
        // Same content as a layer already in the layout: only check it.
        let mut h = DiffHasher::new(gzipped);
        copy_counting(&mut r, &mut h, &task).map_err(|e| ar.io("reading", e))?;
        let actual = h.finish().map_err(|e| ar.io("decompressing", e))?;
        ar.check(&job.member, &job.what, &job.diff_id, actual)?;
        task.finish("exists");
        return Ok((known.clone(), true));
    }

    let mut w = layout.blob_writer().map_err(|e| ar.layout_err(e))?;
    let actual_diff = if gzipped {
        // Stored as is; the diff ID is of the decompressed bytes.
        let mut tee = TeeWriter {
            a: &mut w,
            b: DiffHasher::new(true),
        };
        copy_counting(&mut r, &mut tee, &task).map_err(|e| ar.io("reading", e))?;
        tee.b.finish().map_err(|e| ar.io("decompressing", e))?
    } else {
        // Compressed on all cores, as the direct engine's layers are.
        let (stats, _) = crate::layer::compress_tar_stream(
            &job.what,
            &mut r,
            &crate::layer::LayerOptions::default(),
            &mut w,
            Some(&task),
        )
        .map_err(|e| ar.io("compressing", io::Error::other(e)))?;
        stats.diff_id
    };
    // On a mismatch `w` is dropped uncommitted: its temp file goes, nothing is stored.
    ar.check(&job.member, &job.what, &job.diff_id, actual_diff)?;
    let (digest, size) = w.commit(None).map_err(|e| ar.layout_err(e))?;
    task.finish("done");
    Ok((Descriptor::new(media::OCI_LAYER_GZIP, digest, size), false))
}
