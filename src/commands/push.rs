//! `push`: publish an image from the layout to a target with the tool's own
//! registry client; print `HOST/REPO@sha256:…` only once the registry has
//! confirmed the manifest.

use std::path::Path;

use crate::error::{Context as _, Error, Result};
use serde_json::json;

use crate::cli::{CredentialArgs, PushArgs};
use crate::image::{ConfigFile, Descriptor, Manifest, RegistryRef};
use crate::layout::{Layout, TaggedImage};
use crate::progress::Progress;
use crate::registry::{PushOptions, PushReport, PushRequest};
use crate::settings::{Settings, Target};

/// Run `push`.
pub async fn run(settings: &Settings, a: &PushArgs) -> Result<()> {
    let s = settings.push(a)?;
    let progress = super::progress(settings);
    let layout = Layout::open(&s.layout)
        .with_context(|| format!("opening the layout {}", s.layout.display()))?;
    let report = match push_tags(
        settings,
        &layout,
        &s.target,
        &s.tags,
        &a.creds,
        s.digest_file.as_deref(),
        &progress,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            if settings.json {
                super::print_json(&error_json(&e));
            }
            return Err(e);
        }
    };
    if settings.json {
        super::print_json(&json!(report));
    } else {
        crate::out!("{}", report.reference);
    }
    Ok(())
}

/// The `--json` report of a failed push: the message, the exit code and,
/// for authentication failures, their kind (`wrong_credentials`: the
/// credentials were refused; `no_permission`: they are valid but may not
/// write there; `no_credentials`), with the registry and repository.
pub fn error_json(e: &Error) -> serde_json::Value {
    let code = e.exit_code() as u8;
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    while let Some(next) = chain.last().and_then(|c| c.source()) {
        chain.push(next);
    }
    let registry_error = e.registry();
    let mut error = json!({
        "message": chain.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(": "),
        "exit_code": code,
    });
    if let Some(re) = registry_error {
        if let Some(kind) = re.auth_kind() {
            error["kind"] = json!(kind);
        }
        match re {
            crate::registry::RegistryError::Unauthorized { registry, .. } => {
                error["registry"] = json!(registry);
            }
            crate::registry::RegistryError::Denied {
                registry,
                repository,
                ..
            } => {
                error["registry"] = json!(registry);
                error["repository"] = json!(repository);
            }
            _ => {}
        }
    }
    json!({ "error": error })
}

/// Push the image the `tags` name in `layout` (they must all name the same
/// one) to `target` under each tag; write the digest to `digest_file`.
pub async fn push_tags(
    settings: &Settings,
    layout: &Layout,
    target: &Target,
    tags: &[String],
    creds: &CredentialArgs,
    digest_file: Option<&Path>,
    progress: &Progress,
) -> Result<PushReport> {
    let first = layout.resolve(Some(&tags[0]))?;
    for t in &tags[1..] {
        let other = layout.resolve(Some(t))?;
        if other.digest != first.digest {
            return Err(Error::usage(format!(
                "tags {} and {t} name different images in {}; push them separately",
                tags[0],
                layout.root().display()
            )));
        }
    }
    let chain = super::credentials(creds, Some(&target.repository.registry))?;
    let client = super::client(settings, chain, Some(target))?;
    let opts = PushOptions {
        mount_from: mount_sources(layout, &first, &target.repository),
        ..PushOptions::default()
    };
    let image = Descriptor::new(first.media_type.clone(), first.digest.clone(), first.size);
    let report = client
        .push(PushRequest {
            source: layout,
            image: &image,
            target: &target.repository,
            tags,
            options: &opts,
            progress,
        })
        .await
        .with_context(|| format!("pushing {} to {}", tags.join(", "), target.repository))?;
    if let Some(f) = digest_file {
        std::fs::write(f, format!("{}\n", report.digest))
            .with_context(|| format!("writing the digest to {}", f.display()))?;
    }
    Ok(report)
}

/// Repositories of the target's registry that likely hold some of the
/// image's blobs already: the base's (from the `base.name` label), so its
/// layers are mounted instead of uploaded.
fn mount_sources(layout: &Layout, image: &TaggedImage, target: &RegistryRef) -> Vec<String> {
    let label = || -> Option<String> {
        let m = Manifest::parse(
            &image.digest.to_string(),
            &layout.read_blob(&image.digest).ok()?,
        )
        .ok()?;
        let cfg = ConfigFile::parse(
            &m.config.digest.to_string(),
            &layout.read_blob(&m.config.digest).ok()?,
        )
        .ok()?;
        cfg.labels().remove("org.opencontainers.image.base.name")
    };
    match label().and_then(|name| name.parse::<RegistryRef>().ok()) {
        Some(base) if base.registry == target.registry && base.repository != target.repository => {
            vec![base.repository]
        }
        _ => Vec::new(),
    }
}
