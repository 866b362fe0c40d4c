//! CLI flags + environment + `guildhall-image.toml` + defaults → validated
//! settings for each command, including the named push targets (`forgejo`,
//! `ghcr`). Reads the config file; touches neither network nor layouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{BuildArgs, Cli, Engine, PushArgs};
use crate::image::RegistryRef;
use crate::image::reference::{ImageRef, is_loopback_host, normalize_registry_host};

/// The config file looked for in the current directory.
pub const CONFIG_FILE: &str = "guildhall-image.toml";
/// Base image when none is configured.
pub const DEFAULT_BASE: &str = "debian:bookworm-slim";
/// Where images are installed inside the image.
pub const APP_DIR: &str = "/app";
/// The image's user: `nobody:nogroup` on Debian, numeric so that a Pod with
/// `runAsNonRoot: true` (the `restricted` profile) can verify it.
pub const DEFAULT_USER: &str = "65534:65534";

/// Whether a `USER[:GROUP]` is numeric (what the kubelet needs to check
/// `runAsNonRoot` without reading the image's `/etc/passwd`).
pub fn is_numeric_user(user: &str) -> bool {
    let mut parts = user.splitn(2, ':');
    let numeric =
        |p: Option<&str>| p.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let uid = parts.next();
    uid.is_some_and(|u| !u.is_empty()) && numeric(uid) && numeric(parts.next())
}
/// 64 MiB: comfortably under a CDN's 100 MB request-body cap.
pub const DEFAULT_CHUNK: u64 = crate::registry::DEFAULT_CHUNK;
/// The built-in Forgejo target's chunk: 16 MiB, to fit Cloudflare's windows
/// (see [`crate::registry::FORGEJO_CHUNK`]).
pub const FORGEJO_CHUNK: u64 = crate::registry::FORGEJO_CHUNK;
/// ghcr.io takes at most 4 MiB per upload request.
pub const GHCR_CHUNK: u64 = 4 * 1024 * 1024;

/// Invalid settings: which one, where it came from, why.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value is invalid.
    #[error("{what}: {reason}")]
    Invalid {
        /// The flag or key (`--env`, `targets.ghcr.chunk_size`).
        what: String,
        /// Why.
        reason: String,
    },
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// `guildhall-image.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[build]`.
    #[serde(default)]
    pub build: BuildSection,
    /// `[image]`.
    #[serde(default)]
    pub image: ImageSection,
    /// Default push target name.
    pub default_target: Option<String>,
    /// `[targets.NAME]`.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetSection>,
    /// Registries spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

/// `[build]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Engine.
    pub engine: Option<Engine>,
    /// Base image reference.
    pub base: Option<String>,
    /// Release path.
    pub release: Option<PathBuf>,
    /// Run `mix release` first.
    pub mix: Option<bool>,
    /// Layout directory.
    pub layout: Option<PathBuf>,
    /// Applications that belong in the app layer besides the release's own (umbrellas).
    #[serde(default)]
    pub own_apps: Vec<String>,
    /// Static assets at least this big get a layer of their own (bytes or "1MiB").
    pub assets_layer_min: Option<String>,
    /// Most a release tarball may extract to (bytes or "8GiB").
    pub max_release_size: Option<String>,
}

/// `[image]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ports.
    pub ports: Option<Vec<String>>,
    /// User.
    pub user: Option<String>,
    /// Command.
    pub cmd: Option<Vec<String>>,
    /// Source URL label.
    pub source: Option<String>,
}

/// `[targets.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `HOST[:PORT]/REPO`.
    pub repository: Option<String>,
    /// Chunk size (bytes, or "64MiB").
    pub chunk_size: Option<String>,
    /// Parallel uploads.
    pub concurrency: Option<usize>,
    /// Plain HTTP.
    pub insecure: Option<bool>,
    /// Idle bound while sending ("30s").
    pub idle_timeout: Option<String>,
    /// Bound for the answer to a fully sent request ("150s").
    pub response_timeout: Option<String>,
}

/// A push target, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `forgejo`, `ghcr`, a configured name, or the repository itself.
    pub name: String,
    /// Registry and repository (no tag).
    pub repository: RegistryRef,
    /// Chunk size for chunked uploads.
    pub chunk_size: u64,
    /// Parallel blob uploads.
    pub concurrency: usize,
    /// Plain HTTP.
    pub insecure: bool,
    /// No byte sent (or received) for this long: the request is abandoned.
    pub idle_timeout: Duration,
    /// No answer this long after a request was sent in full: abandoned.
    pub response_timeout: Duration,
}

