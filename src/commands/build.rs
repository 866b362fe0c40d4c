//! `build`: find (or make) the release, get the base, run the engine, tag the
//! result in the layout, and optionally push it.

use crate::error::{Context as _, Result};
use serde_json::json;

use crate::cli::{BuildArgs, Engine as EngineKind};
use crate::credentials::{ChainEnv, chain_for};
use crate::engine::buildkit::BuildkitEngine;
use crate::engine::direct::DirectEngine;
use crate::engine::{BuildJob, BuildOutcome, Engine};
use crate::image::ImageRef;
use crate::layout::Layout;
use crate::progress::human_bytes;
use crate::settings::{BaseSpec, Settings};

/// Run `build`.
pub async fn run(settings: &Settings, a: &BuildArgs) -> Result<()> {
    let s = settings.build(a)?;
    let progress = super::progress(settings);
    let layout = Layout::create_or_open(&s.layout)
        .with_context(|| format!("opening the layout {}", s.layout.display()))?;
    for warning in &s.warnings {
        progress.say(format!("warning: {warning}"));
    }
    // Only a registry base is pulled; setting up the HTTP client (reading
    // the system's CA certificates) is a measurable part of a warm build.
    let pulls = matches!(s.base, BaseSpec::Image(ImageRef::Registry(_)));
    let pull_client = if s.offline || s.engine == EngineKind::Buildkit || !pulls {
        None
    } else {
        Some(super::client(
            settings,
            chain_for(None, None, ChainEnv::from_process()),
            None,
        )?)
    };
    let job = BuildJob {
        build: &s,
        layout: &layout,
        cache_dir: &settings.cache_dir,
        pull_client: pull_client.as_ref(),
        progress: &progress,
    };
    let outcome = match s.engine {
        EngineKind::Direct => build_with(&DirectEngine, &job).await?,
        EngineKind::Buildkit => build_with(&BuildkitEngine, &job).await?,
    };
    let tags = outcome.tags.clone();

    let pushed = match &s.push {
        Some(target) => Some(
            super::push::push_tags(
                settings,
                &layout,
                target,
                &tags,
                &a.creds,
                s.digest_file.as_deref(),
                &progress,
            )
            .await?,
        ),
        None => None,
    };
    if s.gc {
        if layout.is_being_written() {
            progress.say(format!(
                "gc: waiting for another command writing to {} to finish",
                layout.root().display()
            ));
        }
        let r = layout.gc()?;
        progress.say(format!(
            "gc: removed {} blobs ({})",
            r.removed.len(),
            human_bytes(r.bytes)
        ));
    }
    print_outcome(settings, &outcome, pushed.as_ref());
    Ok(())
}

async fn build_with(engine: &impl Engine, job: &BuildJob<'_>) -> Result<BuildOutcome> {
    tracing::debug!(engine = engine.name(), "building");
    engine.build(job).await
}

fn print_outcome(
    settings: &Settings,
    o: &BuildOutcome,
    pushed: Option<&crate::registry::PushReport>,
) {
    if settings.json {
        let mut v = json!(o);
        if let Some(p) = pushed {
            v["pushed"] = json!(p);
        }
        super::print_json(&v);
        return;
    }
    if !settings.quiet {
        for l in &o.layers {
            eprintln!(
                "  {:<7} {} {:>10}  {}{}",
                l.name,
                l.digest.short(),
                human_bytes(l.size),
                l.description,
                if l.reused && l.name != "base" {
                    " (unchanged)"
                } else {
                    ""
                }
            );
        }
    }
    for t in &o.tags {
        crate::out!("oci:{}:{t}@{}", o.layout, o.digest);
    }
    if let Some(p) = pushed {
        crate::out!("{}", p.reference);
    }
}
