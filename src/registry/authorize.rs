//! How a request gets its `Authorization`: Basic or a Bearer token as the
//! registry's challenge asks, tokens cached per scope and renewed, a plain
//! 401 answered with a fresh token, and refusals told apart (wrong
//! credentials, no permission, none given), never sending credentials to
//! another host.

#[allow(unused_imports)]
use super::challenge::*;
#[allow(unused_imports)]
use super::token::*;
use crate::credentials::{CredentialKind, Secret};
use crate::registry::{
    AuthFailure, Client, ErrorBody, Redacted, RegistryError, Req, ReqBody, Result,
};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use url::Url;

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
    pub(super) async fn token(
        &self,
        ctx: &AuthCtx,
        realm: &Url,
        service: Option<&str>,
    ) -> Result<Secret> {
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

    pub(super) async fn fetch_token(
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
    pub(super) async fn forget_token(&self, ctx: &AuthCtx, sent: &HeaderValue) {
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

    pub(super) fn is_bearer(&self, registry: &str) -> bool {
        matches!(self.inner.auth.known(registry), Some(Known::Bearer { .. }))
    }
}
