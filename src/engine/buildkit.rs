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

use crate::error::io as io_err;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::archive::{self, Imported};
use crate::cli::BuildkitArgs;
use crate::engine::direct::BuildOutcome;
use crate::image::mutate::{self, rfc3339_from_epoch};
use crate::image::{ConfigFile, Descriptor, Manifest};
use crate::image::{Digest, media};
use crate::layout::Layout;
use crate::progress::{Mode, Progress};
use crate::settings::BuildSettings;
use crate::vcs::Vcs;

/// The Dockerfile shipped in `docker/`, so the tool builds from any checkout.
pub const DOCKERFILE: &str = include_str!("../../docker/Dockerfile");
/// The `.dockerignore` shipped in `docker/`, used when the project has none.
pub const DOCKERIGNORE: &str = include_str!("../../docker/.dockerignore");

const TITLE: &str = "org.opencontainers.image.title";
const VERSION: &str = "org.opencontainers.image.version";

/// Lines of engine output kept for the error when a build fails.
const TAIL_LINES: usize = 30;

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

// ------------------------------------------------------------- requests ---

/// Where the engine's result goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An OCI archive at this path (`--output type=oci,dest=…`).
    OciTar(PathBuf),
    /// An image in the Docker engine under this tag (`-t` / `--load`), its ID
    /// written to `iidfile`.
    DockerImage {
        /// The temporary tag.
        tag: String,
        /// `--iidfile`.
        iidfile: PathBuf,
    },
}

/// A BuildKit secret: `id=ID` plus `src=FILE` or `env=VAR`. Holds no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id `RUN --mount=type=secret,id=…` names.
    pub id: String,
    /// Where the engine's client reads it.
    pub source: SecretSource,
}

/// Where a secret's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file.
    File(PathBuf),
    /// An environment variable of the client process.
    Env(String),
}

impl SecretSpec {
    /// The form every engine takes (`id=ID,src=FILE` / `id=ID,env=VAR`).
    pub fn to_arg(&self) -> String {
        match &self.source {
            SecretSource::File(p) => format!("id={},src={}", self.id, p.display()),
            SecretSource::Env(v) => format!("id={},env={v}", self.id),
        }
    }
}

