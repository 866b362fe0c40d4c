//! The distribution protocol on reqwest: auth challenges and tokens, pulling
//! manifests and blobs into a layout, push sessions (monolithic, chunked,
//! resumable) and retries.
//!
//! Written here rather than on `oci-client`, which was considered and
//! rejected: its `push()`/`pull()` buffer whole layers in memory, its chunk
//! size is fixed at 4 MiB, it has no retry, no resume and no upload-status
//! request, and it treats a 202 answer to a cross-repository mount as an
//! error. A registry behind a 100 MB CDN cap, ghcr's 4 MiB limit and flaky
//! networks need all of those.
//!
//! The client never reads credentials itself: it asks the
//! [`CredentialSource`] it was given, once per registry host, and only when
//! the registry challenges. Secrets never appear in errors, logs or `Debug`
//! output; URLs in errors are [`Redacted`].

// Errors carry their context (URL, repository, the registry's code and
// message) as fields; they are rare and not on a hot path, so their size
// does not matter.
#![allow(clippy::result_large_err)]

pub mod archive_http;
mod auth;
mod blob;
mod pull;
mod push;
mod retry;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use url::Url;

use crate::auth::CredentialSource;
use crate::image::Digest;
use crate::image::reference::{is_loopback_host, normalize_registry_host};
use crate::layout::LayoutError;
use crate::progress::Task;

pub use auth::Scope;
pub use pull::Pulled;
pub use push::{BlobHow, BlobOutcome, ChunkHook, PushOptions, PushReport};

/// 1 MiB: the smallest chunk a 413 fallback goes down to.
pub const MIN_CHUNK: u64 = 1024 * 1024;
/// The default chunk size: 64 MiB, under the 100 MB body cap of the CDN in
/// front of Forgejo. ghcr.io needs 4 MiB.
pub const DEFAULT_CHUNK: u64 = 64 * 1024 * 1024;
/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// How much of an error body is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Buffer for streaming blob bodies from disk.
const READ_BUF: usize = 256 * 1024;

/// How the client talks to registries. Plain data; `settings` fills it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback
    /// registries always are, as Docker does.
    pub insecure_hosts: Vec<String>,
    /// Size of each PATCH of a chunked upload.
    pub chunk_size: u64,
    /// Blobs up to this size (and never more than the chunk size) go in one
    /// PUT; larger ones are chunked.
    pub monolithic_max: u64,
    /// Blob uploads or downloads in flight at once.
    pub concurrency: usize,
    /// Attempts per request (and per upload step) before giving up.
    pub max_attempts: u32,
    /// Time allowed to open a connection: an unreachable registry fails in
    /// bounded time.
    pub connect_timeout: Duration,
    /// Time a request may make no progress (no byte sent or received)
    /// before it is abandoned and retried.
    pub read_timeout: Duration,
    /// First retry delay; doubles each attempt, with jitter.
    pub retry_base_delay: Duration,
    /// Longest delay between attempts (a `Retry-After` may ask for up to 60 s).
    pub retry_max_delay: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_hosts: Vec::new(),
            chunk_size: DEFAULT_CHUNK,
            monolithic_max: DEFAULT_CHUNK,
            concurrency: 3,
            max_attempts: 5,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(20),
            user_agent: concat!("guildhall-image/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// A URL made safe to print: no user info, and query values other than a
/// few harmless ones (`digest`, `mount`, `from`, `service`, `scope`, `n`,
/// `last`) replaced by `<redacted>` — upload state and pre-signed storage URLs
/// carry secrets there.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// Redact a URL.
    pub fn new(url: &Url) -> Redacted {
        let mut u = url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        if u.query().is_some() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let keep = matches!(
                        k.as_ref(),
                        "digest" | "mount" | "from" | "service" | "scope" | "n" | "last"
                    );
                    let v = if keep {
                        v.into_owned()
                    } else {
                        "<redacted>".into()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.set_query(None);
            if !pairs.is_empty() {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Redacted(format!("{u}?{}", q.join("&")));
            }
        }
        Redacted(u.to_string())
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What the registry said about a failed request: HTTP status, and the first
/// entry of its JSON `errors` array when it sent one, else a snippet of the
/// body. Never holds request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// The HTTP status.
    pub status: u16,
    /// The registry's error code (`MANIFEST_INVALID`, `BLOB_UNKNOWN`, …).
    pub code: Option<String>,
    /// Its message (and detail, when given).
    pub message: Option<String>,
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => write!(f, "{c}: {m} (HTTP {})", self.status),
            (Some(c), None) => write!(f, "{c} (HTTP {})", self.status),
            (None, Some(m)) => write!(f, "HTTP {}: {m}", self.status),
            (None, None) => write!(f, "HTTP {}", self.status),
        }
    }
}

