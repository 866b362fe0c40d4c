//! Registry credentials: the `Secret` type that never prints, the
//! `CredentialSource` trait, and the chain that asks each source in turn
//! (explicit/env → OS keyring → docker config → anonymous), built in one
//! place by [`chain_for`].

pub mod docker_config;
pub mod helpers;
pub mod keyring;

use std::fmt;

use self::docker_config::DockerConfig;
use self::keyring::KeyringSource;

/// A secret (password or token). `Debug` and `Display` print `<redacted>`;
/// only [`Secret::expose`] gives the text, at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret text. Call only where it is sent to the registry.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        // SAFETY: zero bytes are valid UTF-8.
        unsafe { self.0.as_bytes_mut().iter_mut().for_each(|b| *b = 0) };
    }
}

/// What a credential is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// Username and password (or personal access token), sent as Basic.
    Password,
    /// An OAuth2 refresh token (docker config `identitytoken`), exchanged at
    /// the token realm with `grant_type=refresh_token`.
    IdentityToken,
}

/// Credentials for one registry host, and where they came from.
#[derive(Clone, Debug)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password, token or identity token.
    pub secret: Secret,
    /// What the secret is.
    pub kind: CredentialKind,
    /// The source that answered (`flag`, `env`, `keyring`, `docker-config`, …),
    /// for `-v` output.
    pub source: String,
}

/// Why a source could not answer. Sources that are merely unavailable (no
/// keyring daemon) return `Ok(None)` instead, so the chain goes on.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credential source failed in a way the user must fix.
    #[error("reading credentials for {host} from {source_name}: {reason}")]
    Source {
        /// The registry host.
        host: String,
        /// The source.
        source_name: String,
        /// Why (never containing a secret).
        reason: String,
    },
}

/// A place credentials can come from.
pub trait CredentialSource: Send + Sync {
    /// Short name for messages (`env`, `keyring`, …).
    fn name(&self) -> &str;
    /// Credentials for a registry host (`host[:port]`, normalised with
    /// [`crate::image::reference::normalize_registry_host`]), or `None`.
    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError>;
}

/// Asks each source in order; the first answer wins; none means anonymous.
#[derive(Default)]
pub struct Chain {
    sources: Vec<Box<dyn CredentialSource>>,
}

impl Chain {
    /// An empty chain (anonymous everywhere).
    pub fn new() -> Chain {
        Chain::default()
    }
    /// Append a source.
    pub fn with(mut self, s: impl CredentialSource + 'static) -> Chain {
        self.sources.push(Box::new(s));
        self
    }
    /// Append a boxed source.
    pub fn push(&mut self, s: Box<dyn CredentialSource>) {
        self.sources.push(s);
    }
}

impl Chain {
    /// The sources' names, in order (`env, keyring, docker-config`).
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        if names.is_empty() {
            "anonymous only".into()
        } else {
            names.join(", ")
        }
    }

    /// Ask every source (not just until the first answer) what it has for
    /// `host`: for `credentials --host`. Holds no secret.
    pub fn explain(&self, host: &str) -> Vec<SourceAnswer> {
        self.sources
            .iter()
            .map(|s| match s.get(host) {
                Ok(Some(c)) => SourceAnswer {
                    source: s.name().to_owned(),
                    answer: Some(c.source.clone()),
                    username: Some(c.username.clone()),
                    identity_token: c.kind == CredentialKind::IdentityToken,
                    error: None,
                },
                Ok(None) => SourceAnswer {
                    source: s.name().to_owned(),
                    answer: None,
                    username: None,
                    identity_token: false,
                    error: None,
                },
                Err(e) => SourceAnswer {
                    source: s.name().to_owned(),
                    answer: None,
                    username: None,
                    identity_token: false,
                    error: Some(e.to_string()),
                },
            })
            .collect()
    }
}

/// What one source of a chain has for a host (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceAnswer {
    /// The source (`flags`, `env`, `keyring`, `docker-config`).
    pub source: String,
    /// Where exactly its credentials come from (`keyring (secret-service)`,
    /// `docker-config (credHelpers: pass)`), when it has some.
    pub answer: Option<String>,
    /// The user name, when it has credentials.
    pub username: Option<String>,
    /// Whether the secret is an identity (refresh) token.
    pub identity_token: bool,
    /// Why the source failed, when it did.
    pub error: Option<String>,
}

impl CredentialSource for Chain {
    fn name(&self) -> &str {
        "chain"
    }
    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        for s in &self.sources {
            if let Some(c) = s.get(host)? {
                tracing::debug!(host, source = %c.source, username = %c.username, "credentials found");
                return Ok(Some(c));
            }
            tracing::trace!(host, source = s.name(), "no credentials");
        }
        tracing::debug!(host, "no credentials in any source; anonymous");
        Ok(None)
    }
}