impl FromStr for SecretSpec {
    type Err = BuildkitError;
    /// `id=ID,src=FILE`, `id=ID,source=FILE`, `id=ID,env=VAR`, optionally with
    /// `type=file|env`; `env=VAR` alone means `id=VAR`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| BuildkitError::BadOption {
            flag: "--secret",
            reason,
        };
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for field in s.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(|| {
                bad(format!(
                    "`{field}` is not KEY=VALUE (expected id=ID,src=FILE or id=ID,env=VAR)"
                ))
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_owned()),
                "src" | "source" => src = Some(v.to_owned()),
                "env" => env = Some(v.to_owned()),
                "type" => kind = Some(v.to_owned()),
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}` (expected id, src, env, type)"
                    )));
                }
            }
        }
        let source = match (src, env, kind.as_deref()) {
            (Some(p), None, None | Some("file")) => SecretSource::File(PathBuf::from(p)),
            (None, Some(v), None | Some("env")) => SecretSource::Env(v),
            // `type=env,src=VAR` is buildx's spelling.
            (Some(v), None, Some("env")) => SecretSource::Env(v),
            (None, None, _) => return Err(bad("needs src=FILE or env=VAR".into())),
            _ => return Err(bad("give one of src=FILE or env=VAR, matching type=".into())),
        };
        let id = match (id, &source) {
            (Some(i), _) if !i.is_empty() => i,
            (None, SecretSource::Env(v)) => v.clone(),
            _ => return Err(bad("needs id=ID".into())),
        };
        Ok(SecretSpec { id, source })
    }
}

/// Everything an engine's command line is made from. Plain data.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// `--build-arg`s, in order (a later one wins for the same key).
    pub build_args: Vec<(String, String)>,
    /// Secrets.
    pub secrets: Vec<SecretSpec>,
    /// Network mode of `RUN` steps.
    pub network: Option<String>,
    /// Target platform(s).
    pub platform: Option<String>,
    /// Stage to stop at.
    pub target: Option<String>,
    /// Ignore the build cache.
    pub no_cache: bool,
    /// Cache sources: a registry ref, or a full BuildKit spec (`type=…,…`).
    pub cache_from: Vec<String>,
    /// Cache destinations, likewise.
    pub cache_to: Vec<String>,
    /// `--progress=plain` (stderr is not a terminal).
    pub plain_progress: bool,
}

impl BuildRequest {
    fn dockerfile_dir_and_name(&self) -> (PathBuf, String) {
        let dir = self
            .dockerfile
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let name = self
            .dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        (dir, name)
    }
}

/// A command to run: program, arguments, extra environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment added to the tool's own.
    pub env: Vec<(String, String)>,
}

impl Invocation {
    /// The arguments as text (for tests and `-v` output; they hold no secret values).
    pub fn args_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn command(&self) -> Command {
        let mut c = crate::process::command(&self.program);
        c.args(&self.args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{k}={v} ")?;
        }
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.contains([' ', '"', '\'']) {
                write!(f, " '{}'", a.replace('\'', "'\\''"))?
            } else {
                write!(f, " {a}")?
            }
        }
        Ok(())
    }
}

/// Build args with later values winning, first position kept.
fn dedup_args(args: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in args {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// A cache ref as a BuildKit cache spec: `REF` → `type=registry,ref=REF`
/// (plus `mode=max` for exports, so the builder stage is cached too).
pub fn cache_spec(value: &str, export: bool) -> String {
    if value.contains('=') {
        value.to_owned()
    } else if export {
        format!("type=registry,ref={value},mode=max")
    } else {
        format!("type=registry,ref={value}")
    }
}

/// `buildctl --addr HOST build …` for a request whose output is an OCI tar.
pub fn buildctl_command(
    buildctl: &Path,
    addr: &str,
    req: &BuildRequest,
    dest: &Path,
) -> Invocation {
    let (df_dir, df_name) = req.dockerfile_dir_and_name();
    let mut a: Vec<OsString> = vec![
        "--addr".into(),
        addr.into(),
        "build".into(),
        "--frontend".into(),
        "dockerfile.v0".into(),
    ];
    a.push("--local".into());
    a.push(os_concat("context=", &req.context));
    a.push("--local".into());
    a.push(os_concat("dockerfile=", &df_dir));
    a.push("--opt".into());
    a.push(format!("filename={df_name}").into());
    for (k, v) in dedup_args(&req.build_args) {
        a.push("--opt".into());
        a.push(format!("build-arg:{k}={v}").into());
    }
    if let Some(t) = &req.target {
        a.push("--opt".into());
        a.push(format!("target={t}").into());
    }
    if let Some(p) = &req.platform {
        a.push("--opt".into());
        a.push(format!("platform={p}").into());
    }
    if let Some(n) = &req.network {
        a.push("--opt".into());
        a.push(format!("force-network-mode={n}").into());
        if n == "host" {
            a.push("--allow".into());
            a.push("network.host".into());
        }
    }
    if req.no_cache {
        a.push("--no-cache".into());
    }
    for s in &req.secrets {
        a.push("--secret".into());
        a.push(s.to_arg().into());
    }
    for c in &req.cache_from {
        a.push("--import-cache".into());
        a.push(cache_spec(c, false).into());
    }
    for c in &req.cache_to {
        a.push("--export-cache".into());
        a.push(cache_spec(c, true).into());
    }
    a.push("--progress".into());
    a.push(if req.plain_progress { "plain" } else { "auto" }.into());
    a.push("--output".into());
    a.push(os_concat("type=oci,dest=", dest));
    Invocation {
        program: buildctl.to_owned(),
        args: a,
        env: vec![],
    }
}

/// `docker buildx build …`; `output` is an OCI tar, or (buildx's `docker`
/// driver) `--load` under a tag.
pub fn buildx_command(docker: &Path, req: &BuildRequest, output: &Output) -> Invocation {
    let mut a: Vec<OsString> = vec!["buildx".into(), "build".into()];
    common_docker_args(&mut a, req);
    for c in &req.cache_from {
        a.push("--cache-from".into());
        a.push(cache_spec(c, false).into());
    }
    for c in &req.cache_to {
        a.push("--cache-to".into());
        a.push(cache_spec(c, true).into());
    }
    match output {
        Output::OciTar(dest) => {
            a.push("--output".into());
            a.push(os_concat("type=oci,dest=", dest));
        }
        Output::DockerImage { tag, iidfile } => {
            a.push("--load".into());
            a.push("--tag".into());
            a.push(tag.into());
            a.push("--iidfile".into());
            a.push(iidfile.into());
        }
    }
    a.push(req.context.clone().into());
    Invocation {
        program: docker.to_owned(),
        args: a,
        env: vec![],
    }
}

/// `DOCKER_BUILDKIT=1 docker build …` into the engine under `tag`.
/// `docker build` has no registry cache export: `cache_to` is left out (the
/// caller warns); `cache_from` names images (`--cache-from REF`).
pub fn docker_build_command(
    docker: &Path,
    req: &BuildRequest,
    tag: &str,
    iidfile: &Path,
) -> Invocation {
    let mut a: Vec<OsString> = vec!["build".into()];
    common_docker_args(&mut a, req);
    for c in &req.cache_from {
        a.push("--cache-from".into());
        // Classic `docker build` takes image refs only.
        let r = c
            .split(',')
            .find_map(|f| f.strip_prefix("ref="))
            .unwrap_or(c);
        a.push(r.into());
    }
    a.push("--tag".into());
    a.push(tag.into());
    a.push("--iidfile".into());
    a.push(iidfile.into());
    a.push(req.context.clone().into());
    Invocation {
        program: docker.to_owned(),
        args: a,
        env: vec![("DOCKER_BUILDKIT".into(), "1".into())],
    }
}

fn common_docker_args(a: &mut Vec<OsString>, req: &BuildRequest) {
    a.push("--file".into());
    a.push(req.dockerfile.clone().into());
    for (k, v) in dedup_args(&req.build_args) {
        a.push("--build-arg".into());
        a.push(format!("{k}={v}").into());
    }
    for s in &req.secrets {
        a.push("--secret".into());
        a.push(s.to_arg().into());
    }
    if let Some(n) = &req.network {
        a.push("--network".into());
        a.push(n.into());
    }
    if let Some(p) = &req.platform {
        a.push("--platform".into());
        a.push(p.into());
    }
    if let Some(t) = &req.target {
        a.push("--target".into());
        a.push(t.into());
    }
    if req.no_cache {
        a.push("--no-cache".into());
    }
    a.push("--progress".into());
    a.push(if req.plain_progress { "plain" } else { "auto" }.into());
}

fn os_concat(prefix: &str, p: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(p.as_os_str());
    s
}

// ------------------------------------------------------------ detection ---

/// What detection looks at, gathered from the environment (a struct so tests
/// can describe any machine).
#[derive(Clone, Debug, Default)]
pub struct EngineEnv {
    /// The Docker client (`$GUILDHALL_IMAGE_DOCKER`, else `docker` on `PATH`).
    pub docker: Option<PathBuf>,
    /// `buildctl` on `PATH`.
    pub buildctl: Option<PathBuf>,
    /// `--buildkit-host`, else `$BUILDKIT_HOST`.
    pub buildkit_host: Option<String>,
    /// `$DOCKER_HOST`, for messages.
    pub docker_host: Option<String>,
}

impl EngineEnv {
    /// Read the process environment and `PATH`.
    pub fn from_env(buildkit_host_flag: Option<&str>) -> EngineEnv {
        let docker = match std::env::var_os("GUILDHALL_IMAGE_DOCKER").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => find_on_path("docker"),
        };
        EngineEnv {
            docker,
            buildctl: find_on_path("buildctl"),
            buildkit_host: buildkit_host_flag
                .map(str::to_owned)
                .or_else(|| std::env::var("BUILDKIT_HOST").ok())
                .filter(|h| !h.trim().is_empty()),
            docker_host: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
        }
    }
}

/// The engine chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    /// Which.
    pub builder: Builder,
    /// Its program (`buildctl`, or the docker client).
    pub program: PathBuf,
    /// The buildkitd address (buildctl).
    pub addr: Option<String>,
    /// buildx's driver has no OCI exporter (the `docker` driver): load, then save.
    pub buildx_loads: bool,
}

/// Probes detection runs (a trait so tests can answer without processes).
pub trait Probe {
    /// `docker buildx version` works; with the current builder's driver name.
    fn buildx(&self, docker: &Path, env: &EngineEnv) -> Result<Option<String>, String>;
    /// The Docker engine answers `docker version`.
    fn docker_engine(&self, docker: &Path, env: &EngineEnv) -> Result<(), String>;
}

/// Probes that run the real programs (with `DOCKER_HOST` from the [`EngineEnv`]).
pub struct SystemProbe;

impl Probe for SystemProbe {
    fn buildx(&self, docker: &Path, env: &EngineEnv) -> Result<Option<String>, String> {
        quick(docker, &["buildx", "version"], env)?;
        let inspect = quick(docker, &["buildx", "inspect"], env).unwrap_or_default();
        Ok(inspect.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Driver:")
                .map(|d| d.trim().to_owned())
        }))
    }
    fn docker_engine(&self, docker: &Path, env: &EngineEnv) -> Result<(), String> {
        quick(docker, &["version", "--format", "{{.Server.Version}}"], env).map(|_| ())
    }
}

fn quick(program: &Path, args: &[&str], env: &EngineEnv) -> Result<String, String> {
    let mut cmd = crate::process::command(program);
    if let Some(h) = &env.docker_host {
        cmd.env("DOCKER_HOST", h);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned();
        Err(if line.is_empty() {
            format!("exited with {}", out.status)
        } else {
            line
        })
    }
}

/// Choose the engine: `forced` (from `--builder`) or the first of buildctl
/// (when a buildkitd is named), buildx, docker that is usable.
pub fn detect(
    forced: Option<Builder>,
    env: &EngineEnv,
    probe: &dyn Probe,
) -> Result<Engine, BuildkitError> {
    let mut looked = Vec::new();
    let want = |b: Builder| forced.is_none() || forced == Some(b);

    if want(Builder::Buildctl) {
        match (&env.buildkit_host, &env.buildctl) {
            (Some(addr), Some(prog)) => {
                return Ok(Engine {
                    builder: Builder::Buildctl,
                    program: prog.clone(),
                    addr: Some(addr.clone()),
                    buildx_loads: false,
                });
            }
            (Some(addr), None) => looked.push(format!(
                "buildctl for BUILDKIT_HOST={addr} (buildctl is not on PATH)"
            )),
            (None, _) => looked
                .push("buildctl (no BUILDKIT_HOST or --buildkit-host names a buildkitd)".into()),
        }
    }
    let docker = env.docker.as_ref();
    if want(Builder::Buildx) {
        match docker {
            None => looked.push("docker buildx (no docker client: GUILDHALL_IMAGE_DOCKER is unset and docker is not on PATH)".into()),
            Some(d) => match probe.buildx(d, env) {
                Ok(driver) => {
                    return Ok(Engine {
                        builder: Builder::Buildx,
                        program: d.clone(),
                        addr: None,
                        buildx_loads: driver.as_deref() == Some("docker"),
                    });
                }
                Err(e) => looked.push(format!("docker buildx ({} buildx: {e})", d.display())),
            },
        }
    }
    if want(Builder::Docker) {
        match docker {
            None => looked.push("a Docker engine (no docker client: GUILDHALL_IMAGE_DOCKER is unset and docker is not on PATH)".into()),
            Some(d) => match probe.docker_engine(d, env) {
                Ok(()) => return Ok(Engine { builder: Builder::Docker, program: d.clone(), addr: None, buildx_loads: false }),
                Err(e) => looked.push(format!(
                    "a Docker engine at {} ({} version: {e})",
                    env.docker_host.as_deref().unwrap_or("the default socket"),
                    d.display()
                )),
            },
        }
    }
    Err(BuildkitError::NoEngine { looked_for: looked })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

// -------------------------------------------------------------- running ---

/// Run an engine command, streaming its output to stderr (unless quiet) and
/// keeping the last lines; on failure, an error naming the failing step.
fn run_streamed(inv: &Invocation, what: &str, echo: bool) -> Result<(), BuildkitError> {
    let mut cmd = inv.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| BuildkitError::Spawn {
        program: inv.program.clone(),
        source,
    })?;
    let log = Arc::new(Mutex::new(StepLog::default()));
    let pump = |r: Box<dyn Read + Send>, log: Arc<Mutex<StepLog>>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                if echo {
                    let mut e = io::stderr().lock();
                    let _ = writeln!(e, "{line}");
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        })
    };
    let t1 = pump(Box::new(child.stdout.take().expect("piped")), log.clone());
    let t2 = pump(Box::new(child.stderr.take().expect("piped")), log.clone());
    let status = child.wait().map_err(|source| BuildkitError::Spawn {
        program: inv.program.clone(),
        source,
    })?;
    let _ = t1.join();
    let _ = t2.join();
    if status.success() {
        return Ok(());
    }
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    Err(BuildkitError::Failed {
        builder: what.to_owned(),
        step: log.failed_step(),
        status: status.to_string(),
        tail: log
            .tail
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// What BuildKit's plain progress says about its steps, and the last lines.
#[derive(Default)]
struct StepLog {
    /// `#N` → `[stage i/n] INSTRUCTION`.
    steps: BTreeMap<String, String>,
    failed: Option<String>,
    summary: Option<String>,
    tail: std::collections::VecDeque<String>,
}