/// Settings shared by every command.
#[derive(Debug)]
pub struct Settings {
    /// The parsed config file (empty when there is none).
    pub file: ConfigFile,
    /// Where it was read from.
    pub file_path: Option<PathBuf>,
    /// Registries spoken to over plain HTTP (flags and config).
    pub insecure_registries: Vec<String>,
    /// `-q`.
    pub quiet: bool,
    /// `--json`.
    pub json: bool,
    /// `-v` count.
    pub verbose: u8,
    /// The cache directory (`$GUILDHALL_IMAGE_CACHE`, else `$XDG_CACHE_HOME/guildhall-image`, else `~/.cache/guildhall-image`).
    pub cache_dir: PathBuf,
    /// Timeout for connecting to a registry.
    pub connect_timeout: Duration,
}

/// Validated settings of `build`.
#[derive(Debug)]
pub struct BuildSettings {
    /// Engine.
    pub engine: Engine,
    /// The mix project.
    pub project: PathBuf,
    /// Explicit release path, if any.
    pub release: Option<PathBuf>,
    /// Run `mix release` first.
    pub mix: bool,
    /// Base image.
    pub base: ImageRef,
    /// Tags (empty: the release version).
    pub tags: Vec<String>,
    /// Layout directory.
    pub layout: PathBuf,
    /// Env overrides, in order.
    pub env: Vec<(String, String)>,
    /// Label overrides.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (`4000/tcp`).
    pub ports: Vec<String>,
    /// User.
    pub user: String,
    /// Command override.
    pub cmd: Option<Vec<String>>,
    /// Source label override.
    pub source: Option<String>,
    /// Revision label override.
    pub revision: Option<String>,
    /// Creation time from `SOURCE_DATE_EPOCH` (seconds).
    pub source_date_epoch: Option<i64>,
    /// Skip preflight.
    pub skip_preflight: bool,
    /// Warn instead of failing on an architecture mismatch.
    pub allow_platform_mismatch: bool,
    /// Do not contact the base's registry.
    pub offline: bool,
    /// Apps that belong to the app layer besides the release's own.
    pub own_apps: Vec<String>,
    /// Static assets at least this big get their own layer.
    pub assets_layer_min: u64,
    /// Bounds on extracting a release tarball.
    pub release_limits: crate::release::ExtractLimits,
    /// The BuildKit engine's options.
    pub buildkit: crate::engine::buildkit::BuildkitOptions,
    /// Things worth saying before the build (a user name Kubernetes cannot
    /// check, flags the chosen engine ignores).
    pub warnings: Vec<String>,
    /// Push afterwards, to this target.
    pub push: Option<Target>,
    /// Digest file for --push.
    pub digest_file: Option<PathBuf>,
    /// Collect garbage afterwards.
    pub gc: bool,
}

/// Validated settings of `push`.
#[derive(Debug)]
pub struct PushSettings {
    /// Tags.
    pub tags: Vec<String>,
    /// Target.
    pub target: Target,
    /// Layout.
    pub layout: PathBuf,
    /// Digest file.
    pub digest_file: Option<PathBuf>,
}

impl Settings {
    /// Read the config file (the one named, or `./guildhall-image.toml` when
    /// present) and the global flags.
    pub fn load(cli: &Cli) -> Result<Settings, SettingsError> {
        // The named file, else the one in the current directory, else (for
        // `build --project DIR`) the project's.
        let project_file = match &cli.command {
            crate::cli::Command::Build(b) => Some(b.project.join(CONFIG_FILE)),
            _ => None,
        };
        let found = cli.config.clone().or_else(|| {
            [Some(PathBuf::from(CONFIG_FILE)), project_file]
                .into_iter()
                .flatten()
                .find(|p| p.is_file())
        });
        let (file, file_path) = match found {
            Some(p) => (read_config(&p)?, Some(p)),
            None => (ConfigFile::default(), None),
        };
        let mut insecure: Vec<String> = cli
            .insecure_registry
            .iter()
            .map(|h| normalize_registry_host(h))
            .collect();
        insecure.extend(
            file.insecure_registries
                .iter()
                .map(|h| normalize_registry_host(h)),
        );
        Ok(Settings {
            insecure_registries: insecure,
            file,
            file_path,
            quiet: cli.quiet,
            json: cli.json,
            verbose: cli.verbose,
            cache_dir: cache_dir(),
            connect_timeout: Duration::from_secs(10),
        })
    }

