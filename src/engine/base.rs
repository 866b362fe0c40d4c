//! The base image of a direct build: from an OCI layout (`oci:DIR[:TAG]`) or
//! a registry, resolved to the release's platform. Registry bases are pulled
//! into a cache layout (blobs by digest, tags by reference and platform), so
//! the next build needs no network and a build with `--offline` none at all.

use crate::error::{Context as _, Error, OptionContext as _, Result};

use crate::cache::Memo;
use crate::image::{
    ConfigFile, Descriptor, Digest, ImageRef, Index, Manifest, Platform, RegistryRef, media,
};
use crate::layout::{Layout, LayoutError};
use crate::progress::Progress;
use crate::registry::{Client, RegistryError};

/// A base image whose blobs are all in `layout`.
pub struct BaseImage {
    /// The reference as the user gave it (for messages).
    pub name: String,
    /// The registry reference the image is known by (the `base.name`
    /// label): the one pulled from, or for an `oci:` base the full registry
    /// reference its tag carries, if any — never a host path.
    pub registry_name: Option<String>,
    /// The platform manifest's digest (the `base.digest` label).
    pub manifest_digest: Digest,
    /// The manifest's config and layers.
    pub manifest: Manifest,
    /// The config.
    pub config: ConfigFile,
    /// The platform the config declares.
    pub platform: Platform,
    /// Where the blobs are.
    pub layout: Layout,
    /// Made by the tool from Debian packages (`deb:SUITE`): no registry
    /// knows it, so no `base.*` label names it.
    pub from_packages: bool,
}

impl BaseImage {
    /// The empty start of a `deb:SUITE` base: no layers (the packages
    /// layer comes on top), a config with Debian's default `PATH`.
    pub fn from_packages(name: &str, platform: &Platform, layout: &Layout) -> Result<BaseImage> {
        let config = ConfigFile::parse(
            name,
            serde_json::json!({
                "architecture": platform.architecture,
                "variant": platform.variant,
                "os": platform.os,
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                },
                "rootfs": { "type": "layers", "diff_ids": [] },
            })
            .to_string()
            .as_bytes(),
        )?;
        let config_bytes = config.to_bytes();
        let manifest = Manifest::oci(Descriptor::of(media::OCI_CONFIG, &config_bytes), Vec::new());
        Ok(BaseImage {
            name: name.to_owned(),
            registry_name: None,
            manifest_digest: Digest::of(&manifest.to_bytes()),
            manifest,
            config,
            platform: platform.clone(),
            layout: layout.clone(),
            from_packages: true,
        })
    }

    /// The base's layers.
    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.layers
    }
}

/// How to get a registry base.
pub struct BaseSource<'a> {
    /// The client to pull with (`None` when offline).
    pub client: Option<&'a Client>,
    /// The cache layout for registry bases.
    pub cache: &'a Layout,
    /// Progress display.
    pub progress: &'a Progress,
    /// Remembers which base blobs were verified (so unchanged ones are not
    /// hashed again on every build).
    pub memo: Option<&'a Memo>,
}

/// Resolve `base` to `want`'s platform, pulling it when needed.
pub async fn resolve(base: &ImageRef, want: &Platform, src: &BaseSource<'_>) -> Result<BaseImage> {
    match base {
        ImageRef::Layout(l) => {
            let layout = Layout::open(&l.dir)
                .with_context(|| format!("opening the base layout {}", l.dir.display()))?;
            let entry = layout.resolve(l.tag.as_deref())?;
            let registry_name = entry.tag.as_deref().and_then(qualified_reference);
            if registry_name.is_none() {
                tracing::debug!(
                    "org.opencontainers.image.base.name left out: the oci: base's tag names no registry reference"
                );
            }
            let mut b = from_layout(
                base.to_string(),
                layout,
                entry.media_type,
                entry.digest,
                want,
            )?;
            b.registry_name = registry_name;
            Ok(b)
        }
        ImageRef::Registry(r) => from_registry(r, want, src).await,
    }
}