impl StepLog {
    fn push(&mut self, line: String) {
        if let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) {
            if id.chars().all(|c| c.is_ascii_digit()) {
                if rest.starts_with('[') && !self.steps.contains_key(id) {
                    self.steps.insert(id.to_owned(), rest.to_owned());
                } else if rest.starts_with("ERROR") {
                    if let Some(s) = self.steps.get(id) {
                        self.failed.get_or_insert_with(|| s.clone());
                    }
                }
            }
        }
        // BuildKit's closing summary: ` > [builder 5/9] RUN mix compile:`.
        if let Some(s) = line.strip_prefix(" > [").and_then(|l| l.strip_suffix(':')) {
            self.summary.get_or_insert_with(|| format!("[{s}"));
        }
        // BuildKit repeats whole RUN scripts in its output; keep lines readable.
        let line = if line.chars().count() > 400 {
            format!("{}…", line.chars().take(400).collect::<String>())
        } else {
            line
        };
        self.tail.push_back(line);
        if self.tail.len() > TAIL_LINES {
            self.tail.pop_front();
        }
    }

    fn failed_step(&self) -> Option<String> {
        let s = self.failed.clone().or_else(|| self.summary.clone())?;
        // `RUN --mount=… --mount=… mix compile` reads as `RUN mix compile`.
        let s: String = s
            .split_whitespace()
            .filter(|w| !w.starts_with("--mount="))
            .collect::<Vec<_>>()
            .join(" ");
        let short: String = s.chars().take(160).collect();
        Some(if short.len() < s.len() {
            format!("{short}…")
        } else {
            short
        })
    }
}