    /// Settings from a config file alone (tests).
    pub fn from_file(file: ConfigFile) -> Settings {
        Settings {
            insecure_registries: file
                .insecure_registries
                .iter()
                .map(|h| normalize_registry_host(h))
                .collect(),
            file,
            file_path: None,
            quiet: true,
            json: false,
            verbose: 0,
            cache_dir: cache_dir(),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Whether plain HTTP is used for a registry host.
    pub fn is_insecure(&self, registry: &str) -> bool {
        is_loopback_host(registry)
            || self
                .insecure_registries
                .iter()
                .any(|h| h == &normalize_registry_host(registry))
    }

    /// The push target named `name` (a configured or built-in name, or
    /// `HOST[:PORT]/REPO`); `None` means the default target.
    pub fn target(&self, name: Option<&str>) -> Result<Target, SettingsError> {
        let name = name
            .map(str::to_owned)
            .or_else(|| self.file.default_target.clone())
            .unwrap_or_else(|| "forgejo".into());
        if crate::image::reference::has_userinfo(&name) {
            // Never repeat it: it holds a password.
            return Err(invalid(
                "--to",
                crate::image::reference::ReferenceError::Credentials.to_string(),
            ));
        }
        let builtin = |n: &str| -> Option<(&str, u64)> {
            match n {
                "forgejo" => Some(("git.guildhouse.dev/tking/guildhall", FORGEJO_CHUNK)),
                "ghcr" => Some(("ghcr.io/gh-tking/guildhall", GHCR_CHUNK)),
                _ => None,
            }
        };
        let section = self.file.targets.get(&name);
        let (repo_text, default_chunk) =
            match (section.and_then(|s| s.repository.clone()), builtin(&name)) {
                (Some(r), b) => (r, b.map(|b| b.1).unwrap_or(DEFAULT_CHUNK)),
                (None, Some((r, c))) => (r.to_owned(), c),
                (None, None) if name.contains('/') => (name.clone(), DEFAULT_CHUNK),
                (None, None) => {
                    let mut known: Vec<String> = vec!["forgejo".into(), "ghcr".into()];
                    known.extend(self.file.targets.keys().cloned());
                    return Err(invalid(
                        "--to",
                        format!(
                            "`{name}` is neither a target ({}) nor HOST[:PORT]/REPO",
                            known.join(", ")
                        ),
                    ));
                }
            };
        let repository = RegistryRef::parse_repository(&repo_text)
            .map_err(|e| invalid(format!("target `{name}`"), e.to_string()))?;
        let chunk_size = match section.and_then(|s| s.chunk_size.as_deref()) {
            Some(s) => {
                parse_chunk_size(s).map_err(|r| invalid(format!("targets.{name}.chunk_size"), r))?
            }
            None if repository.registry == "ghcr.io" => GHCR_CHUNK,
            None => default_chunk,
        };
        let insecure = section.and_then(|s| s.insecure).unwrap_or(false)
            || self.is_insecure(&repository.registry);
        let timeout = |value: Option<&str>, key: &str, default: Duration| match value {
            Some(v) => parse_duration(v).map_err(|r| invalid(format!("targets.{name}.{key}"), r)),
            None => Ok(default),
        };
        let idle_timeout = timeout(
            section.and_then(|s| s.idle_timeout.as_deref()),
            "idle_timeout",
            crate::registry::DEFAULT_IDLE_TIMEOUT,
        )?;
        let response_timeout = timeout(
            section.and_then(|s| s.response_timeout.as_deref()),
            "response_timeout",
            crate::registry::DEFAULT_RESPONSE_TIMEOUT,
        )?;
        Ok(Target {
            name,
            repository,
            chunk_size,
            concurrency: section.and_then(|s| s.concurrency).unwrap_or(3).max(1),
            insecure,
            idle_timeout,
            response_timeout,
        })
    }

    /// Validate `build`'s flags against the config file and defaults.
    pub fn build(&self, a: &BuildArgs) -> Result<BuildSettings, SettingsError> {
        let f = &self.file;
        let base_text = a
            .base
            .clone()
            .or_else(|| f.build.base.clone())
            .unwrap_or_else(|| DEFAULT_BASE.to_owned());
        let base: ImageRef =
            base_text
                .parse()
                .map_err(|e: crate::image::reference::ReferenceError| {
                    invalid("--base", e.to_string())
                })?;
        for t in &a.tags {
            validate_tag(t)?;
        }
        let mut env: Vec<(String, String)> = vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("MIX_ENV".into(), "prod".into()),
            ("HOME".into(), APP_DIR.into()),
            // A release evaluates config/runtime.exs at boot and writes the
            // result under RELEASE_TMP: on a read-only root file system (a
            // restricted Pod) only /tmp (an emptyDir) is writable.
            ("RELEASE_TMP".into(), "/tmp".into()),
        ];
        for (k, v) in &f.image.env {
            env.push((k.clone(), v.clone()));
        }
        for kv in &a.env {
            let (k, v) = split_kv("--env", kv)?;
            env.push((k, v));
        }
        let mut labels = f.image.labels.clone();
        for kv in &a.labels {
            let (k, v) = split_kv("--label", kv)?;
            labels.insert(k, v);
        }
        let port_texts: Vec<String> = if !a.ports.is_empty() {
            a.ports.clone()
        } else {
            f.image.ports.clone().unwrap_or_else(|| vec!["4000".into()])
        };
        let mut ports = Vec::new();
        for p in port_texts {
            if p == "none" {
                continue;
            }
            ports.push(parse_port(&p)?);
        }
        if let Some(src) = a.source.as_deref().or(f.image.source.as_deref()) {
            if !crate::vcs::is_web_url(src) {
                return Err(invalid(
                    if a.source.is_some() {
                        "--source"
                    } else {
                        "image.source"
                    },
                    format!(
                        "`{src}` is not an http(s) URL (org.opencontainers.image.source links the package to its repository)"
                    ),
                ));
            }
        }
        let cmd = match &a.cmd {
            Some(c) => Some(parse_cmd(c)?),
            None => f.image.cmd.clone(),
        };
        if cmd.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid("--cmd", "the command is empty"));
        }
        let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().parse::<i64>().map_err(|_| {
                invalid(
                    "SOURCE_DATE_EPOCH",
                    format!("`{s}` is not a whole number of seconds"),
                )
            })?),
            _ => None,
        };
        let layout = a
            .layout
            .clone()
            .or_else(|| f.build.layout.clone())
            .unwrap_or_else(|| a.project.join("_build/image"));
        let assets_layer_min = match &f.build.assets_layer_min {
            Some(s) => parse_size(s).map_err(|r| invalid("build.assets_layer_min", r))?,
            None => 1024 * 1024,
        };
        let max_extracted = match a
            .max_release_size
            .as_deref()
            .map(|v| ("--max-release-size", v))
            .or_else(|| {
                f.build
                    .max_release_size
                    .as_deref()
                    .map(|v| ("build.max_release_size", v))
            }) {
            Some((what, v)) => parse_size(v).map_err(|r| invalid(what, r))?,
            None => crate::release::DEFAULT_MAX_EXTRACTED,
        };
        let engine = a.engine.or(f.build.engine).unwrap_or(Engine::Direct);
        let user = a
            .user
            .clone()
            .or_else(|| f.image.user.clone())
            .unwrap_or_else(|| DEFAULT_USER.into());
        let mut warnings = Vec::new();
        match engine {
            Engine::Direct if !is_numeric_user(&user) => warnings.push(format!(
                "user `{user}` is not numeric: Kubernetes refuses to start it under runAsNonRoot \
                 (\"image has non-numeric user\"); give UID[:GID], e.g. --user 65534:65534"
            )),
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
                        warnings.push(format!(
                            "{flag} is ignored with --engine buildkit (the Dockerfile decides)"
                        ));
                    }
                }
            }
            Engine::Direct => {}
        }
        let buildkit = buildkit_options(&a.buildkit)?;
        let push = if a.push {
            Some(self.target(a.to.as_deref())?)
        } else {
            None
        };
        Ok(BuildSettings {
            engine,
            project: a.project.clone(),
            release: a.release.clone().or_else(|| f.build.release.clone()),
            mix: a.mix || f.build.mix.unwrap_or(false),
            base,
            tags: a.tags.clone(),
            layout,
            env,
            labels,
            ports,
            user,
            cmd,
            source: a.source.clone().or_else(|| f.image.source.clone()),
            revision: a.revision.clone(),
            source_date_epoch,
            skip_preflight: a.skip_preflight,
            allow_platform_mismatch: a.allow_platform_mismatch,
            offline: a.offline,
            own_apps: f.build.own_apps.clone(),
            assets_layer_min,
            release_limits: crate::release::ExtractLimits {
                max_bytes: max_extracted,
            },
            buildkit,
            warnings,
            push,
            digest_file: a.digest_file.clone(),
            gc: a.gc,
        })
    }

    /// Validate `push`'s flags.
    pub fn push(&self, a: &PushArgs) -> Result<PushSettings, SettingsError> {
        for t in &a.tags {
            validate_tag(t)?;
        }
        let mut target = self.target(a.to.as_deref())?;
        if let Some(c) = &a.chunk_size {
            target.chunk_size = parse_chunk_size(c).map_err(|r| invalid("--chunk-size", r))?;
        }
        if let Some(t) = &a.idle_timeout {
            target.idle_timeout = parse_duration(t).map_err(|r| invalid("--idle-timeout", r))?;
        }
        if let Some(t) = &a.response_timeout {
            target.response_timeout =
                parse_duration(t).map_err(|r| invalid("--response-timeout", r))?;
        }
        if let Some(n) = a.concurrency {
            if n == 0 {
                return Err(invalid("--concurrency", "must be at least 1"));
            }
            target.concurrency = n;
        }
        Ok(PushSettings {
            tags: a.tags.clone(),
            target,
            layout: a
                .layout
                .clone()
                .or_else(|| self.file.build.layout.clone())
                .unwrap_or_else(|| PathBuf::from("_build/image")),
            digest_file: a.digest_file.clone(),
        })
    }
}