/// A `ref.name` annotation that is a whole registry reference
/// (`registry.example/base/runner:bookworm`, `docker.io/library/debian:12`),
/// normalised; a bare tag (`runner`) is not.
fn qualified_reference(tag: &str) -> Option<String> {
    let (first, _) = tag.split_once('/')?;
    let host_like = first.contains('.') || first.contains(':') || first == "localhost";
    if !host_like {
        return None;
    }
    tag.parse::<RegistryRef>().ok().map(|r| r.to_string())
}

/// The cache tag of a registry reference for a platform: the reference with
/// `+os-arch` appended (a valid `ref.name`).
pub fn cache_tag(r: &RegistryRef, p: &Platform) -> String {
    format!(
        "{}+{}-{}{}",
        r,
        p.os,
        p.architecture,
        p.variant
            .as_deref()
            .map(|v| format!("-{v}"))
            .unwrap_or_default()
    )
}

async fn from_registry(
    r: &RegistryRef,
    want: &Platform,
    src: &BaseSource<'_>,
) -> Result<BaseImage> {
    let tag = cache_tag(r, want);
    let cached = src.cache.resolve(Some(&tag)).ok();
    // A digest reference never changes: the cached copy is the image.
    if let (Some(c), Some(_)) = (&cached, &r.digest) {
        if let Ok(b) = from_layout(
            r.to_string(),
            src.cache.clone(),
            c.media_type.clone(),
            c.digest.clone(),
            want,
        ) {
            tracing::debug!(base = %r, "base image from the cache (pinned by digest)");
            return Ok(b);
        }
    }
    let Some(client) = src.client else {
        let c = cached.or_input({
            format!("--offline: the base {r} for {want} is not in the cache ({}); build once online first", src.cache.root().display())
        })?;
        return from_layout(
            r.to_string(),
            src.cache.clone(),
            c.media_type,
            c.digest,
            want,
        );
    };
    match client.pull(r, want, src.cache, src.progress).await {
        Ok(pulled) => {
            src.cache.set_tags(
                &pulled.media_type,
                &pulled.digest,
                std::slice::from_ref(&tag),
            )?;
            from_layout(
                r.to_string(),
                src.cache.clone(),
                pulled.media_type,
                pulled.digest,
                want,
            )
        }
        Err(e @ RegistryError::Unreachable { .. }) => match cached {
            Some(c) => {
                src.progress.say(format!(
                    "warning: {e}; using the cached base {r} ({})",
                    c.digest
                ));
                from_layout(
                    r.to_string(),
                    src.cache.clone(),
                    c.media_type,
                    c.digest,
                    want,
                )
            }
            None => Err(e).with_context(|| format!("pulling the base image {r}")),
        },
        Err(e) => Err(e).with_context(|| format!("pulling the base image {r}")),
    }
}

fn from_layout(
    name: String,
    layout: Layout,
    media_type: String,
    digest: Digest,
    want: &Platform,
) -> Result<BaseImage> {
    let (manifest_digest, manifest_bytes) = if media::is_index(&media_type) {
        let bytes = layout.read_blob(&digest)?;
        let index = Index::parse(&digest.to_string(), &bytes)?;
        let entry = index.select(want).map_err(|none| {
            Error::input(format!(
                "the base {name} has no image for {want} (it has: {})",
                none.listed()
            ))
        })?;
        (entry.digest.clone(), layout.read_blob(&entry.digest)?)
    } else {
        (digest.clone(), layout.read_blob(&digest)?)
    };
    let manifest = Manifest::parse(&manifest_digest.to_string(), &manifest_bytes)?;
    let config = ConfigFile::parse(
        &manifest.config.digest.to_string(),
        &layout.read_blob(&manifest.config.digest)?,
    )?;
    let platform = config.platform().or_input(format!(
        "the base's config {} names no os/architecture",
        manifest.config.digest
    ))?;
    for l in &manifest.layers {
        if !layout.has_blob(&l.digest) {
            return Err(LayoutError::MissingBlob {
                path: layout.root().to_owned(),
                digest: l.digest.clone(),
            })
            .with_context(|| format!("reading the base {name}"));
        }
        if crate::compress::Packing::of_media_type(&l.media_type).is_none() {
            return Err(Error::input(format!(
                "the base {name} has a layer of media type {} (only tar, gzip and zstd layers are supported)",
                l.media_type
            )));
        }
    }
    // (Not parsed for an `oci:` base: no registry knows it, and parsing a
    // reference compiles a regex, a measurable part of a warm build.)
    let registry_name = (!name.starts_with("oci:"))
        .then(|| name.parse::<RegistryRef>().ok().map(|r| r.to_string()))
        .flatten();
    Ok(BaseImage {
        registry_name,
        name,
        manifest_digest,
        manifest,
        config,
        platform,
        layout,
        from_packages: false,
    })
}