/// What can go wrong talking to a registry. Each variant names what was
/// being done and to what; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (connection refused, DNS, connect
    /// timeout), after retries.
    #[error("cannot reach registry {registry} ({url})")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// The URL tried.
        url: Redacted,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A request failed in transport after the connection was made (reset,
    /// closed early, stalled), after retries.
    #[error("{method} {url} failed after {attempts} attempt(s)")]
    Transport {
        /// HTTP method.
        method: String,
        /// The URL.
        url: Redacted,
        /// Attempts made.
        attempts: u32,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A request made no progress for the read timeout, after retries.
    #[error("{method} {url}: no progress for {}s, after {attempts} attempt(s)", idle.as_secs())]
    Stalled {
        /// HTTP method.
        method: String,
        /// The URL.
        url: Redacted,
        /// The idle time allowed.
        idle: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// Asking the credential source failed.
    #[error("getting credentials for {registry}")]
    Credentials {
        /// `host[:port]`.
        registry: String,
        /// Why.
        #[source]
        source: crate::auth::AuthError,
    },
    /// Authentication failed: no credentials where some are needed, or the
    /// registry (or its token service) rejected them.
    #[error("authentication to {registry} failed: {reason}")]
    Unauthorized {
        /// `host[:port]`.
        registry: String,
        /// What was refused and why (names the user and credential source,
        /// never the secret).
        reason: String,
    },
    /// Authenticated, but not allowed (403, or a token without the scope).
    #[error("{registry} denied access to {repository}: {reason}")]
    Denied {
        /// `host[:port]`.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry said.
        reason: String,
    },
    /// The token service failed in a way other than rejecting credentials.
    #[error("token service {url} for {registry} failed: {reason}")]
    TokenService {
        /// `host[:port]` of the registry.
        registry: String,
        /// The realm URL.
        url: Redacted,
        /// Why.
        reason: String,
    },
    /// No manifest under that tag or digest (or no such repository).
    #[error("{reference} not found: {body}")]
    ManifestUnknown {
        /// `host/repo:tag` or `host/repo@digest`.
        reference: String,
        /// What the registry said.
        body: ErrorBody,
    },
    /// The index has no manifest for the wanted platform.
    #[error("{reference} has no image for {wanted} (it has: {available})")]
    PlatformNotFound {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms there are, comma-separated.
        available: String,
    },
    /// Bytes from the registry do not match the digest they were asked by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The URL or reference.
        what: String,
        /// The digest expected.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A blob's size is not what its descriptor says.
    #[error("size mismatch for blob {digest} from {url}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Where it came from.
        url: Redacted,
        /// Size in the descriptor.
        expected: u64,
        /// Size received (or more, when the body ran over).
        actual: u64,
    },
    /// The registry refused a request with an error it meant (a 4xx other
    /// than auth): a rejected manifest, an invalid digest, …
    #[error("{registry} rejected {what}: {body}")]
    Rejected {
        /// `host[:port]`.
        registry: String,
        /// What was being done (`manifest sha256:… for REPO:TAG`).
        what: String,
        /// Method and URL.
        url: Redacted,
        /// Status, code and message.
        body: ErrorBody,
    },
    /// The registry kept failing (5xx, 429, 408) until attempts ran out.
    #[error("{method} {url}: {body}, after {attempts} attempt(s)")]
    Status {
        /// HTTP method.
        method: String,
        /// The URL.
        url: Redacted,
        /// Status, code and message of the last answer.
        body: ErrorBody,
        /// Attempts made.
        attempts: u32,
    },
    /// A blob upload gave up: bounded attempts without progress.
    #[error("pushing blob {digest} to {repository} failed after {attempts} attempt(s): {last}")]
    BlobUpload {
        /// The blob.
        digest: Digest,
        /// `host/repo`.
        repository: String,
        /// Consecutive failed attempts.
        attempts: u32,
        /// The last status or cause.
        last: String,
    },
    /// A blob download gave up.
    #[error("pulling blob {digest} from {repository} failed after {attempts} attempt(s): {last}")]
    BlobDownload {
        /// The blob.
        digest: Digest,
        /// `host/repo`.
        repository: String,
        /// Attempts.
        attempts: u32,
        /// The last status or cause.
        last: String,
    },
    /// The server does not speak the registry API: HTML, garbage, missing
    /// headers, a status that makes no sense at that step.
    #[error("{url} answered HTTP {status}, which is not the registry API: {reason}")]
    Protocol {
        /// The URL.
        url: Redacted,
        /// The status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// The registry refuses request bodies even at the smallest chunk size.
    #[error(
        "{registry} refuses request bodies of {} bytes (HTTP 413) even in chunks of the minimum size",
        chunk
    )]
    TooLarge {
        /// `host[:port]`.
        registry: String,
        /// The chunk size refused.
        chunk: u64,
    },
    /// The image in the layout cannot be pushed as it is.
    #[error("image {digest} in {path}: {reason}")]
    BadImage {
        /// The layout directory.
        path: PathBuf,
        /// The manifest or blob.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A local file could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("setting up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// A caller mistake (no tags to push, a bad URL).
    #[error("{0}")]
    Usage(String),
}

impl crate::exit::Classify for RegistryError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            RegistryError::Unauthorized { .. }
            | RegistryError::Denied { .. }
            | RegistryError::Credentials { .. } => ExitCode::Auth,
            RegistryError::ManifestUnknown { .. }
            | RegistryError::PlatformNotFound { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::SizeMismatch { .. }
            | RegistryError::BadImage { .. } => ExitCode::Input,
            RegistryError::Layout(LayoutError::Io { .. }) | RegistryError::Io { .. } => {
                ExitCode::Failure
            }
            RegistryError::Layout(_) => ExitCode::Input,
            RegistryError::Usage(_) => ExitCode::Usage,
            _ => ExitCode::Registry,
        }
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A manifest or index as fetched: its bytes, media type and digest
/// (verified).
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The exact bytes (the digest is over these).
    pub bytes: Vec<u8>,
    /// Media type (from `Content-Type`, else the document's `mediaType`).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// A registry client. Cheap to clone; clones share connections, tokens and
/// what was learnt about each registry.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    creds: Arc<dyn CredentialSource>,
    opts: ClientOptions,
    auth: auth::AuthState,
    /// Chunk sizes lowered after a 413, per registry, so later blobs do not
    /// hit the same wall.
    chunk_caps: Mutex<HashMap<String, u64>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("credentials", &self.inner.creds.name())
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// One request, kept as data so it can be sent again (retries, a fresh token).
#[derive(Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
}

