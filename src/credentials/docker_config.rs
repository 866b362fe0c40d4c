//! Credentials from a Docker client config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`), in Docker's order: the host's `credHelpers`
//! entry, else the `credsStore` helper, else `auths` (`auth` = base64
//! `user:pass`, `username`/`password`, or `identitytoken`). Helpers run
//! through [`super::helpers`]. Docker Hub's aliases are one host.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

use super::helpers::{Helper, HelperError};
use super::{AuthError, Credential, CredentialKind, CredentialSource, Secret};
use crate::image::reference::normalize_registry_host;

/// The docker config file source.
pub struct DockerConfig {
    path: PathBuf,
}

impl DockerConfig {
    /// The config the Docker CLI would read: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`.
    pub fn from_env() -> DockerConfig {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from(".docker"));
        DockerConfig {
            path: dir.join("config.json"),
        }
    }

    /// A specific config file.
    pub fn at(path: PathBuf) -> DockerConfig {
        DockerConfig { path }
    }

    fn read(&self, host: &str) -> Result<Option<Value>, AuthError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "docker config unreadable; skipped");
                return Ok(None);
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| AuthError::Source {
                host: host.to_owned(),
                source_name: format!("docker config {}", self.path.display()),
                // serde_json's syntax errors give a position, not the text.
                reason: format!("not valid JSON ({e})"),
            })
    }
}

/// The `auths` key naming `host`: keys may be bare hosts or URLs
/// (`https://index.docker.io/v1/`).
pub fn auths_key_matches(key: &str, host: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    normalize_registry_host(k) == normalize_registry_host(host)
}

impl DockerConfig {
    /// The file read.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Ask a helper; `per_host` says whether it was named for this host
    /// (`credHelpers`: its failure is an error the user must fix) or is the
    /// config-wide default (`credsStore`: a failure is a warning, and the
    /// `auths` entries still get their turn — a config copied from a desktop
    /// onto a runner often names a store that cannot work there).
    fn ask_helper(
        &self,
        name: &str,
        host: &str,
        per_host: bool,
    ) -> Result<Option<Credential>, AuthError> {
        let key = if per_host {
            "credHelpers"
        } else {
            "credsStore"
        };
        let source = format!("docker-config ({key}: {name})");
        match Helper::new(name).get(host, &source) {
            Ok(c) => Ok(c),
            Err(e) if per_host => Err(AuthError::Source {
                host: host.to_owned(),
                source_name: format!("docker config {} ({key})", self.path.display()),
                reason: e.to_string(),
            }),
            Err(e @ HelperError::NotInstalled { .. }) => {
                tracing::debug!(host, helper = name, error = %e, "credsStore helper not installed; skipped");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(host, helper = name, error = %e, "credsStore helper failed; trying `auths`");
                Ok(None)
            }
        }
    }
}

impl CredentialSource for DockerConfig {
    fn name(&self) -> &str {
        "docker-config"
    }
    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        let Some(cfg) = self.read(host)? else {
            return Ok(None);
        };
        if let Some(helpers) = cfg.get("credHelpers").and_then(Value::as_object) {
            let named = helpers
                .iter()
                .find(|(k, _)| auths_key_matches(k, host))
                .and_then(|(_, v)| v.as_str())
                .filter(|n| !n.is_empty());
            if let Some(name) = named {
                if let Some(c) = self.ask_helper(name, host, true)? {
                    return Ok(Some(c));
                }
            }
        }
        if let Some(name) = cfg
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            if let Some(c) = self.ask_helper(name, host, false)? {
                return Ok(Some(c));
            }
        }
        let Some(auths) = cfg.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let bad = |reason: &str| AuthError::Source {
            host: host.to_owned(),
            source_name: format!("docker config {}", self.path.display()),
            reason: reason.to_owned(),
        };
        for (key, entry) in auths {
            if !auths_key_matches(key, host) {
                continue;
            }
            if let Some(tok) = entry
                .get("identitytoken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                let user = entry
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or("<token>");
                return Ok(Some(Credential {
                    username: user.to_owned(),
                    secret: Secret::new(tok),
                    kind: CredentialKind::IdentityToken,
                    source: "docker-config (auths)".into(),
                }));
            }
            if let Some(auth) = entry
                .get("auth")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("its `auth` entry is not base64"))?;
                let text =
                    String::from_utf8(raw).map_err(|_| bad("its `auth` entry is not UTF-8"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| bad("its `auth` entry is not user:password"))?;
                return Ok(Some(Credential {
                    username: u.to_owned(),
                    secret: Secret::new(p),
                    kind: CredentialKind::Password,
                    source: "docker-config (auths)".into(),
                }));
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                return Ok(Some(Credential {
                    username: u.to_owned(),
                    secret: Secret::new(p),
                    kind: CredentialKind::Password,
                    source: "docker-config (auths)".into(),
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_entries_answer_for_their_host_and_docker_hub_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpwOnc="},"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}}}"#,
        )
        .unwrap();
        let src = DockerConfig::at(p);
        let c = src.get("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.expose()), ("u", "p:w"));
        assert_eq!(
            src.get("registry-1.docker.io").unwrap().unwrap().username,
            "hub"
        );
        assert!(src.get("ghcr.io").unwrap().is_none());
    }
}