/// `--builder`, `--build-arg`, `--secret` and the rest, checked.
fn buildkit_options(
    a: &crate::cli::BuildkitArgs,
) -> Result<crate::engine::buildkit::BuildkitOptions, SettingsError> {
    use crate::engine::buildkit::{Builder, BuildkitOptions, SecretSpec};
    let builder = match a.builder.as_deref() {
        Some(b) => Some(
            b.parse::<Builder>()
                .map_err(|e| invalid("--builder", e.to_string()))?,
        ),
        None => None,
    };
    let build_args = a
        .build_args
        .iter()
        .map(|kv| split_kv("--build-arg", kv))
        .collect::<Result<_, _>>()?;
    let secrets = a
        .secrets
        .iter()
        .map(|s| {
            s.parse::<SecretSpec>()
                .map_err(|e| invalid("--secret", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(BuildkitOptions {
        builder,
        buildkit_host: a.buildkit_host.clone(),
        dockerfile: a.dockerfile.clone(),
        build_args,
        secrets,
        network: a.network.clone(),
        platform: a.platform.clone(),
        target: a.target.clone(),
        no_cache: a.no_cache,
        cache_from: a.cache_from.clone(),
        cache_to: a.cache_to.clone(),
    })
}

fn read_config(p: &Path) -> Result<ConfigFile, SettingsError> {
    let text = std::fs::read_to_string(p).map_err(|e| SettingsError::File {
        path: p.to_owned(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| SettingsError::File {
        path: p.to_owned(),
        reason: e.to_string(),
    })
}

/// The cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GUILDHALL_IMAGE_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("guildhall-image");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/guildhall-image"),
        None => std::env::temp_dir().join("guildhall-image-cache"),
    }
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(t: &str) -> Result<(), SettingsError> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--tag",
            format!(
                "`{t}` is not a valid tag (letters, digits, _ . -; at most 128; not starting with . or -)"
            ),
        ))
    }
}

fn split_kv(flag: &str, kv: &str) -> Result<(String, String), SettingsError> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(invalid(flag, format!("`{kv}` is not KEY=VALUE"))),
    }
}

