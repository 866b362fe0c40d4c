//! `build`: find (or make) the release, get the base, run the engine, tag the
//! result in the layout, and optionally push it.

use std::path::{Path, PathBuf};

use crate::error::{Context as _, Error, Result};
use serde_json::json;

use crate::cache::Memo;
use crate::cli::{BuildArgs, Engine};
use crate::credentials::{ChainEnv, chain_for};
use crate::engine::base::{self, BaseSource};
use crate::engine::direct::{BuildOutcome, DirectBuild};
use crate::layout::Layout;
use crate::progress::Progress;
use crate::progress::human_bytes;
use crate::release::Release;
use crate::settings::{BuildSettings, Settings, validate_tag};
use crate::vcs::Vcs;

/// Run `build`.
pub async fn run(settings: &Settings, a: &BuildArgs) -> Result<()> {
    let s = settings.build(a)?;
    let progress = super::progress(settings);
    let layout = Layout::create_or_open(&s.layout)
        .with_context(|| format!("opening the layout {}", s.layout.display()))?;
    if s.engine == Engine::Direct && !crate::settings::is_numeric_user(&s.user) {
        progress.say(format!(
            "warning: user `{}` is not numeric: Kubernetes refuses to start it under runAsNonRoot \
             (\"image has non-numeric user\"); give UID[:GID], e.g. --user 65534:65534",
            s.user
        ));
    }
    let outcome = match s.engine {
        Engine::Direct => {
            // Held until the image is tagged: `gc` waits for it.
            let work = layout.work()?;
            direct(settings, &s, &layout, work.dir(), &progress).await?
        }
        Engine::Buildkit => {
            // The Dockerfile decides these; say so rather than drop them silently.
            for (flag, given) in [
                ("--env", !a.env.is_empty()),
                ("--port", !a.ports.is_empty()),
                ("--user", a.user.is_some()),
                ("--cmd", a.cmd.is_some()),
                ("--base", a.base.is_some()),
                ("--release", a.release.is_some()),
            ] {
                if given {
                    progress.say(format!(
                        "warning: {flag} is ignored with --engine buildkit (the Dockerfile decides)"
                    ));
                }
            }
            crate::engine::buildkit::build(&s, &a.buildkit, &layout, &s.tags, &progress).await?
        }
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

/// The direct engine: find (or make) the release, get the base, build.
async fn direct(
    settings: &Settings,
    s: &BuildSettings,
    layout: &Layout,
    scratch: &Path,
    progress: &Progress,
) -> Result<BuildOutcome> {
    if s.mix {
        run_mix_release(&s.project)?;
    }
    let release_path = match &s.release {
        Some(p) => p.clone(),
        None => {
            let p = find_release(&s.project)?;
            progress.say(format!("using release {}", p.display()));
            p
        }
    };
    let release = Release::open(&release_path, scratch, s.release_limits)?;
    let tags = if s.tags.is_empty() {
        vec![default_tag(release.version())]
    } else {
        s.tags.clone()
    };
    for t in &tags {
        validate_tag(t)?;
    }
    let cache = Layout::create_or_open(settings.cache_dir.join("bases")).with_context(|| {
        format!(
            "opening the base image cache {}",
            settings.cache_dir.display()
        )
    })?;
    let _cache_work = cache.work()?;
    let pull_client = if s.offline {
        None
    } else {
        Some(super::client(
            settings,
            chain_for(None, None, ChainEnv::from_process()),
            None,
        )?)
    };
    let base = base::resolve(
        &s.base,
        release.platform(),
        &BaseSource {
            client: pull_client.as_ref(),
            cache: &cache,
            progress,
        },
    )
    .await?;
    // The base's blobs first (verified), so the layout holds the whole image.
    let base = base::install(
        base,
        &s.base,
        release.platform(),
        layout,
        &BaseSource {
            client: pull_client.as_ref(),
            cache: &cache,
            progress,
        },
    )
    .await?;
    let vcs = Vcs::discover(&s.project);
    let memo = Memo::new(&settings.cache_dir);
    let build = DirectBuild {
        settings: s,
        release: &release,
        base: &base,
        layout,
        vcs: &vcs,
        tags: &tags,
        progress,
        memo: &memo,
    };
    tokio::task::block_in_place(|| build.run())
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

/// A release version as a tag: `+` (build metadata) is not allowed in tags.
pub fn default_tag(version: &str) -> String {
    version.replace('+', "_")
}

/// The one release under `PROJECT/_build/prod`: `rel/NAME` directories first,
/// else `NAME-VSN.tar.gz` tarballs.
pub fn find_release(project: &Path) -> Result<PathBuf> {
    let prod = project.join("_build/prod");
    let rel = prod.join("rel");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&rel)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("releases").is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    match dirs.len() {
        1 => return Ok(dirs.remove(0)),
        0 => {}
        _ => {
            return Err(Error::usage(format!(
                "{} holds several releases ({}); pick one with --release",
                rel.display(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut tars: Vec<PathBuf> = std::fs::read_dir(&prod)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    tars.sort();
    match tars.len() {
        1 => Ok(tars.remove(0)),
        0 => Err(Error::input(format!(
            "no release found under {} (looked for rel/NAME/ and NAME-VSN.tar.gz); run `MIX_ENV=prod mix release`, pass --mix, or name one with --release",
            prod.display()
        ))),
        _ => Err(Error::usage(format!(
            "{} holds several release tarballs; pick one with --release",
            prod.display()
        ))),
    }
}

fn run_mix_release(project: &Path) -> Result<()> {
    eprintln!("running MIX_ENV=prod mix release in {}", project.display());
    let status = crate::process::command("mix")
        .args(["release", "--overwrite"])
        .current_dir(project)
        .env("MIX_ENV", "prod")
        // stdout is for results (--json); mix's chatter goes to stderr.
        .stdout(std::io::stderr())
        .status()
        .with_context(|| {
            format!(
                "starting `mix release` in {} (is Elixir installed?)",
                project.display()
            )
        })?;
    if !status.success() {
        return Err(Error::Engine(format!(
            "`MIX_ENV=prod mix release` failed in {} ({status})",
            project.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_metadata_in_a_version_becomes_a_valid_tag() {
        assert_eq!(default_tag("1.2.3+abc"), "1.2.3_abc");
        assert!(validate_tag(&default_tag("1.2.3+abc")).is_ok());
    }
}
