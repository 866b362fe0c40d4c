//! BuildKit requests and the command lines that run them: build
//! arguments, secrets (by reference only), cache specs, and one pure function
//! per engine (`buildctl`, `docker buildx build`, `docker build`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use super::BuildkitError;

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

/// The BuildKit flags that pass through to the engine unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineFlags {
    /// `--secret id=…,src=…|env=…`.
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
    /// Secrets, network, platform, target, cache: as the user gave them.
    pub flags: EngineFlags,
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

    pub(super) fn command(&self) -> Command {
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
    if let Some(t) = &req.flags.target {
        a.push("--opt".into());
        a.push(format!("target={t}").into());
    }
    if let Some(p) = &req.flags.platform {
        a.push("--opt".into());
        a.push(format!("platform={p}").into());
    }
    if let Some(n) = &req.flags.network {
        a.push("--opt".into());
        a.push(format!("force-network-mode={n}").into());
        if n == "host" {
            a.push("--allow".into());
            a.push("network.host".into());
        }
    }
    if req.flags.no_cache {
        a.push("--no-cache".into());
    }
    for s in &req.flags.secrets {
        a.push("--secret".into());
        a.push(s.to_arg().into());
    }
    for c in &req.flags.cache_from {
        a.push("--import-cache".into());
        a.push(cache_spec(c, false).into());
    }
    for c in &req.flags.cache_to {
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
    for c in &req.flags.cache_from {
        a.push("--cache-from".into());
        a.push(cache_spec(c, false).into());
    }
    for c in &req.flags.cache_to {
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
    for c in &req.flags.cache_from {
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
    for s in &req.flags.secrets {
        a.push("--secret".into());
        a.push(s.to_arg().into());
    }
    if let Some(n) = &req.flags.network {
        a.push("--network".into());
        a.push(n.into());
    }
    if let Some(p) = &req.flags.platform {
        a.push("--platform".into());
        a.push(p.into());
    }
    if let Some(t) = &req.flags.target {
        a.push("--target".into());
        a.push(t.into());
    }
    if req.flags.no_cache {
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
