//! Registry credentials: the `Secret` type that never prints, the
//! `CredentialSource` trait, and the chain that asks each source in turn
//! (explicit/env → OS keyring → docker config → anonymous).

pub mod docker_config;

use std::fmt;

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

impl CredentialSource for Chain {
    fn name(&self) -> &str {
        "chain"
    }
    fn get(&self, host: &str) -> Result<Option<Credential>, AuthError> {
        for s in &self.sources {
            if let Some(c) = s.get(host)? {
                tracing::debug!(host, source = s.name(), "credentials found");
                return Ok(Some(c));
            }
            tracing::trace!(host, source = s.name(), "no credentials");
        }
        tracing::debug!(host, "no credentials in any source; anonymous");
        Ok(None)
    }
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