fn parse_port(p: &str) -> Result<String, SettingsError> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_num = num.parse::<u16>().is_ok_and(|n| n > 0);
    if !ok_num || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(invalid(
            "--port",
            format!("`{p}` is not PORT[/tcp|udp|sctp]"),
        ));
    }
    Ok(format!("{num}/{proto}"))
}

fn parse_cmd(c: &str) -> Result<Vec<String>, SettingsError> {
    if c.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(c)
            .map_err(|e| invalid("--cmd", format!("not a JSON array of strings: {e}")))
    } else {
        Ok(c.split_whitespace().map(str::to_owned).collect())
    }
}

/// `123`, `4MiB`, `64MB`, `1GiB` → bytes.
/// A chunk size: a size of at least 1 MiB (smaller chunks only cost
/// requests; a registry that needs them says so with a 413, and the client
/// goes lower on its own).
pub fn parse_chunk_size(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v < crate::registry::MIN_CHUNK {
        return Err(format!(
            "`{s}` is below the smallest chunk size, 1MiB (a registry that refuses large request bodies is detected, and the chunks made smaller as far as it needs)"
        ));
    }
    Ok(v)
}

/// A duration: `30s`, `2m`, `1m30s`, `500ms`, or plain seconds; more than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not a duration (e.g. 30s, 2m, 150)");
    if let Ok(secs) = t.parse::<u64>() {
        return (secs > 0)
            .then(|| Duration::from_secs(secs))
            .ok_or_else(|| format!("`{s}` must be more than zero"));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, tail) = rest.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
        rest = tail;
    }
    if total.is_zero() {
        return Err(format!("`{s}` must be more than zero"));
    }
    Ok(total)
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4MiB, 64MB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit (B, kB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if v == 0 {
        return Err(format!("`{s}` must be more than zero"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_below_one_mebibyte_are_refused_with_the_reason() {
        let e = parse_chunk_size("1").unwrap_err();
        assert!(e.contains("1MiB") && e.contains("refuses"), "{e}");
        assert!(parse_chunk_size("512KiB").is_err());
        assert_eq!(parse_chunk_size("1MiB").unwrap(), 1024 * 1024);
        assert_eq!(parse_chunk_size("16MiB").unwrap(), 16 * 1024 * 1024);
    }

    #[test]
    fn timeouts_read_as_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("150").unwrap(), Duration::from_secs(150));
        assert_eq!(parse_duration("2m30s").unwrap(), Duration::from_secs(150));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn built_in_targets_have_their_registries_chunk_sizes() {
        let s = Settings::from_file(ConfigFile::default());
        let f = s.target(None).unwrap();
        assert_eq!(
            f.repository.to_string(),
            "git.guildhouse.dev/tking/guildhall"
        );
        assert!(f.chunk_size < 100_000_000);
        let g = s.target(Some("ghcr")).unwrap();
        assert_eq!(g.chunk_size, 4 * 1024 * 1024);
        let l = s.target(Some("127.0.0.1:5000/x/y")).unwrap();
        assert!(l.insecure);
        assert!(
            s.target(Some("nowhere"))
                .unwrap_err()
                .to_string()
                .contains("forgejo")
        );
    }

    #[test]
    fn a_target_with_credentials_in_it_is_refused_without_repeating_them() {
        let s = Settings::from_file(ConfigFile::default());
        for to in ["bob:Secret@host.example/repo", "bob:Secret@nowhere"] {
            let e = s.target(Some(to)).unwrap_err().to_string();
            assert!(!e.contains("Secret") && e.contains("credentials"), "{e}");
        }
    }

    #[test]
    fn configured_targets_override_the_built_in_ones() {
        let file: ConfigFile = toml::from_str(
            "default_target = \"staging\"\n[targets.staging]\nrepository = \"reg.example:5000/team/app\"\nchunk_size = \"8MiB\"\nconcurrency = 5\ninsecure = true\n",
        )
        .unwrap();
        let t = Settings::from_file(file).target(None).unwrap();
        assert_eq!(
            (t.name.as_str(), t.chunk_size, t.concurrency, t.insecure),
            ("staging", 8 << 20, 5, true)
        );
    }

    #[test]
    fn sizes_tags_and_ports_are_validated() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert!(parse_size("0").is_err() && parse_size("4 parsecs").is_err());
        assert!(
            validate_tag("v0.1.0").is_ok()
                && validate_tag("-x").is_err()
                && validate_tag("a/b").is_err()
        );
        assert_eq!(parse_port("4000").unwrap(), "4000/tcp");
        assert!(parse_port("99999").is_err());
        assert_eq!(
            parse_cmd(r#"["/app/bin/x","start"]"#).unwrap(),
            vec!["/app/bin/x", "start"]
        );
    }
}
