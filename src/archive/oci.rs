//! OCI archives (`oci-archive`, buildctl's and buildx's output): the layout's `index.json` followed through nested indexes, every blob verified on the way in.

#[allow(unused_imports)]
use super::*;

pub(super) fn import_oci(layout: &Layout, ar: &TarIndex, progress: &Progress) -> Result<Imported> {
    let index_bytes = ar.read_small("index.json", "archive")?;
    let top = Index::parse("index.json", &index_bytes).map_err(|e| ar.invalid(&e.to_string()))?;
    // Image manifests, looking through nested indexes; attestation manifests
    // (platform unknown/unknown) are left out.
    let mut images: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut indexes: Vec<(Descriptor, Vec<u8>)> = Vec::new();
    let mut todo: Vec<Descriptor> = top.manifests.clone();
    while let Some(desc) = todo.pop() {
        let bytes = ar.read_blob(
            &desc,
            "index.json",
            &format!("manifest {}", desc.digest.short()),
        )?;
        if media::is_index(&desc.media_type) {
            let index = Index::parse(&desc.digest.to_string(), &bytes)
                .map_err(|e| ar.invalid(&e.to_string()))?;
            for e in index.manifests {
                let attestation = e
                    .platform
                    .as_ref()
                    .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
                if !attestation {
                    todo.push(e);
                }
            }
            indexes.push((desc, bytes));
        } else {
            images.push((desc, bytes));
        }
    }
    images.reverse();
    if images.is_empty() {
        return Err(ar.invalid("index.json leads to no image manifest"));
    }

    let mut first: Option<(Digest, Vec<LayerOutcome>)> = None;
    let mut platforms = Vec::new();
    for (desc, bytes) in &images {
        let m = Manifest::parse(&desc.digest.to_string(), bytes)
            .map_err(|e| ar.invalid(&e.to_string()))?;
        let config_bytes = ar.read_blob(
            &m.config,
            &format!("manifest {}", desc.digest.short()),
            "the image config",
        )?;
        let config = ConfigFile::parse(&m.config.digest.to_string(), &config_bytes)
            .map_err(|e| ar.invalid(&e.to_string()))?;
        platforms.push(
            config
                .platform()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into()),
        );
        let total = m.layers.len();
        let results = run_parallel(
            &m.layers.iter().enumerate().collect::<Vec<_>>(),
            |(i, l)| {
                let what = format!("layer {} of {total}", i + 1);
                let reused =
                    layout.has_blob(&l.digest) && layout.blob_size(&l.digest).ok() == Some(l.size);
                if !reused {
                    ar.copy_blob(
                        layout,
                        l,
                        &format!("manifest {}", desc.digest.short()),
                        &what,
                        progress,
                    )?;
                }
                Ok(reused)
            },
        )?;
        layout
            .write_blob(&config_bytes)
            .map_err(|e| ar.layout_err(e))?;
        layout.write_blob(bytes).map_err(|e| ar.layout_err(e))?;
        if first.is_none() {
            let outcomes = layer_outcomes(&config, &m.layers, &results);
            first = Some((m.config.digest.clone(), outcomes));
        }
    }
    for (desc, bytes) in &indexes {
        layout.write_blob(bytes).map_err(|e| ar.layout_err(e))?;
        let _ = desc;
    }
    let (config, layers) = first.expect("at least one image");
    // One image: tag its manifest. Several (multi-platform): tag the index
    // the archive names (the first top-level index).
    let (media_type, digest, size) = if images.len() == 1 {
        let d = &images[0].0;
        (d.media_type.clone(), d.digest.clone(), d.size)
    } else {
        let d = &indexes
            .first()
            .expect("several images come from an index")
            .0;
        (d.media_type.clone(), d.digest.clone(), d.size)
    };
    Ok(Imported {
        format: ArchiveFormat::OciArchive,
        media_type,
        digest,
        size,
        config,
        platform: platforms.join(","),
        layers,
    })
}
