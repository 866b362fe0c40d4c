//! Which BuildKit to use: `buildctl` with a buildkitd address, `docker
//! buildx`, or `docker build` on a Docker engine, found in that order behind
//! a probe seam (so the choice is unit-tested without the programs).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{Builder, BuildkitError};

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
pub struct Detected {
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
) -> Result<Detected, BuildkitError> {
    let mut looked = Vec::new();
    let want = |b: Builder| forced.is_none() || forced == Some(b);

    if want(Builder::Buildctl) {
        match (&env.buildkit_host, &env.buildctl) {
            (Some(addr), Some(prog)) => {
                return Ok(Detected {
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
                    return Ok(Detected {
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
                Ok(()) => return Ok(Detected { builder: Builder::Docker, program: d.clone(), addr: None, buildx_loads: false }),
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
