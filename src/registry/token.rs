//! Registry authentication as the registry's `WWW-Authenticate` challenge
//! asks: nothing, Basic, or a Bearer token from the realm (fetched with Basic
//! credentials, or an identity token through `grant_type=refresh_token`),
//! cached per (registry, scope) until it expires.
//!
//! What the client learns about each registry (its challenge, the
//! credentials the source gave for it) is kept for the client's lifetime, so
//! a push asks the credential source once and the token service once per
//! token lifetime. A failed token request is remembered too: wrong
//! credentials give one error, not one per blob.

pub(crate) use super::challenge::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;
use url::Url;

use super::AuthFailure;
use crate::credentials::{Credential, Secret};

/// Token lifetime when the token service does not say (distribution spec).
/// Forgejo never says (its tokens live 24 h), so a push to it asks for a
/// token about once a minute; a token refused earlier is replaced anyway.
pub(super) const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest a token is trusted, whatever `expires_in` says: a huge or
/// absurd value saturates here instead of overflowing the clock.
pub(super) const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The OAuth2 client id sent with identity-token exchanges.
pub(super) const CLIENT_ID: &str = "guildhall-image";

/// The access a request needs, as token scopes
/// (`repository:NAME:pull,push`). Empty for `GET /v2/`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// `repository:REPO:pull`.
    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }

    /// `repository:REPO:pull,push`, plus `repository:FROM:pull` for each
    /// repository blobs may be mounted from.
    pub fn push(repository: &str, mount_from: &[String]) -> Scope {
        let mut s = vec![format!("repository:{repository}:pull,push")];
        for f in mount_from {
            if f != repository {
                s.push(format!("repository:{f}:pull"));
            }
        }
        s.sort();
        s.dedup();
        Scope(s)
    }

    /// The scope strings.
    pub fn items(&self) -> &[String] {
        &self.0
    }

    pub(super) fn key(&self) -> String {
        self.0.join(" ")
    }

    /// This scope and the items of `other` it lacks.
    pub(super) fn union(&self, other: &[String]) -> Scope {
        let mut s = self.0.clone();
        for o in other {
            if !s.contains(o) {
                s.push(o.clone());
            }
        }
        s.sort();
        Scope(s)
    }
}

/// Whom a request is for: the registry (for credentials and the challenge),
/// the repository (for messages) and the scope (for tokens).
#[derive(Clone, Debug)]
pub(crate) struct AuthCtx {
    pub registry: String,
    pub repository: Option<String>,
    pub scope: Scope,
}

impl AuthCtx {
    pub(crate) fn with_extra(&self, extra: Vec<String>) -> AuthCtx {
        AuthCtx {
            scope: self.scope.union(&extra),
            ..self.clone()
        }
    }
}

/// Which registry software is at the other end, as far as its challenge
/// or name tells: it decides a few defaults and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Forgejo or Gitea: `Bearer realm="<ROOT_URL>v2/token",service="container_registry",scope="*"`.
    Forgejo,
    /// ghcr.io.
    Ghcr,
    /// Anything else (CNCF distribution and the like).
    Other,
}

/// Tell the flavour from the registry's Bearer challenge.
pub(super) fn flavor_of(registry: &str, service: Option<&str>, realm: &Url) -> Flavor {
    if registry == "ghcr.io" {
        Flavor::Ghcr
    } else if service == Some("container_registry") && realm.path().ends_with("/v2/token") {
        Flavor::Forgejo
    } else {
        Flavor::Other
    }
}

/// How a registry wants to be spoken to, once known.
#[derive(Clone, Debug)]
pub(super) enum Known {
    /// `GET /v2/` answered without a challenge.
    Anonymous,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

pub(super) struct Token {
    pub(super) value: Secret,
    pub(super) valid_until: Instant,
}

#[derive(Default)]
pub(super) struct TokenSlot {
    pub(super) token: Option<Token>,
    /// A rejection remembered, so parallel requests do not ask again.
    pub(super) failed: Option<(String, AuthFailure)>,
}

/// A token slot, locked while its token is fetched.
pub(super) type SharedSlot = Arc<tokio::sync::Mutex<TokenSlot>>;

/// What the client knows about authenticating to each registry.
#[derive(Default)]
pub(crate) struct AuthState {
    pub(super) known: Mutex<HashMap<String, Known>>,
    pub(super) creds: Mutex<HashMap<String, Option<Credential>>>,
    /// Per (registry, scope key).
    pub(super) tokens: Mutex<HashMap<(String, String), SharedSlot>>,
}

impl AuthState {
    pub(crate) fn cached_creds(&self, registry: &str) -> Option<Option<Credential>> {
        self.creds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .cloned()
    }

    pub(crate) fn store_creds(&self, registry: &str, c: Option<Credential>) {
        self.creds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_owned(), c);
    }