// ---------------------------------------------------------------- build ---

/// Build the image with BuildKit into `layout`, tagged with `tags` (or, when
/// empty, its version). The async face of [`build_blocking`], for
/// `commands/build.rs` (needs the multi-threaded runtime).
pub async fn build(
    s: &BuildSettings,
    bk: &BuildkitArgs,
    layout: &Layout,
    tags: &[String],
    progress: &Progress,
) -> crate::error::Result<BuildOutcome> {
    tokio::task::block_in_place(|| build_blocking(s, bk, layout, tags, progress))
}

/// See [`build`].
pub fn build_blocking(
    s: &BuildSettings,
    bk: &BuildkitArgs,
    layout: &Layout,
    tags: &[String],
    progress: &Progress,
) -> crate::error::Result<BuildOutcome> {
    let forced = bk.builder.as_deref().map(Builder::from_str).transpose()?;
    let env = EngineEnv::from_env(bk.buildkit_host.as_deref());
    let engine = detect(forced, &env, &SystemProbe)?;
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

    let project_facts = MixFacts::read(&s.project);
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
    for kv in &bk.build_args {
        let (k, v) = kv.split_once('=').ok_or_else(|| BuildkitError::BadOption {
            flag: "--build-arg",
            reason: format!("`{kv}` is not KEY=VALUE"),
        })?;
        build_args.push((k.to_owned(), v.to_owned()));
    }
    let secrets = bk
        .secrets
        .iter()
        .map(|s| s.parse::<SecretSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let req = BuildRequest {
        context,
        dockerfile,
        build_args,
        secrets,
        network: bk.network.clone(),
        platform: bk.platform.clone(),
        target: bk.target.clone(),
        no_cache: bk.no_cache,
        cache_from: bk.cache_from.clone(),
        cache_to: bk.cache_to.clone(),
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
            if !req.cache_to.is_empty() && engine.builder == Builder::Docker {
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

// ------------------------------------------------------------- contexts ---

/// Copy (hard-link where possible) the project into `dest` for a build
/// context, leaving out build outputs (`_build`, `deps`, `node_modules`),
/// `.git` and the directories in `skip` (the layout, when it lies inside the
/// project: `dest` is under it), and add the embedded `.dockerignore`. Used
/// when the project has no `.dockerignore` of its own, so the engine never
/// walks `_build` or `deps`.
pub fn stage_context(project: &Path, dest: &Path, skip: &[PathBuf]) -> Result<(), BuildkitError> {
    fn walk(src: &Path, dst: &Path, top: bool, skip: &[PathBuf]) -> Result<(), BuildkitError> {
        fs::create_dir_all(dst).map_err(io_err("creating", dst))?;
        for entry in fs::read_dir(src).map_err(io_err("reading", src))? {
            let entry = entry.map_err(io_err("reading", src))?;
            let name = entry.file_name();
            let outputs = name == "node_modules"
                || (top && (name == "_build" || name == "deps" || name == ".git"));
            if outputs {
                continue;
            }
            let from = entry.path();
            let to = dst.join(&name);
            let ft = entry.file_type().map_err(io_err("reading", &from))?;
            if ft.is_dir() {
                if fs::canonicalize(&from).is_ok_and(|c| skip.contains(&c)) {
                    continue;
                }
                walk(&from, &to, false, skip)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&from).map_err(io_err("reading", &from))?;
                std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating", &to))?;
            } else if ft.is_file() && fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(io_err("copying", &from))?;
            }
        }
        Ok(())
    }
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(PathBuf::as_path)
        .chain([dest])
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    walk(project, dest, true, &skip)?;
    let ignore = dest.join(".dockerignore");
    fs::write(&ignore, DOCKERIGNORE).map_err(io_err("writing", &ignore))?;
    Ok(())
}

/// What `mix.exs` says literally about the app (no Elixir is run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MixFacts {
    /// `app: :NAME`.
    pub app: Option<String>,
    /// `version: "X"`, or `@version "X"` with `version: @version`.
    pub version: Option<String>,
}

impl MixFacts {
    /// Read `PROJECT/mix.exs` (empty facts when absent).
    pub fn read(project: &Path) -> MixFacts {
        fs::read_to_string(project.join("mix.exs"))
            .map(|t| MixFacts::parse(&t))
            .unwrap_or_default()
    }

    /// Parse the text of a `mix.exs`.
    pub fn parse(text: &str) -> MixFacts {
        let quoted = |s: &str| -> Option<String> {
            let s = s.trim_start().strip_prefix('"')?;
            let end = s.find('"')?;
            let v = &s[..end];
            (!v.is_empty() && !v.contains('#')).then(|| v.to_owned())
        };
        let mut app = None;
        let mut version = None;
        let mut attr = None;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('#') {
                continue;
            }
            if let Some(rest) = l.strip_prefix("@version") {
                attr = attr.or_else(|| quoted(rest));
            }
            if let Some(i) = l.find("app:") {
                let rest = l[i + 4..].trim_start();
                if let Some(name) = rest.strip_prefix(':') {
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        app = app.or(Some(name));
                    }
                }
            }
            if let Some(i) = l.find("version:") {
                let before = &l[..i];
                if before.is_empty() || before.ends_with([' ', '[', ',']) {
                    let rest = l[i + 8..].trim_start();
                    if rest.starts_with("@version") {
                        version = version.or(Some(None));
                    } else if let Some(v) = quoted(rest) {
                        version = version.or(Some(Some(v)));
                    } else {
                        version = version.or(Some(None));
                    }
                }
            }
        }
        let version = match version {
            Some(Some(v)) => Some(v),
            // `version: @version`, or not a literal: the attribute if there is one.
            Some(None) => attr,
            None => None,
        };
        MixFacts { app, version }
    }
}