/// The user name for the push target, from the environment (CI secrets).
pub const USERNAME_ENV: &str = "GUILDHALL_IMAGE_USERNAME";
/// The password or token for the push target, from the environment.
pub const PASSWORD_ENV: &str = "GUILDHALL_IMAGE_PASSWORD";

/// What the chain takes from the process environment, gathered once (tests
/// give their own).
pub struct ChainEnv {
    /// `GUILDHALL_IMAGE_USERNAME` / `GUILDHALL_IMAGE_PASSWORD`, when both are
    /// set and not empty.
    pub credentials: Option<(String, Secret)>,
    /// The OS keyring (`GUILDHALL_IMAGE_KEYRING` narrows or disables it).
    pub keyring: KeyringSource,
    /// The docker config (`DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: DockerConfig,
}

impl ChainEnv {
    /// Read the environment. Half-given env credentials (a CI secret that is
    /// missing expands to an empty string) are ignored with a warning.
    pub fn from_process() -> ChainEnv {
        let user = std::env::var(USERNAME_ENV).ok().filter(|v| !v.is_empty());
        let pass = std::env::var(PASSWORD_ENV).ok().filter(|v| !v.is_empty());
        let credentials = match (user, pass) {
            (Some(u), Some(p)) => Some((u, Secret::new(p))),
            (Some(_), None) => {
                tracing::warn!(
                    "{USERNAME_ENV} is set but {PASSWORD_ENV} is empty or unset; both ignored"
                );
                None
            }
            (None, Some(_)) => {
                tracing::warn!(
                    "{PASSWORD_ENV} is set but {USERNAME_ENV} is empty or unset; both ignored"
                );
                None
            }
            (None, None) => None,
        };
        ChainEnv {
            credentials,
            keyring: KeyringSource::from_env(),
            docker_config: DockerConfig::from_env(),
        }
    }
}

/// The credential chain of a command, first answer wins:
///
/// 1. `explicit` (`--username` + `--password-stdin`), for the push target only;
/// 2. env `GUILDHALL_IMAGE_USERNAME`/`_PASSWORD`, for the push target only —
///    never sent to a base image's registry or any other host;
/// 3. the OS keyring;
/// 4. the docker config (`credHelpers`, `credsStore`, `auths`);
/// 5. nothing: anonymous.
///
/// Without a push target (`build` without `--push`, `inspect`) `explicit` and
/// the env credentials are not used. With `-v` the chain says which source
/// answered for which host (never the secret).
pub fn chain_for(
    push_target_host: Option<&str>,
    explicit: Option<Credential>,
    env: ChainEnv,
) -> Chain {
    let mut chain = Chain::new();
    match push_target_host {
        Some(host) => {
            if let Some(c) = explicit {
                chain.push(Box::new(ForHost::from_credential(host, c)));
            }
            if let Some((user, secret)) = env.credentials {
                chain.push(Box::new(ForHost::new(host, user, secret, "env")));
            }
        }
        None => {
            if explicit.is_some() {
                tracing::debug!("credentials from flags ignored: no push target");
            }
            if env.credentials.is_some() {
                tracing::debug!(
                    "credentials from {USERNAME_ENV}/{PASSWORD_ENV} ignored: no push target"
                );
            }
        }
    }
    if env.keyring.is_enabled() {
        chain.push(Box::new(env.keyring));
    }
    chain.push(Box::new(env.docker_config));
    tracing::debug!(
        push_target = push_target_host.unwrap_or("-"),
        sources = %chain.describe(),
        "credential chain"
    );
    chain
}

/// Credentials given for exactly one host (flags, or env for the push target).
pub struct ForHost {
    host: String,
    cred: Credential,
}

impl ForHost {
    /// Credentials that answer only for `host`.
    pub fn new(host: &str, username: String, secret: Secret, source: &str) -> ForHost {
        ForHost {
            host: crate::image::reference::normalize_registry_host(host),
            cred: Credential {
                username,
                secret,
                kind: CredentialKind::Password,
                source: source.into(),
            },
        }
    }
}

impl ForHost {
    /// These credentials (their kind and source kept), only for `host`.
    pub fn from_credential(host: &str, cred: Credential) -> ForHost {
        ForHost {
            host: crate::image::reference::normalize_registry_host(host),
            cred,
        }
    }
}

impl CredentialSource for ForHost {
    fn name(&self) -> &str {
        &self.cred.source
    }
    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        Ok(
            (crate::image::reference::normalize_registry_host(host) == self.host)
                .then(|| self.cred.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        let c = Credential {
            username: "u".into(),
            secret: s,
            kind: CredentialKind::Password,
            source: "flag".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn host_scoped_credentials_answer_only_their_host() {
        let chain = Chain::new().with(ForHost::new(
            "git.guildhouse.dev",
            "u".into(),
            Secret::new("p"),
            "env",
        ));
        assert!(chain.get("git.guildhouse.dev").unwrap().is_some());
        assert!(chain.get("ghcr.io").unwrap().is_none());
    }
}