/// Copy the base's blobs into `layout`, each verified against its digest.
///
/// A blob of the base cache that does not hash to its name (a flipped byte,
/// a bad disk) is removed from the cache and, when a client is at hand, the
/// base is pulled again once; from an `oci:` layout, or offline, the build
/// stops with the corrupt file named.
///
/// Blobs verified before are not copied yet: their digests come back, for
/// the caller to copy ([`Layout::copy_verified_blob_from`]: copying and
/// flushing a base layer to disk takes a while, but no CPU the build
/// needs) while it builds, and before any manifest names them. Until then
/// the base's layers are read from [`BaseImage::layout`].
pub async fn install(
    base: BaseImage,
    reference: &ImageRef,
    want: &Platform,
    layout: &Layout,
    src: &BaseSource<'_>,
) -> Result<(BaseImage, Vec<Digest>)> {
    let copied = copy_blobs(&base, layout, src.memo);
    let err = match copied {
        Ok(to_copy) => return Ok((base, to_copy)),
        Err(err) => err,
    };
    let from_cache =
        matches!(reference, ImageRef::Registry(_)) && base.layout.root() == src.cache.root();
    let (LayoutError::DigestMismatch { expected, .. }, true) = (&err, from_cache) else {
        return Err(err).with_context(|| {
            format!(
                "copying the base {} into {}",
                base.name,
                layout.root().display()
            )
        });
    };
    src.cache.remove_blob(expected)?;
    let note = "the cached copy of the base is corrupt; the bad blob was removed from the cache";
    let (ImageRef::Registry(r), Some(_)) = (reference, src.client) else {
        return Err(err).context(format!(
            "{note}: build again without --offline to pull it afresh"
        ));
    };
    src.progress
        .say(format!("warning: {err}: {note}; pulling {r} again"));
    let again = from_registry(r, want, src).await?;
    let to_copy = copy_blobs(&again, layout, src.memo)
        .with_context(|| format!("copying the base {r} into {}", layout.root().display()))?;
    Ok((again, to_copy))
}

/// Copy the base's layers into `layout`, each hashed on the way, unless the
/// memo says this very file (inode, size, mtime, ctime: any write changes
/// ctime) was verified before; those are left to the caller to copy
/// (without hashing), their digests returned.
fn copy_blobs(
    base: &BaseImage,
    layout: &Layout,
    memo: Option<&Memo>,
) -> std::result::Result<Vec<Digest>, LayoutError> {
    let mut verified = Vec::new();
    for l in base.layers() {
        if layout.has_blob(&l.digest) {
            continue;
        }
        let key = memo.and_then(|_| file_key(&base.layout.blob_path(&l.digest), &l.digest));
        match (memo, &key) {
            (Some(m), Some(k)) if m.get("verified", k).as_deref() == Some("ok") => {
                verified.push(l.digest.clone());
            }
            _ => {
                layout.copy_blob_from(&base.layout, &l.digest)?;
                if let (Some(m), Some(k)) = (memo, &key) {
                    m.put("verified", k, "ok");
                }
            }
        }
    }
    Ok(verified)
}

/// What identifies a file's bytes without reading them: its digest name,
/// device, inode, size, mtime and ctime.
fn file_key(path: &std::path::Path, digest: &Digest) -> Option<Digest> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Digest::of(
        format!(
            "verified v1 {digest} {} {} {} {}.{} {}.{}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
        .as_bytes(),
    ))
}
