//! The BuildKit engine: `docker/Dockerfile` (embedded, or the project's own
//! with `--dockerfile`) built by BuildKit, the result imported into the OCI
//! layout and tagged, so `push` and `inspect` work on it as on a direct build.
//!
//! Three ways to reach BuildKit, detected in this order (or forced with
//! `--builder`):
//!
//! 1. `buildctl` against a buildkitd named by `--buildkit-host` or
//!    `BUILDKIT_HOST` (local or remote: a shared buildkitd, a pool on the
//!    cluster), output `--output type=oci,dest=FILE`;
//! 2. `docker buildx build`, output `type=oci` too (or, on buildx's `docker`
//!    driver, which has no OCI exporter, `--load` into the engine and then as 3);
//! 3. `docker build` with `DOCKER_BUILDKIT=1` on a Docker engine
//!    (`DOCKER_HOST` honoured): built under a temporary tag, `docker save`d to
//!    a temporary tar, imported ([`crate::archive`]), the tag removed.
//!
//! The Docker client is `$GUILDHALL_IMAGE_DOCKER`, else `docker` on `PATH`.
//! Each engine's command line is made by a pure function
//! ([`buildctl_command`], [`buildx_command`], [`docker_build_command`]).
//! Only the `docker build` path runs in this crate's tests, against a real
//! Docker engine: buildx and buildctl are not packaged for Debian 12, so their
//! command lines are unit-tested, not run.
//!
//! Secrets (`--secret id=ID,src=FILE|env=VAR`) are handed to the engine by
//! reference only: their values never appear in a command line, in output or
//! in the image (BuildKit mounts them for one `RUN` step).
//!
//! Tags and labels: the tool passes the OCI labels as build arguments
//! (`IMAGE_TITLE`, `IMAGE_VERSION` from `mix.exs` when it states them
//! literally; `IMAGE_SOURCE`, `IMAGE_REVISION` from git or the flags;
//! `IMAGE_CREATED` from `SOURCE_DATE_EPOCH` or the commit time, as the direct
//! engine does). After the import, the release in the image
//! (`WORKDIR/releases/VSN/NAME.rel`) is authoritative: an empty or missing
//! title/version label is filled from it (and empty `org.opencontainers.*`
//! labels dropped), and `--label`s are applied, by writing a new config and
//! manifest (annotated with the engine's config digest, so an unchanged
//! rebuild is recognised). With no `--tag`, the image is tagged with its
//! version label. `--env`, `--port`, `--user` and `--cmd` are the direct
//! engine's: with BuildKit the Dockerfile decides those.

mod command;
mod context;
mod detect;
mod labels;
mod run;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::io as io_err;

use crate::archive::{self, Imported};
use crate::engine::BuildOutcome;
use crate::image::Digest;
use crate::image::mutate::rfc3339_from_epoch;
use crate::layout::Layout;
use crate::progress::{Mode, Progress};
use crate::settings::BuildSettings;
use crate::vcs::Vcs;

pub use command::{
    BuildRequest, EngineFlags, Invocation, Output, SecretSource, SecretSpec, buildctl_command,
    buildx_command, cache_spec, docker_build_command,
};
pub use context::{DOCKERFILE, DOCKERIGNORE, stage_context};
pub use detect::{Detected, EngineEnv, Probe, SystemProbe, detect};
use labels::finish_labels;
pub(crate) use run::run_streamed;

/// The BuildKit engine's options, validated once by `settings` from the
/// flags (`--builder`, `--build-arg`, `--secret`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildkitOptions {
    /// The engine to use; `None` detects one.
    pub builder: Option<Builder>,
    /// The buildkitd address for buildctl (else `$BUILDKIT_HOST`).
    pub buildkit_host: Option<String>,
    /// A Dockerfile of the project's own instead of the embedded one.
    pub dockerfile: Option<PathBuf>,
    /// `--build-arg KEY=VALUE`, in order.
    pub build_args: Vec<(String, String)>,
    /// What passes through to the engine.
    pub flags: EngineFlags,
}

/// The engine that drives `docker/Dockerfile` through BuildKit.
pub struct BuildkitEngine;

impl crate::engine::Engine for BuildkitEngine {
    fn name(&self) -> &'static str {
        "buildkit"
    }

    async fn build(&self, job: &crate::engine::BuildJob<'_>) -> crate::error::Result<BuildOutcome> {
        tokio::task::block_in_place(|| {
            build_blocking(job.build, job.layout, &job.build.tags, job.progress)
        })
    }
}

/// A way to reach BuildKit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    /// `buildctl` against a buildkitd.
    Buildctl,
    /// `docker buildx build`.
    Buildx,
    /// `docker build` with `DOCKER_BUILDKIT=1`.
    Docker,
}

impl fmt::Display for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Builder::Buildctl => "buildctl",
            Builder::Buildx => "buildx",
            Builder::Docker => "docker",
        })
    }
}