/// A request body that can be made again for each attempt.
#[derive(Clone)]
pub(crate) enum ReqBody {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed; `task` and `sent`
    /// count the bytes actually read into the request.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        task: Option<Task>,
        sent: Option<Arc<AtomicU64>>,
    },
}

impl Req {
    pub(crate) fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
        }
    }

    pub(crate) fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub(crate) fn body(mut self, body: ReqBody) -> Req {
        self.body = body;
        self
    }

    fn redacted(&self) -> Redacted {
        Redacted::new(&self.url)
    }
}

/// How a request failed in transport (no HTTP answer).
pub(crate) enum Failure {
    /// Could not connect.
    Connect(reqwest::Error),
    /// Connected, then the request or response broke.
    Broken(reqwest::Error),
    /// No progress for the read timeout.
    Stalled,
    /// The local file for the body could not be read.
    Local(PathBuf, std::io::Error),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Connect(e) | Failure::Broken(e) => error_chain(e),
            Failure::Stalled => "no progress (timed out)".into(),
            Failure::Local(p, e) => format!("reading {}: {e}", p.display()),
        }
    }
}

/// `e: cause: cause`, for messages that must fit in one field.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Marks the last moment bytes moved, for the idle timeout.
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

impl Client {
    /// A client that asks `creds` for credentials, per registry host.
    pub fn new(creds: Arc<dyn CredentialSource>, opts: ClientOptions) -> Result<Client> {
        if opts.chunk_size == 0 || opts.concurrency == 0 || opts.max_attempts == 0 {
            return Err(RegistryError::Usage(
                "chunk size, concurrency and attempts must be at least 1".into(),
            ));
        }
        // reqwest's own read timeout is a deadline for the response headers
        // counted from the start of the request, which a slow upload of a
        // large chunk would hit; the idle timeout is ours (see `Activity`).
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(RegistryError::Setup)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                creds,
                opts,
                auth: auth::AuthState::default(),
                chunk_caps: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// For `login`: ask `GET /v2/` and follow its challenge with the
    /// credentials the source has for `registry` (Basic: a 200 with them;
    /// Bearer: the token service grants a token, for `repository:REPO:pull`
    /// when a repository is given). An anonymous registry passes.
    pub async fn check_credentials(&self, registry: &str, repository: Option<&str>) -> Result<()> {
        let registry = normalize_registry_host(registry);
        let scope = match repository {
            Some(r) => Scope::pull(r),
            None => Scope::default(),
        };
        let ctx = auth::AuthCtx {
            registry: registry.clone(),
            repository: repository.map(str::to_owned),
            scope,
        };
        if self.creds_for(&registry).await?.is_none() {
            return Err(RegistryError::Unauthorized {
                registry,
                reason: "no credentials for this registry".into(),
            });
        }
        self.authorize(&ctx).await
    }

    /// The base URL of the registry API: `http` for loopback and the
    /// configured insecure hosts, `https` otherwise. Docker Hub's API lives
    /// on `registry-1.docker.io`.
    pub fn base_url(&self, registry: &str) -> Result<Url> {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let insecure = is_loopback_host(host)
            || self.inner.opts.insecure_hosts.iter().any(|h| {
                let h = normalize_registry_host(h);
                h == registry || h == crate::image::reference::host_without_port(registry)
            });
        let scheme = if insecure { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{host}/v2/"))
            .map_err(|e| RegistryError::Usage(format!("`{registry}` is not a registry host: {e}")))
    }

    pub(crate) fn api_url(&self, registry: &str, path: &str) -> Result<Url> {
        self.base_url(registry)?
            .join(path)
            .map_err(|e| RegistryError::Usage(format!("bad registry path `{path}`: {e}")))
    }

    /// Credentials for a registry, asked once and remembered.
    pub(crate) async fn creds_for(
        &self,
        registry: &str,
    ) -> Result<Option<crate::auth::Credential>> {
        if let Some(c) = self.inner.auth.cached_creds(registry) {
            return Ok(c);
        }
        let creds = self.inner.creds.clone();
        let host = registry.to_owned();
        let got = tokio::task::spawn_blocking(move || creds.get(&host))
            .await
            .map_err(|e| RegistryError::Credentials {
                registry: registry.to_owned(),
                source: crate::auth::AuthError::Source {
                    host: registry.to_owned(),
                    source_name: self.inner.creds.name().to_owned(),
                    reason: format!("the lookup panicked: {e}"),
                },
            })?
            .map_err(|source| RegistryError::Credentials {
                registry: registry.to_owned(),
                source,
            })?;
        self.inner.auth.store_creds(registry, got.clone());
        Ok(got)
    }

    /// The effective chunk size for a registry (lowered after a 413).
    fn chunk_size(&self, registry: &str) -> u64 {
        let cap = self
            .inner
            .chunk_caps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .copied();
        match cap {
            Some(c) => c.min(self.inner.opts.chunk_size),
            None => self.inner.opts.chunk_size,
        }
    }

    fn lower_chunk_size(&self, registry: &str, to: u64) {
        let mut caps = self
            .inner
            .chunk_caps
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let e = caps.entry(registry.to_owned()).or_insert(to);
        *e = (*e).min(to);
    }

    /// Send once: no auth logic, no retry. The idle timeout applies.
    pub(crate) async fn send_once(
        &self,
        req: &Req,
        authorization: Option<&HeaderValue>,
    ) -> std::result::Result<Response, Failure> {
        let activity = Activity::new();
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(a) = authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, a.clone());
        }
        builder = match &req.body {
            ReqBody::Empty => {
                if matches!(req.method, Method::PUT | Method::POST | Method::PATCH) {
                    builder.header(CONTENT_LENGTH, "0")
                } else {
                    builder
                }
            }
            ReqBody::Bytes(b) => builder.body(b.clone()),
            ReqBody::File {
                path,
                offset,
                len,
                task,
                sent,
            } => {
                let counters = Counters {
                    activity: activity.clone(),
                    task: task.clone(),
                    sent: sent.clone(),
                };
                let body = file_body(path, *offset, *len, counters)
                    .await
                    .map_err(|e| Failure::Local(path.clone(), e))?;
                builder.header(CONTENT_LENGTH, len.to_string()).body(body)
            }
        };
        let started = Instant::now();
        let fut = builder.send();
        tokio::pin!(fut);
        let idle_limit = self.inner.opts.read_timeout;
        let check = (idle_limit / 4).max(Duration::from_millis(50));
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tokio::time::sleep(check) => {
                    if activity.idle() >= idle_limit {
                        tracing::debug!(method = %req.method, url = %req.redacted(), "no progress; abandoning request");
                        return Err(Failure::Stalled);
                    }
                }
            }
        };
        match result {
            Ok(resp) => {
                tracing::debug!(
                    method = %req.method,
                    url = %req.redacted(),
                    status = resp.status().as_u16(),
                    ms = started.elapsed().as_millis() as u64,
                    "registry request"
                );
                Ok(resp)
            }
            Err(e) => {
                let e = e.without_url();
                tracing::debug!(method = %req.method, url = %req.redacted(), error = %error_chain(&e), "registry request failed");
                if e.is_connect() {
                    Err(Failure::Connect(e))
                } else {
                    Err(Failure::Broken(e))
                }
            }
        }
    }

    /// A transient status (408, 429, 5xx) on attempt `attempt`: wait the
    /// backoff (or the server's `Retry-After`) when attempts remain, else
    /// the error naming the request, its status and body.
    async fn wait_or_give_up(&self, req: &Req, resp: Response, attempt: u32) -> Result<()> {
        if attempt < self.inner.opts.max_attempts {
            let wait = self.backoff(attempt, retry::retry_after(resp.headers()));
            tracing::debug!(
                status = resp.status().as_u16(),
                ?wait,
                "transient status; retrying"
            );
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        let body = read_error_body(resp).await;
        Err(RegistryError::Status {
            method: req.method.to_string(),
            url: req.redacted(),
            body,
            attempts: attempt,
        })
    }

    /// Send with transient-error retries but no registry auth (token service
    /// requests, and requests that carry their own `Authorization`).
    pub(crate) async fn send_plain(
        &self,
        req: &Req,
        authorization: Option<&HeaderValue>,
        registry: &str,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(req, authorization).await {
                Ok(resp) if retry::is_transient_status(resp.status()) => {
                    self.wait_or_give_up(req, resp, attempt).await?;
                    continue;
                }
                Ok(resp) => return Ok(resp),
                Err(f) => {
                    if attempt < self.attempts_for(&f) {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(self.failure_error(req, registry, f, attempt));
                }
            }
        }
    }

    /// Send to a registry: authorization as its challenge asks (a fresh
    /// token and one more try on a 401), retries on transient failures.
    /// With `retry` false, transport failures and transient statuses are
    /// returned at once (upload steps handle them by asking the upload's
    /// status). Non-transient statuses other than 401 come back as `Ok`.
    pub(crate) async fn send(&self, req: &Req, ctx: &auth::AuthCtx, retry: bool) -> Result<Sent> {
        let mut attempt = 0;
        let mut reauthorized = false;
        let mut ctx = std::borrow::Cow::Borrowed(ctx);
        loop {
            attempt += 1;
            let authorization = self.authorization(&ctx).await?;
            match self.send_once(req, authorization.as_ref()).await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = auth::parse_challenges(resp.headers());
                    let body = read_error_body(resp).await;
                    if reauthorized {
                        return Err(self
                            .refused(&ctx, &challenge, authorization.is_some(), &body)
                            .await);
                    }
                    reauthorized = true;
                    if let Some(extra) = self
                        .on_unauthorized(&ctx, &challenge, authorization.as_ref(), &body)
                        .await?
                    {
                        ctx = std::borrow::Cow::Owned(ctx.with_extra(extra));
                    }
                    attempt -= 1; // an auth round trip is not a failed attempt
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::FORBIDDEN => {
                    let body = read_error_body(resp).await;
                    return Err(RegistryError::Denied {
                        registry: ctx.registry.clone(),
                        repository: ctx.repository.clone().unwrap_or_default(),
                        reason: body.to_string(),
                    });
                }
                Ok(resp) if retry && retry::is_transient_status(resp.status()) => {
                    self.wait_or_give_up(req, resp, attempt).await?;
                    continue;
                }
                Ok(resp) => return Ok(Sent::Answer(resp)),
                Err(f) if retry => {
                    if attempt < self.attempts_for(&f) {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(self.failure_error(req, &ctx.registry, f, attempt));
                }
                Err(f) => return Ok(Sent::Failed(f)),
            }
        }
    }

    /// `send` with retries, for requests that must get an answer.
    pub(crate) async fn request(&self, req: &Req, ctx: &auth::AuthCtx) -> Result<Response> {
        match self.send(req, ctx, true).await? {
            Sent::Answer(r) => Ok(r),
            Sent::Failed(f) => Err(self.failure_error(req, &ctx.registry, f, 1)),
        }
    }

    /// Connection failures are retried fewer times than broken requests, so
    /// an unreachable host fails in bounded time (at most 3 connect timeouts).
    fn attempts_for(&self, f: &Failure) -> u32 {
        match f {
            Failure::Connect(_) => self.inner.opts.max_attempts.min(3),
            Failure::Local(..) => 1,
            _ => self.inner.opts.max_attempts,
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry::delay(
            attempt,
            self.inner.opts.retry_base_delay,
            self.inner.opts.retry_max_delay,
            retry_after,
        )
    }

    fn failure_error(&self, req: &Req, registry: &str, f: Failure, attempts: u32) -> RegistryError {
        match f {
            Failure::Connect(source) => RegistryError::Unreachable {
                registry: registry.to_owned(),
                url: req.redacted(),
                source,
            },
            Failure::Broken(source) => RegistryError::Transport {
                method: req.method.to_string(),
                url: req.redacted(),
                attempts,
                source,
            },
            Failure::Stalled => RegistryError::Stalled {
                method: req.method.to_string(),
                url: req.redacted(),
                idle: self.inner.opts.read_timeout,
                attempts,
            },
            Failure::Local(path, source) => RegistryError::Io { path, source },
        }
    }
}

/// The outcome of [`Client::send`] without retries.
pub(crate) enum Sent {
    /// An HTTP answer.
    Answer(Response),
    /// No answer.
    Failed(Failure),
}

/// What counts the bytes of a streamed body.
struct Counters {
    activity: Activity,
    task: Option<Task>,
    sent: Option<Arc<AtomicU64>>,
}

/// A body of `len` bytes of `path` from `offset`, read as it is sent.
async fn file_body(
    path: &std::path::Path,
    offset: u64,
    len: u64,
    counters: Counters,
) -> std::io::Result<reqwest::Body> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let reader = f.take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_BUF).inspect_ok(
        move |chunk: &Bytes| {
            counters.activity.touch();
            let n = chunk.len() as u64;
            if let Some(t) = &counters.task {
                t.inc(n);
            }
            if let Some(s) = &counters.sent {
                s.fetch_add(n, Ordering::Relaxed);
            }
        },
    );
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Read what a registry said about a failure: its JSON `errors`, else a
/// short, printable snippet of the body.
pub(crate) async fn read_error_body(resp: Response) -> ErrorBody {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = read_limited(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    parse_error_body(status, &content_type, &bytes)
}

fn parse_error_body(status: u16, content_type: &str, bytes: &[u8]) -> ErrorBody {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
        detail: Option<serde_json::Value>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(bytes) {
        if let Some(first) = e.errors.into_iter().next() {
            let message = match (first.message, first.detail) {
                (Some(m), Some(d))
                    if !d.is_null() && d.as_object().is_none_or(|o| !o.is_empty()) =>
                {
                    Some(format!("{m} ({})", snippet(d.to_string().as_bytes())))
                }
                (m, _) => m,
            };
            return ErrorBody {
                status,
                code: first.code,
                message,
            };
        }
    }
    let message = if bytes.is_empty() {
        None
    } else if content_type.contains("html") || bytes.trim_ascii_start().starts_with(b"<") {
        Some(format!(
            "an HTML page ({})",
            snippet(strip_tags(bytes).as_bytes())
        ))
    } else {
        Some(snippet(bytes))
    };
    ErrorBody {
        status,
        code: None,
        message,
    }
}

fn strip_tags(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most 200 printable characters.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() > 200 {
        format!("{}…", clean.chars().take(200).collect::<String>())
    } else {
        clean
    }
}

/// Read a response body, failing when it is longer than `limit`.
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err(format!("body longer than {limit} bytes"));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(error_chain(&e.without_url())),
        }
    }
}