// --------------------------------------------------------------- labels ---

struct Finished {
    imported: Imported,
    title: Option<String>,
    version: Option<String>,
    workdir: String,
}

/// Fill an empty or missing title/version label from the release in the
/// image, apply `extra` (the `--label`s and `[image] labels`; they win), and
/// drop empty `org.opencontainers.image.*` labels; when that
/// changes the config, a new config and manifest are written (an index —
/// a multi-platform build — is left as it is).
fn finish_labels(
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
        if let Some((name, vsn)) = release_in_image(layout, &imported, &workdir)? {
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

/// The release in the image: `(name, version)` from the newest layer holding
/// `WORKDIR/releases/VSN/NAME.rel`.
fn release_in_image(
    layout: &Layout,
    imported: &Imported,
    workdir: &str,
) -> crate::error::Result<Option<(String, String)>> {
    let m = Manifest::parse(
        &imported.digest.to_string(),
        &layout.read_blob(&imported.digest)?,
    )?;
    let prefix = format!("{}/releases/", workdir.trim_matches('/'));
    for l in m.layers.iter().rev() {
        let reader = archive::layer_reader(layout, l)?;
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries()? {
            let entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            if let Some((vsn, file)) = rest.split_once('/') {
                if let Some(name) = file.strip_suffix(".rel").filter(|n| !n.contains('/')) {
                    return Ok(Some((name.to_owned(), vsn.to_owned())));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> BuildRequest {
        BuildRequest {
            context: "/src/app".into(),
            dockerfile: "/tmp/x/Dockerfile".into(),
            build_args: vec![
                ("SKIP_HEX".into(), "1".into()),
                ("A".into(), "x".into()),
                ("SKIP_HEX".into(), "0".into()),
            ],
            secrets: vec![
                "id=hex,env=HEX_ORG_KEY".parse().unwrap(),
                "id=npm,src=/run/npmrc".parse().unwrap(),
            ],
            network: Some("host".into()),
            platform: Some("linux/amd64".into()),
            target: Some("runner".into()),
            no_cache: true,
            cache_from: vec!["reg.example/cache:app".into()],
            cache_to: vec!["type=registry,ref=reg.example/cache:app,mode=min".into()],
            plain_progress: true,
        }
    }

    #[test]
    fn buildctl_gets_the_dockerfile_frontend_options_and_an_oci_output() {
        let inv = buildctl_command(
            Path::new("buildctl"),
            "tcp://bk:1234",
            &req(),
            Path::new("/l/out.tar"),
        );
        assert_eq!(
            inv.args_lossy().join(" "),
            "--addr tcp://bk:1234 build --frontend dockerfile.v0 --local context=/src/app --local dockerfile=/tmp/x \
             --opt filename=Dockerfile --opt build-arg:SKIP_HEX=0 --opt build-arg:A=x --opt target=runner \
             --opt platform=linux/amd64 --opt force-network-mode=host --allow network.host --no-cache \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc \
             --import-cache type=registry,ref=reg.example/cache:app \
             --export-cache type=registry,ref=reg.example/cache:app,mode=min --progress plain \
             --output type=oci,dest=/l/out.tar"
        );
        assert!(inv.env.is_empty());
    }

    #[test]
    fn buildx_writes_an_oci_archive_or_loads_on_the_docker_driver() {
        let inv = buildx_command(
            Path::new("/usr/bin/docker"),
            &req(),
            &Output::OciTar("/l/out.tar".into()),
        );
        assert_eq!(
            inv.args_lossy().join(" "),
            "buildx build --file /tmp/x/Dockerfile --build-arg SKIP_HEX=0 --build-arg A=x \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc --network host --platform linux/amd64 \
             --target runner --no-cache --progress plain --cache-from type=registry,ref=reg.example/cache:app \
             --cache-to type=registry,ref=reg.example/cache:app,mode=min --output type=oci,dest=/l/out.tar /src/app"
        );
        let load = buildx_command(
            Path::new("docker"),
            &BuildRequest {
                plain_progress: false,
                ..req()
            },
            &Output::DockerImage {
                tag: "t:1".into(),
                iidfile: "/l/iid".into(),
            },
        );
        let args = load.args_lossy().join(" ");
        assert!(
            args.ends_with("--load --tag t:1 --iidfile /l/iid /src/app"),
            "{args}"
        );
        assert!(args.contains("--progress auto"), "{args}");
    }

    #[test]
    fn docker_build_uses_buildkit_a_temporary_tag_and_image_refs_for_cache() {
        let inv = docker_build_command(
            Path::new("/usr/bin/docker"),
            &req(),
            "guildhall-image-tmp:1-2",
            Path::new("/l/iid"),
        );
        assert_eq!(
            inv.env,
            vec![("DOCKER_BUILDKIT".to_owned(), "1".to_owned())]
        );
        assert_eq!(
            inv.args_lossy().join(" "),
            "build --file /tmp/x/Dockerfile --build-arg SKIP_HEX=0 --build-arg A=x \
             --secret id=hex,env=HEX_ORG_KEY --secret id=npm,src=/run/npmrc --network host --platform linux/amd64 \
             --target runner --no-cache --progress plain --cache-from reg.example/cache:app \
             --tag guildhall-image-tmp:1-2 --iidfile /l/iid /src/app"
        );
    }

    #[test]
    fn secrets_are_parsed_by_reference_and_bad_ones_are_refused() {
        let s: SecretSpec = "id=hex,src=/k".parse().unwrap();
        assert_eq!(s.source, SecretSource::File("/k".into()));
        let e: SecretSpec = "env=HEX_KEY".parse().unwrap();
        assert_eq!(
            (e.id.as_str(), e.to_arg().as_str()),
            ("HEX_KEY", "id=HEX_KEY,env=HEX_KEY")
        );
        let t: SecretSpec = "type=env,id=k,src=TOKEN".parse().unwrap();
        assert_eq!(t.source, SecretSource::Env("TOKEN".into()));
        assert!("id=x".parse::<SecretSpec>().is_err());
        assert!("id=x,src=a,env=B".parse::<SecretSpec>().is_err());
        assert!(
            "id=x,value=hunter2"
                .parse::<SecretSpec>()
                .unwrap_err()
                .to_string()
                .contains("unknown key `value`")
        );
    }

    struct FakeProbe {
        buildx: Result<Option<String>, String>,
        engine: Result<(), String>,
    }
    impl Probe for FakeProbe {
        fn buildx(&self, _: &Path, _: &EngineEnv) -> Result<Option<String>, String> {
            self.buildx.clone()
        }
        fn docker_engine(&self, _: &Path, _: &EngineEnv) -> Result<(), String> {
            self.engine.clone()
        }
    }

    #[test]
    fn detection_prefers_buildctl_then_buildx_then_docker() {
        let env = EngineEnv {
            docker: Some("/usr/bin/docker".into()),
            buildctl: Some("/usr/bin/buildctl".into()),
            buildkit_host: Some("tcp://bk:1234".into()),
            docker_host: None,
        };
        let all = FakeProbe {
            buildx: Ok(Some("docker-container".into())),
            engine: Ok(()),
        };
        assert_eq!(detect(None, &env, &all).unwrap().builder, Builder::Buildctl);
        let no_host = EngineEnv {
            buildkit_host: None,
            ..env.clone()
        };
        assert_eq!(
            detect(None, &no_host, &all).unwrap().builder,
            Builder::Buildx
        );
        let no_buildx = FakeProbe {
            buildx: Err("'buildx' is not a docker command".into()),
            engine: Ok(()),
        };
        assert_eq!(
            detect(None, &no_host, &no_buildx).unwrap().builder,
            Builder::Docker
        );
        assert_eq!(
            detect(Some(Builder::Docker), &env, &all).unwrap().builder,
            Builder::Docker
        );
        let docker_driver = FakeProbe {
            buildx: Ok(Some("docker".into())),
            engine: Ok(()),
        };
        assert!(detect(None, &no_host, &docker_driver).unwrap().buildx_loads);
    }

    #[test]
    fn a_missing_engine_says_what_was_looked_for_and_how_to_get_one() {
        let env = EngineEnv {
            docker: Some("/usr/bin/docker".into()),
            buildctl: None,
            buildkit_host: None,
            docker_host: Some("unix:///nowhere.sock".into()),
        };
        let none = FakeProbe {
            buildx: Err("'buildx' is not a docker command".into()),
            engine: Err("Cannot connect to the Docker daemon".into()),
        };
        let e = detect(None, &env, &none).unwrap_err();
        let msg = e.to_string();
        for want in [
            "BUILDKIT_HOST",
            "docker buildx",
            "unix:///nowhere.sock",
            "Cannot connect",
            "apt-get install docker.io",
            "--engine direct",
        ] {
            assert!(msg.contains(want), "`{want}` missing from: {msg}");
        }
        assert_eq!(e.exit_code(), crate::error::ExitCode::Engine);
        let forced = detect(
            Some(Builder::Buildctl),
            &EngineEnv {
                buildkit_host: Some("tcp://x:1".into()),
                ..env
            },
            &none,
        )
        .unwrap_err();
        assert!(
            forced.to_string().contains("buildctl is not on PATH"),
            "{forced}"
        );
    }

    #[test]
    fn the_failing_step_is_found_in_buildkit_output() {
        let mut log = StepLog::default();
        for l in [
            "#11 [builder 4/12] RUN mix local.hex --force",
            "#11 DONE 0.1s",
            "#14 [builder 7/12] RUN --mount=type=cache,id=deps,target=/app/deps mix compile",
            "#14 0.9 ** (CompileError) lib/x.ex:1: undefined function foo/0",
            "#14 ERROR: executor failed running [/bin/sh -c mix compile]: exit code: 1",
            "------",
            " > [builder 7/12] RUN mix compile:",
        ] {
            log.push(l.to_owned());
        }
        assert_eq!(
            log.failed_step().as_deref(),
            Some("[builder 7/12] RUN mix compile")
        );
    }

    #[test]
    fn a_staged_context_leaves_out_build_outputs_and_a_layout_inside_the_project() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("proj");
        for d in [
            "lib",
            "_build/prod",
            "deps/x",
            ".git",
            "assets/node_modules/y",
            "image/blobs",
        ] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        fs::write(p.join("mix.exs"), "x").unwrap();
        fs::write(p.join("lib/a.ex"), "a").unwrap();
        fs::write(p.join("assets/app.js"), "j").unwrap();
        std::os::unix::fs::symlink("a.ex", p.join("lib/link.ex")).unwrap();
        let dest = p.join("image/.guildhall-tmp/buildkit-1/context");
        stage_context(&p, &dest, &[p.join("image")]).unwrap();
        let mut found: Vec<String> = Vec::new();
        fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    list(root, &e.path(), out);
                }
            }
        }
        list(&dest, &dest, &mut found);
        found.sort();
        assert_eq!(
            found,
            [
                ".dockerignore",
                "assets",
                "assets/app.js",
                "lib",
                "lib/a.ex",
                "lib/link.ex",
                "mix.exs"
            ]
        );
        assert_eq!(
            fs::read_link(dest.join("lib/link.ex")).unwrap(),
            Path::new("a.ex")
        );
    }

    #[test]
    fn mix_exs_version_and_app_are_read_when_literal() {
        let f = MixFacts::parse(
            "  @version \"1.2.3\"\n  def project do\n    [app: :guildhall,\n     version: @version,\n",
        );
        assert_eq!(
            f,
            MixFacts {
                app: Some("guildhall".into()),
                version: Some("1.2.3".into())
            }
        );
        let g = MixFacts::parse("[app: :x, version: \"0.4.0-rc.1\", elixir: \"~> 1.17\"]");
        assert_eq!(g.version.as_deref(), Some("0.4.0-rc.1"));
        let h = MixFacts::parse("app: :guildhall,\n version: System.get_env(\"V\", \"0.1.0\"),");
        assert_eq!(h.version, None);
    }

    #[test]
    fn the_embedded_dockerfile_has_the_promised_knobs() {
        for want in [
            "ARG ELIXIR_VERSION=1.17.3",
            "ARG OTP_VERSION=27.",
            "ARG DEBIAN_VERSION=bookworm-",
            "hexpm/elixir:${ELIXIR_VERSION}-erlang-${OTP_VERSION}-debian-${DEBIAN_VERSION}",
            "debian:${DEBIAN_VERSION}-slim",
            "SKIP_HEX",
            "SKIP_APT",
            "--mount=type=cache",
            "USER 65534:65534",
            "CMD [\"/app/bin/server\"]",
            "org.opencontainers.image.revision",
        ] {
            assert!(DOCKERFILE.contains(want), "Dockerfile lacks {want}");
        }
        assert!(
            !DOCKERFILE.lines().any(|l| l.starts_with("# syntax=")),
            "a syntax line would pull a frontend image"
        );
        for want in ["_build", "deps", ".git", "node_modules"] {
            assert!(DOCKERIGNORE.contains(want), ".dockerignore lacks {want}");
        }
    }
}