impl FromStr for Builder {
    type Err = BuildkitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "buildctl" => Ok(Builder::Buildctl),
            "buildx" => Ok(Builder::Buildx),
            "docker" => Ok(Builder::Docker),
            _ => Err(BuildkitError::BadOption {
                flag: "--builder",
                reason: format!("`{s}` is not one of buildctl, buildx, docker"),
            }),
        }
    }
}

/// What went wrong driving BuildKit.
#[derive(Debug, thiserror::Error)]
pub enum BuildkitError {
    /// A flag's value is unusable.
    #[error("{flag}: {reason}")]
    BadOption {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// No engine could be found (or the forced one is not usable).
    #[error(
        "no BuildKit engine found. Looked for: {}.\nTo get one: install Docker Engine 20.10 or later and start it \
         (Debian: apt-get install docker.io; DOCKER_HOST selects another engine), or install buildctl and point \
         BUILDKIT_HOST (or --buildkit-host) at a buildkitd; set GUILDHALL_IMAGE_DOCKER to use another docker client. \
         Or build without Docker: --engine direct",
        looked_for.join("; ")
    )]
    NoEngine {
        /// Each place looked, and what was found there.
        looked_for: Vec<String>,
    },
    /// The engine's program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The build (or a docker save) failed.
    #[error("{builder} {step_text} ({status}); its last lines:\n{tail}", step_text = match step {
        Some(s) => format!("failed at step `{s}`"),
        None => "failed".to_owned(),
    })]
    Failed {
        /// The engine, and what it was doing (`docker build`, `docker save`, …).
        builder: String,
        /// The Dockerfile step that failed, when the engine's output names it.
        step: Option<String>,
        /// The exit status.
        status: String,
        /// The last lines of its output.
        tail: String,
    },
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] crate::error::IoError),
    /// No tag was given and the image says nothing about its version.
    #[error(
        "no --tag given and the built image has no version (no org.opencontainers.image.version label and no \
         release under {workdir}/releases): pass --tag"
    )]
    NoVersion {
        /// The image's working directory, where the release was looked for.
        workdir: String,
    },
}

impl BuildkitError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        match self {
            BuildkitError::BadOption { .. } => ExitCode::Usage,
            BuildkitError::NoVersion { .. } => ExitCode::Usage,
            BuildkitError::Io(_) => ExitCode::Failure,
            BuildkitError::NoEngine { .. }
            | BuildkitError::Spawn { .. }
            | BuildkitError::Failed { .. } => ExitCode::Engine,
        }
    }
}

// ---------------------------------------------------------------- build ---

