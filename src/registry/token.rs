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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::{AuthFailure, Client, ErrorBody, Redacted, RegistryError, Req, ReqBody, Result};
use crate::credentials::{Credential, CredentialKind, Secret};

/// Token lifetime when the token service does not say (distribution spec).
/// Forgejo never says (its tokens live 24 h), so a push to it asks for a
/// token about once a minute; a token refused earlier is replaced anyway.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest a token is trusted, whatever `expires_in` says: a huge or
/// absurd value saturates here instead of overflowing the clock.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The OAuth2 client id sent with identity-token exchanges.
const CLIENT_ID: &str = "guildhall-image";

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

    fn key(&self) -> String {
        self.0.join(" ")
    }

    /// This scope and the items of `other` it lacks.
    fn union(&self, other: &[String]) -> Scope {
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

/// One parsed challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `basic` or `bearer` (lower-cased).
    pub scheme: String,
    /// Parameters, keys lower-cased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge in the response's `WWW-Authenticate` headers.
pub(crate) fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

/// Parse `Bearer realm="…",service="…",scope="a b"` (several challenges
/// may share one header: `Basic realm="x", Bearer realm="y"`).
pub(crate) fn parse_www_authenticate(s: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=') {
            *i += 1;
        }
        s[start..*i].to_owned()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let name = token(&mut i);
        if name.is_empty() {
            i += 1;
            continue;
        }
        // A parameter `name=value` belongs to the current challenge; a bare
        // token starts a new one.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch_len = utf8_len(b[i]);
                    v.push_str(&s[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some(c) = out.last_mut() {
                c.params.push((name.to_ascii_lowercase(), value));
            }
        } else if j < b.len() && b[j] == b'=' {
            // token68 or junk before any scheme: skip it.
            i = j + 1;
            token(&mut i);
        } else {
            out.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
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
fn flavor_of(registry: &str, service: Option<&str>, realm: &Url) -> Flavor {
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
enum Known {
    /// `GET /v2/` answered without a challenge.
    Anonymous,
    Basic,
    Bearer {
        realm: Url,
        service: Option<String>,
    },
}

struct Token {
    value: Secret,
    valid_until: Instant,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<Token>,
    /// A rejection remembered, so parallel requests do not ask again.
    failed: Option<(String, AuthFailure)>,
}

/// A token slot, locked while its token is fetched.
type SharedSlot = Arc<tokio::sync::Mutex<TokenSlot>>;

/// What the client knows about authenticating to each registry.
#[derive(Default)]
pub(crate) struct AuthState {
    known: Mutex<HashMap<String, Known>>,
    creds: Mutex<HashMap<String, Option<Credential>>>,
    /// Per (registry, scope key).
    tokens: Mutex<HashMap<(String, String), SharedSlot>>,
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

    fn flavor(&self, registry: &str) -> Flavor {
        match self.known(registry) {
            Some(Known::Bearer { realm, service }) => {
                flavor_of(registry, service.as_deref(), &realm)
            }
            _ if registry == "ghcr.io" => Flavor::Ghcr,
            _ => Flavor::Other,
        }
    }

    fn known(&self, registry: &str) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .cloned()
    }

    fn set_known(&self, registry: &str, k: Known) {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_owned(), k);
    }

    fn slot(&self, registry: &str, scope: &Scope) -> SharedSlot {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((registry.to_owned(), scope.key()))
            .or_default()
            .clone()
    }
}

fn basic_header(c: &Credential) -> HeaderValue {
    let raw = format!("{}:{}", c.username, c.secret.expose());
    let enc = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    v.set_sensitive(true);
    v
}

fn bearer_header(t: &Secret) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn who(c: &Credential) -> String {
    format!("user `{}` (from {})", c.username, c.source)
}

/// What a denial should tell the user to check.
fn permission_hint(flavor: Flavor, registry: &str, user: &str, repository: &str) -> String {
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

impl Client {
    /// Which registry software `registry` is, as far as its challenge tells
    /// (after the first request to it).
    pub fn flavor(&self, registry: &str) -> Flavor {
        self.inner.auth.flavor(registry)
    }

    /// Learn the registry's challenge (`GET /v2/`) if it is not known yet,
    /// and make sure credentials work for `ctx`: Basic is tried against
    /// `/v2/`, a Bearer token is fetched. Errors here are the one clear
    /// authentication error of a command.
    pub(crate) async fn authorize(&self, ctx: &AuthCtx) -> Result<()> {
        let url = self.api_url(&ctx.registry, "")?;
        let req = Req::new(Method::GET, url);
        if self.inner.auth.known(&ctx.registry).is_none() {
            let resp = self.send_plain(&req, None, &ctx.registry).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let ch = parse_challenges(resp.headers());
                let body = super::read_error_body(resp).await;
                self.on_unauthorized(ctx, &ch, None, &body).await?;
            } else if status.is_success() {
                self.inner.auth.set_known(&ctx.registry, Known::Anonymous);
                return Ok(());
            } else {
                let body = super::read_error_body(resp).await;
                return Err(RegistryError::Protocol {
                    url: req.redacted(),
                    status: status.as_u16(),
                    reason: format!("`GET /v2/` should answer 200 or 401 ({body})"),
                });
            }
        }
        match self.inner.auth.known(&ctx.registry) {
            Some(Known::Basic) => {
                let h = self.authorization(ctx).await?;
                let resp = self.send_plain(&req, h.as_ref(), &ctx.registry).await?;
                if resp.status() == StatusCode::UNAUTHORIZED {
                    let body = super::read_error_body(resp).await;
                    let ch = Vec::new();
                    return Err(self.refused(ctx, &ch, h.is_some(), &body).await);
                }
                Ok(())
            }
            Some(Known::Bearer { .. }) => self.authorization(ctx).await.map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The `Authorization` header for a request, as far as the registry's
    /// challenge is known (none before the first 401).
    pub(crate) async fn authorization(&self, ctx: &AuthCtx) -> Result<Option<HeaderValue>> {
        match self.inner.auth.known(&ctx.registry) {
            None | Some(Known::Anonymous) => Ok(None),
            Some(Known::Basic) => Ok(self
                .creds_for(&ctx.registry)
                .await?
                .map(|c| basic_header(&c))),
            Some(Known::Bearer { realm, service }) => {
                let token = self.token(ctx, &realm, service.as_deref()).await?;
                Ok(bearer_header(&token))
            }
        }
    }

    /// A valid token for the context's scope: the cached one, else a new
    /// one from the realm. One request at a time per (registry, scope).
    async fn token(&self, ctx: &AuthCtx, realm: &Url, service: Option<&str>) -> Result<Secret> {
        let slot = self.inner.auth.slot(&ctx.registry, &ctx.scope);
        let mut slot = slot.lock().await;
        if let Some((reason, kind)) = &slot.failed {
            return Err(RegistryError::Unauthorized {
                registry: ctx.registry.clone(),
                reason: reason.clone(),
                kind: *kind,
            });
        }
        if let Some(t) = &slot.token {
            if Instant::now() < t.valid_until {
                return Ok(t.value.clone());
            }
        }
        match self.fetch_token(ctx, realm, service).await {
            Ok(t) => {
                let v = t.value.clone();
                slot.token = Some(t);
                Ok(v)
            }
            Err(RegistryError::Unauthorized {
                registry,
                reason,
                kind,
            }) => {
                slot.failed = Some((reason.clone(), kind));
                Err(RegistryError::Unauthorized {
                    registry,
                    reason,
                    kind,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_token(
        &self,
        ctx: &AuthCtx,
        realm: &Url,
        service: Option<&str>,
    ) -> Result<Token> {
        let creds = self.creds_for(&ctx.registry).await?;
        let started = Instant::now();
        let (req, authorization) = match &creds {
            Some(c) if c.kind == CredentialKind::IdentityToken => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("client_id", CLIENT_ID);
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                if !ctx.scope.items().is_empty() {
                    form.append_pair("scope", &ctx.scope.key());
                }
                form.append_pair("refresh_token", c.secret.expose());
                let req = Req::new(Method::POST, realm.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(ReqBody::Bytes(form.finish().into_bytes().into()));
                (req, None)
            }
            _ => {
                let mut url = realm.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in ctx.scope.items() {
                        q.append_pair("scope", s);
                    }
                    if let Some(c) = &creds {
                        q.append_pair("account", &c.username);
                    }
                }
                (Req::new(Method::GET, url), creds.as_ref().map(basic_header))
            }
        };
        let resp = self
            .send_plain(&req, authorization.as_ref(), &ctx.registry)
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = super::read_error_body(resp).await;
            let (reason, kind) = match &creds {
                Some(c) => (
                    format!(
                        "the token service {} rejected the credentials of {} ({body})",
                        Redacted::new(realm),
                        who(c)
                    ),
                    AuthFailure::WrongCredentials,
                ),
                None => (
                    format!(
                        "the registry requires authentication and no credentials were found for it ({body})"
                    ),
                    AuthFailure::NoCredentials,
                ),
            };
            return Err(RegistryError::Unauthorized {
                registry: ctx.registry.clone(),
                reason,
                kind,
            });
        }
        if !status.is_success() {
            let body = super::read_error_body(resp).await;
            return Err(RegistryError::TokenService {
                registry: ctx.registry.clone(),
                url: Redacted::new(realm),
                reason: body.to_string(),
            });
        }
        let bytes = super::read_limited(resp, 1024 * 1024)
            .await
            .map_err(|reason| RegistryError::TokenService {
                registry: ctx.registry.clone(),
                url: Redacted::new(realm),
                reason,
            })?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            /// Any JSON: a number of seconds is used, anything else ignored.
            expires_in: Option<serde_json::Value>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::TokenService {
                registry: ctx.registry.clone(),
                url: Redacted::new(realm),
                reason: format!("the answer is not a token response: {e}"),
            })?;
        let value = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::TokenService {
                registry: ctx.registry.clone(),
                url: Redacted::new(realm),
                reason: "the answer has neither `token` nor `access_token`".into(),
            })?;
        let ttl = token_ttl(parsed.expires_in.as_ref());
        // Renew a little early (a fifth of the lifetime, at most 30 s) so a
        // request does not set out with a token about to die.
        let margin = (ttl / 5).min(Duration::from_secs(30));
        tracing::debug!(registry = %ctx.registry, scope = %ctx.scope.key(), ttl_s = ttl.as_secs(), "token granted");
        let valid_until = started
            .checked_add(ttl - margin)
            .unwrap_or_else(|| started + DEFAULT_TOKEN_TTL);
        Ok(Token {
            value: Secret::new(value),
            valid_until,
        })
    }

    /// A 401 arrived: learn the challenge, drop a token the registry no
    /// longer takes, and say whether another try makes sense (`Ok`), with
    /// scope items the challenge asked for beyond the context's; or the
    /// error to report at once.
    ///
    /// - A Bearer challenge: (re)learn the realm, forget the token sent.
    /// - A Basic challenge to a request that carried a Bearer token the
    ///   registry's own token service issued: the credentials are valid but
    ///   the access is not granted (Forgejo's `reqPackageAccess`). Not a
    ///   reason to switch to Basic.
    /// - No challenge at all, to a Bearer token: the token is expired or
    ///   otherwise refused (Forgejo answers so); a fresh one is fetched
    ///   through the realm already known, and the request tried once more.
    pub(crate) async fn on_unauthorized(
        &self,
        ctx: &AuthCtx,
        challenges: &[Challenge],
        sent: Option<&HeaderValue>,
        body: &ErrorBody,
    ) -> Result<Option<Vec<String>>> {
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().find(|c| c.scheme == "basic");
        let sent_bearer = sent.is_some_and(|h| h.as_bytes().starts_with(b"Bearer "));
        if let Some(b) = bearer {
            let realm = b
                .param("realm")
                .and_then(|r| Url::parse(r).ok())
                .ok_or_else(|| RegistryError::Unauthorized {
                    registry: ctx.registry.clone(),
                    reason: "the registry's Bearer challenge has no usable realm".into(),
                    kind: AuthFailure::WrongCredentials,
                })?;
            self.inner.auth.set_known(
                &ctx.registry,
                Known::Bearer {
                    realm,
                    service: b.param("service").map(str::to_owned),
                },
            );
            if let Some(sent) = sent {
                self.forget_token(ctx, sent).await;
            }
            let extra: Vec<String> = b
                .param("scope")
                .map(|s| {
                    s.split(' ')
                        .filter(|x| {
                            !x.is_empty() && *x != "*" && !ctx.scope.items().iter().any(|y| y == x)
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            return Ok((!extra.is_empty()).then_some(extra));
        }
        if basic.is_some() && sent_bearer && self.is_bearer(&ctx.registry) {
            return Err(self.denied(ctx, body).await);
        }
        if basic.is_some() {
            self.inner.auth.set_known(&ctx.registry, Known::Basic);
            let creds = self.creds_for(&ctx.registry).await?;
            return match (creds, sent) {
                (None, _) => Err(RegistryError::Unauthorized {
                    registry: ctx.registry.clone(),
                    reason: format!(
                        "the registry requires authentication and no credentials were found for it ({body})"
                    ),
                    kind: AuthFailure::NoCredentials,
                }),
                (Some(c), Some(_)) => Err(RegistryError::Unauthorized {
                    registry: ctx.registry.clone(),
                    reason: format!(
                        "the registry rejected the credentials of {} ({body})",
                        who(&c)
                    ),
                    kind: AuthFailure::WrongCredentials,
                }),
                (Some(_), None) => Ok(None),
            };
        }
        if let (Some(sent), true) = (sent, self.is_bearer(&ctx.registry)) {
            tracing::debug!(registry = %ctx.registry, "HTTP 401 without a challenge to a token; fetching a fresh one");
            self.forget_token(ctx, sent).await;
            return Ok(None);
        }
        Err(RegistryError::Unauthorized {
            registry: ctx.registry.clone(),
            reason: format!("HTTP 401 without a Basic or Bearer challenge ({body})"),
            kind: AuthFailure::WrongCredentials,
        })
    }

    /// Drop the cached token if it is the one sent (another request may
    /// have replaced it already).
    async fn forget_token(&self, ctx: &AuthCtx, sent: &HeaderValue) {
        let slot = self.inner.auth.slot(&ctx.registry, &ctx.scope);
        let mut slot = slot.lock().await;
        let same = slot
            .token
            .as_ref()
            .and_then(|t| bearer_header(&t.value))
            .is_some_and(|h| h.as_bytes() == sent.as_bytes());
        if same {
            tracing::debug!(registry = %ctx.registry, "token refused; fetching a fresh one");
            slot.token = None;
        }
    }

    /// The error for valid credentials (a token was issued) without the
    /// access asked for; anonymous callers hear that they have no
    /// credentials.
    pub(crate) async fn denied(&self, ctx: &AuthCtx, body: &ErrorBody) -> RegistryError {
        let repository = ctx.repository.clone().unwrap_or_default();
        match self.creds_for(&ctx.registry).await.ok().flatten() {
            Some(c) => RegistryError::Denied {
                registry: ctx.registry.clone(),
                repository: repository.clone(),
                reason: format!(
                    "{}: {} ({body})",
                    who(&c),
                    permission_hint(
                        self.flavor(&ctx.registry),
                        &ctx.registry,
                        &c.username,
                        &repository
                    )
                ),
            },
            None => RegistryError::Unauthorized {
                registry: ctx.registry.clone(),
                reason: format!(
                    "no credentials were found for it, and an anonymous token may not write to {repository} ({body})"
                ),
                kind: AuthFailure::NoCredentials,
            },
        }
    }

    /// The error for a second 401 in a row.
    pub(crate) async fn refused(
        &self,
        ctx: &AuthCtx,
        challenges: &[Challenge],
        sent_auth: bool,
        body: &ErrorBody,
    ) -> RegistryError {
        let creds = self.creds_for(&ctx.registry).await.ok().flatten();
        let insufficient = challenges
            .iter()
            .any(|c| c.param("error") == Some("insufficient_scope"));
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        match (creds, sent_auth) {
            (Some(_), true) if insufficient || (basic && self.is_bearer(&ctx.registry)) => {
                self.denied(ctx, body).await
            }
            (Some(c), true) if challenges.is_empty() && self.is_bearer(&ctx.registry) => {
                RegistryError::Unauthorized {
                    registry: ctx.registry.clone(),
                    reason: format!(
                        "the registry refused a token its token service had just issued to {} ({body})",
                        who(&c)
                    ),
                    kind: AuthFailure::WrongCredentials,
                }
            }
            (Some(_), true) if self.is_bearer(&ctx.registry) => self.denied(ctx, body).await,
            (Some(c), _) => RegistryError::Unauthorized {
                registry: ctx.registry.clone(),
                reason: format!(
                    "the registry rejected the credentials of {} ({body})",
                    who(&c)
                ),
                kind: AuthFailure::WrongCredentials,
            },
            (None, _) => RegistryError::Unauthorized {
                registry: ctx.registry.clone(),
                reason: format!(
                    "the registry requires authentication and no credentials were found for it ({body})"
                ),
                kind: AuthFailure::NoCredentials,
            },
        }
    }

    fn is_bearer(&self, registry: &str) -> bool {
        matches!(self.inner.auth.known(registry), Some(Known::Bearer { .. }))
    }
}

/// The lifetime a token response gives: `expires_in` seconds when it is a
/// positive number, saturated at [`MAX_TOKEN_TTL`]; the default otherwise.
fn token_ttl(expires_in: Option<&serde_json::Value>) -> Duration {
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