    pub(super) fn flavor(&self, registry: &str) -> Flavor {
        match self.known(registry) {
            Some(Known::Bearer { realm, service }) => {
                flavor_of(registry, service.as_deref(), &realm)
            }
            _ if registry == "ghcr.io" => Flavor::Ghcr,
            _ => Flavor::Other,
        }
    }

    pub(super) fn known(&self, registry: &str) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .cloned()
    }

    pub(super) fn set_known(&self, registry: &str, k: Known) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_owned(), k);
    }

    pub(super) fn slot(&self, registry: &str, scope: &Scope) -> SharedSlot {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((registry.to_owned(), scope.key()))
            .or_default()
            .clone()
    }
}

pub(super) fn basic_header(c: &Credential) -> HeaderValue {
    let raw = format!("{}:{}", c.username, c.secret.expose());
    let enc = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

pub(super) fn bearer_header(t: &Secret) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub(super) fn who(c: &Credential) -> String {
    format!("user `{}` (from {})", c.username, c.source)
}

/// What a denial should tell the user to check.
pub(super) fn permission_hint(
    flavor: Flavor,
    registry: &str,
    user: &str,
    repository: &str,
) -> String {
    let path = repository
        .strip_prefix(registry)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(repository);
    let owner = path.split('/').next().unwrap_or(path);
    match flavor {
        Flavor::Forgejo => format!(
            "the credentials are valid, but they do not allow writing to {repository}: check that the access token has the `write:package` scope, and that `{owner}` in the repository path is `{user}` or an organisation where `{user}` may write packages"
        ),
        Flavor::Ghcr => format!(
            "the credentials are valid, but they do not allow writing to {repository}: check that the token has the `write:packages` scope and that `{user}` may write the package (its repository access settings)"
        ),
        Flavor::Other => format!(
            "the credentials are valid, but they do not allow writing to {repository}: check the permissions of `{user}` on it"
        ),
    }
}

/// The lifetime a token response gives: `expires_in` seconds when it is a
/// positive number, saturated at [`MAX_TOKEN_TTL`]; the default otherwise.
pub(super) fn token_ttl(expires_in: Option<&serde_json::Value>) -> Duration {
    let secs = expires_in.and_then(|v| {
        v.as_u64()
            .map(|s| s as f64)
            .or_else(|| v.as_f64())
            .filter(|s| s.is_finite() && *s >= 1.0)
    });
    match secs {
        Some(s) if s >= MAX_TOKEN_TTL.as_secs_f64() => MAX_TOKEN_TTL,
        Some(s) => Duration::from_secs_f64(s),
        None => DEFAULT_TOKEN_TTL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, CredentialKind, Secret};

    #[test]
    fn absurd_token_lifetimes_saturate_or_fall_back_instead_of_panicking() {
        use serde_json::json;
        assert_eq!(token_ttl(Some(&json!(u64::MAX))), MAX_TOKEN_TTL);
        assert_eq!(token_ttl(Some(&json!(1e300))), MAX_TOKEN_TTL);
        assert_eq!(token_ttl(Some(&json!(300))), Duration::from_secs(300));
        assert_eq!(token_ttl(Some(&json!(-5))), DEFAULT_TOKEN_TTL);
        assert_eq!(token_ttl(Some(&json!(0))), DEFAULT_TOKEN_TTL);
        assert_eq!(token_ttl(Some(&json!("soon"))), DEFAULT_TOKEN_TTL);
        assert_eq!(token_ttl(None), DEFAULT_TOKEN_TTL);
    }

    #[test]
    fn forgejo_is_told_by_its_challenge() {
        let realm = Url::parse("https://git.example/v2/token").unwrap();
        assert_eq!(
            flavor_of("git.example", Some("container_registry"), &realm),
            Flavor::Forgejo
        );
        assert_eq!(
            flavor_of("r.example", Some("registry"), &realm),
            Flavor::Other
        );
        assert_eq!(flavor_of("ghcr.io", None, &realm), Flavor::Ghcr);
    }

    #[test]
    fn bearer_challenges_give_realm_service_and_scope() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:a/b:pull,push repository:c:pull")
        );
    }

    #[test]
    fn several_challenges_and_escapes_parse() {
        let c = parse_www_authenticate(
            r#"Basic realm="a \"quoted\" realm", Bearer realm="https://x/t", error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert!(parse_www_authenticate("").is_empty());
        assert_eq!(parse_www_authenticate("Basic").len(), 1);
    }

    #[test]
    fn push_scopes_ask_pull_on_mount_sources() {
        let s = Scope::push("team/app", &["team/base".into(), "team/app".into()]);
        assert_eq!(
            s.items(),
            ["repository:team/app:pull,push", "repository:team/base:pull"]
        );
    }

    #[test]
    fn basic_headers_are_marked_sensitive() {
        let c = Credential {
            username: "u".into(),
            secret: Secret::new("p"),
            kind: CredentialKind::Password,
            source: "test".into(),
        };
        let h = basic_header(&c);
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Basic dTpw");
        assert!(!format!("{h:?}").contains("dTpw"));
    }
}
