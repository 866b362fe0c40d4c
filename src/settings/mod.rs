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

use crate::registry::{DEFAULT_CHUNK, FORGEJO_CHUNK, GHCR_CHUNK};

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

mod build;
mod file;
mod push;

pub use build::*;
pub use file::*;
pub use push::*;

#[cfg(test)]
mod tests;