/// A header as text, if present and ASCII.
pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_userinfo_and_secret_query_values() {
        let u = Url::parse(
            "https://user:hunter2@r.example/v2/x/blobs/uploads/abc?_state=SECRET&digest=sha256:aa&X-Amz-Signature=SIG",
        )
        .unwrap();
        let r = Redacted::new(&u).to_string();
        assert!(!r.contains("hunter2") && !r.contains("user@"), "{r}");
        assert!(!r.contains("SECRET") && !r.contains("SIG"), "{r}");
        assert!(r.contains("digest=sha256:aa"), "{r}");
        assert!(r.contains("_state=<redacted>"), "{r}");
    }

    #[test]
    fn registry_error_bodies_give_code_and_message() {
        let b = parse_error_body(
            400,
            "application/json",
            br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#,
        );
        assert_eq!(
            b.to_string(),
            "MANIFEST_INVALID: manifest invalid (HTTP 400)"
        );
    }

    #[test]
    fn html_bodies_are_summarised_not_parsed() {
        let b = parse_error_body(
            502,
            "text/html",
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        );
        let s = b.to_string();
        assert!(
            s.contains("HTML page") && s.contains("502 Bad Gateway"),
            "{s}"
        );
    }

    #[test]
    fn loopback_is_plain_http_and_others_need_naming() {
        let c = Client::new(
            Arc::new(crate::auth::Chain::new()),
            ClientOptions {
                insecure_hosts: vec!["reg.internal:5000".into()],
                ..ClientOptions::default()
            },
        )
        .unwrap();
        assert_eq!(c.base_url("127.0.0.1:5000").unwrap().scheme(), "http");
        assert_eq!(c.base_url("reg.internal:5000").unwrap().scheme(), "http");
        assert_eq!(c.base_url("ghcr.io").unwrap().scheme(), "https");
        assert_eq!(
            c.base_url("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/v2/"
        );
    }
}