/// Build the image with BuildKit into `layout`, tagged with `tags` (or, when
/// empty, its version).
pub fn build_blocking(
    s: &BuildSettings,
    layout: &Layout,
    tags: &[String],
    progress: &Progress,
) -> crate::error::Result<BuildOutcome> {
    let bk = &s.buildkit;
    let env = EngineEnv::from_env(bk.buildkit_host.as_deref());
    let engine = detect(bk.builder, &env, &SystemProbe)?;
    progress.say(format!(
        "building with {} ({})",
        engine.builder,
        engine.program.display()
    ));

    // Keeps `gc` out while blobs of the untagged image are written.
    let session = layout.work()?;
    let scratch = session.dir();
    let work = tempfile::Builder::new()
        .prefix("buildkit-")
        .tempdir_in(scratch)
        .map_err(io_err("creating a temporary directory in", scratch))?;

    let project_facts = crate::release::project::MixFacts::read(&s.project);
    let vcs = Vcs::discover(&s.project);
    let (dockerfile, context) = match &bk.dockerfile {
        Some(p) => (p.clone(), s.project.clone()),
        None => {
            let df = work.path().join("Dockerfile");
            fs::write(&df, DOCKERFILE).map_err(io_err("writing", &df))?;
            let context = if s.project.join(".dockerignore").exists() {
                s.project.clone()
            } else {
                let staged = work.path().join("context");
                stage_context(&s.project, &staged, &[layout.root().to_owned()])?;
                staged
            };
            (df, context)
        }
    };

    let mut build_args: Vec<(String, String)> = Vec::new();
    let created = rfc3339_from_epoch(s.source_date_epoch.or(vcs.commit_time).unwrap_or(0));
    let mut label_arg = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            build_args.push((k.to_owned(), v));
        }
    };
    label_arg("IMAGE_TITLE", project_facts.app.clone());
    label_arg("IMAGE_VERSION", project_facts.version.clone());
    label_arg(
        "IMAGE_SOURCE",
        s.source.clone().or_else(|| vcs.source.clone()),
    );
    label_arg(
        "IMAGE_REVISION",
        s.revision.clone().or_else(|| vcs.revision.clone()),
    );
    label_arg("IMAGE_CREATED", Some(created));
    if let Some(e) = s.source_date_epoch {
        build_args.push(("SOURCE_DATE_EPOCH".into(), e.to_string()));
    }
    build_args.extend(bk.build_args.iter().cloned());
    let req = BuildRequest {
        context,
        dockerfile,
        build_args,
        flags: bk.flags.clone(),
        plain_progress: !io::stderr().is_terminal() || progress.mode() != Mode::Bars,
    };
    let echo = progress.mode() != Mode::Quiet;

    let started = Instant::now();
    let archive = work.path().join("image.tar");
    let imported = match (engine.builder, engine.buildx_loads) {
        (Builder::Buildctl, _) => {
            let inv = buildctl_command(
                &engine.program,
                engine.addr.as_deref().unwrap_or_default(),
                &req,
                &archive,
            );
            tracing::debug!("running {inv}");
            run_streamed(&inv, "buildctl build", echo)?;
            import_timed(layout, &archive, progress)?
        }
        (Builder::Buildx, false) => {
            let inv = buildx_command(&engine.program, &req, &Output::OciTar(archive.clone()));
            tracing::debug!("running {inv}");
            run_streamed(&inv, "docker buildx build", echo)?;
            import_timed(layout, &archive, progress)?
        }
        (Builder::Buildx, true) | (Builder::Docker, _) => {
            if !req.flags.cache_to.is_empty() && engine.builder == Builder::Docker {
                progress.say("warning: --cache-to is ignored by `docker build` (use buildx or buildctl to export a build cache)");
            }
            let tag = temp_tag();
            let iidfile = work.path().join("iid");
            let (inv, what) = if engine.builder == Builder::Docker {
                (
                    docker_build_command(&engine.program, &req, &tag, &iidfile),
                    "docker build",
                )
            } else {
                (
                    buildx_command(
                        &engine.program,
                        &req,
                        &Output::DockerImage {
                            tag: tag.clone(),
                            iidfile: iidfile.clone(),
                        },
                    ),
                    "docker buildx build",
                )
            };
            tracing::debug!("running {inv}");
            run_streamed(&inv, what, echo)?;
            // The same image ID as an image already in the layout (unchanged
            // sources): nothing to export or import.
            let known = fs::read_to_string(&iidfile)
                .ok()
                .and_then(|id| id.trim().parse::<Digest>().ok())
                .and_then(|id| archive::find_by_config(layout, &id));
            let result = match known {
                Some(found) => {
                    progress.say(format!(
                        "image {} is already in the layout",
                        found.config.short()
                    ));
                    Ok(found)
                }
                None => save_and_import(&engine.program, &tag, &archive, layout, progress),
            };
            // The temporary tag goes whatever happened; the engine keeps its build cache.
            let rmi = Invocation {
                program: engine.program.clone(),
                args: vec!["rmi".into(), tag.clone().into()],
                env: vec![],
            };
            if let Err(e) = run_streamed(&rmi, "docker rmi", false) {
                progress.say(format!(
                    "warning: could not remove the temporary tag {tag}: {e}"
                ));
            }
            result?
        }
    };
    let _ = fs::remove_file(&archive);
    tracing::debug!(
        "build and import took {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let finished = finish_labels(layout, imported, &s.labels)?;
    let tags: Vec<String> = if tags.is_empty() {
        match &finished.version {
            Some(v) => {
                // As the direct engine does: `+` (build metadata) is not allowed in tags.
                let tag = v.replace('+', "_");
                crate::settings::validate_tag(&tag)?;
                vec![tag]
            }
            None => {
                return Err(BuildkitError::NoVersion {
                    workdir: finished.workdir.clone(),
                }
                .into());
            }
        }
    } else {
        tags.to_vec()
    };
    let img = &finished.imported;
    layout.set_tags(&img.media_type, &img.digest, &tags)?;
    Ok(BuildOutcome {
        digest: img.digest.clone(),
        size: img.size,
        config: img.config.clone(),
        platform: img.platform.clone(),
        tags,
        layout: layout.root().display().to_string(),
        release: match (&finished.title, &finished.version) {
            (Some(t), Some(v)) => format!("{t} {v}"),
            (None, Some(v)) => v.clone(),
            _ => String::new(),
        },
        layers: img.layers.clone(),
    })
}

fn import_timed(
    layout: &Layout,
    archive: &Path,
    progress: &Progress,
) -> Result<Imported, archive::ImportError> {
    let t = Instant::now();
    let imported = archive::import_archive(layout, archive, &[], progress)?;
    progress.say(format!(
        "imported into {} in {:.1}s",
        layout.root().display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(imported)
}

fn save_and_import(
    docker: &Path,
    tag: &str,
    archive: &Path,
    layout: &Layout,
    progress: &Progress,
) -> crate::error::Result<Imported> {
    let t = Instant::now();
    let save = Invocation {
        program: docker.to_owned(),
        args: vec!["save".into(), "--output".into(), archive.into(), tag.into()],
        env: vec![],
    };
    run_streamed(&save, "docker save", false)?;
    progress.say(format!(
        "docker save took {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    Ok(import_timed(layout, archive, progress)?)
}

/// A tag no other build uses: `guildhall-image-tmp:PID-NANOS`.
fn temp_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("guildhall-image-tmp:{}-{nanos}", std::process::id())
}
