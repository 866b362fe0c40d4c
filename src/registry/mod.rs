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
mod authorize;
mod blob;
mod challenge;
mod error;
mod pull;
mod push;
mod redact;
mod retry;
mod token;
mod transport;
mod upload;

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

use crate::credentials::CredentialSource;
use crate::image::Digest;
use crate::image::reference::{is_loopback_host, normalize_registry_host};
use crate::layout::LayoutError;
use crate::progress::Task;

pub use error::*;
pub use pull::Pulled;
pub use push::{BlobHow, BlobOutcome, ChunkHook, PushOptions, PushReport, PushRequest};
pub use redact::Redacted;
pub use token::{Flavor, Scope};
pub(crate) use transport::*;

/// 1 MiB: the smallest chunk size that may be configured. Below it a push
/// spends its time on request overhead (`--chunk-size 1` would send a byte
/// per request).
pub const MIN_CHUNK: u64 = 1024 * 1024;
/// 64 KiB: how low a registry's own 413 (or ghcr-style 416) may push the
/// chunk size. A registry that refuses even that is reported as such.
pub const FORCED_MIN_CHUNK: u64 = 64 * 1024;
/// The default chunk size for registries the tool knows nothing about:
/// 64 MiB, under the 100 MB request cap common to CDNs.
pub const DEFAULT_CHUNK: u64 = 64 * 1024 * 1024;
/// The chunk size for Forgejo behind Cloudflare: 16 MiB. Cloudflare buffers
/// each request body (at most 100 MB), then gives the origin about 100 s to
/// answer and drops connections idle for about 30 s. A 16 MiB chunk leaves
/// a wide margin under the cap, takes about 13 s to send on a 10 Mbit/s
/// uplink (an ordinary office or home line; 64 MiB would take 54 s, too close
/// to those windows), is appended by Forgejo to its session file in well
/// under a second, and bounds what one lost answer costs to 16 MiB sent
/// again. Fewer, larger requests only pay on fast links, where 16 MiB
/// chunks already run at line speed.
pub const FORGEJO_CHUNK: u64 = 16 * 1024 * 1024;
/// ghcr.io takes at most 4 MiB per upload request.
pub const GHCR_CHUNK: u64 = 4 * 1024 * 1024;
/// The idle bound while a request body is being sent (or a response body
/// received): no byte moving for this long means the connection is dead.
/// Cloudflare itself gives up on a connection idle for about 30 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound for the answer to a request that was sent in full. Cloudflare
/// gives the origin 100 s to answer and then sends `524` itself; waiting
/// longer than that means the client hears the 524 (and resumes from the
/// upload's status) instead of abandoning a request the origin may still be
/// finishing (Forgejo copies a whole blob into storage on the final PUT).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(150);
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
    /// Time a request may make no progress while its body is being sent,
    /// or while a response body is being received (no byte moving), before
    /// it is abandoned and retried.
    pub read_timeout: Duration,
    /// Time allowed for the answer (its headers) once the request, body
    /// included, was sent in full; also the most a small response body
    /// (a manifest, a token, an error) may take to arrive. Longer than
    /// `read_timeout`: a server may rightly think for a while (a CDN in
    /// front waits up to 100 s for its origin).
    pub response_timeout: Duration,
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
            read_timeout: DEFAULT_IDLE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(20),
            user_agent: concat!("guildhall-image/", env!("CARGO_PKG_VERSION")).to_owned(),
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
    /// The document, parsed.
    pub doc: crate::image::ImageDoc,
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
    auth: token::AuthState,
    /// Request body caps learned from a 413 (or ghcr's 416), per registry,
    /// shared by every blob of every push of this client, so one refusal
    /// teaches all of them.
    chunk_caps: Mutex<HashMap<String, u64>>,
    /// Registries whose upload-status `Range` was found to be a byte count
    /// (`0-N` for N bytes, as Forgejo answers) rather than the last offset.
    status_range_is_count: Mutex<HashMap<String, bool>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("credentials", &self.inner.creds.name())
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that asks `creds` for credentials, per registry host.
    pub fn new(creds: Arc<dyn CredentialSource>, opts: ClientOptions) -> Result<Client> {
        if opts.concurrency == 0 || opts.max_attempts == 0 {
            return Err(RegistryError::Usage(
                "concurrency and attempts must be at least 1".into(),
            ));
        }
        if opts.chunk_size < MIN_CHUNK {
            return Err(RegistryError::Usage(format!(
                "the chunk size must be at least 1 MiB ({} bytes given); a registry that refuses large bodies is detected and the chunk size lowered as far as it needs",
                opts.chunk_size
            )));
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
                auth: token::AuthState::default(),
                chunk_caps: Mutex::new(HashMap::new()),
                status_range_is_count: Mutex::new(HashMap::new()),
            }),
        })
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
        let ctx = token::AuthCtx {
            registry: registry.clone(),
            repository: repository.map(str::to_owned),
            scope,
        };
        if self.creds_for(&registry).await?.is_none() {
            return Err(RegistryError::Unauthorized {
                registry,
                reason: "no credentials for this registry".into(),
                kind: AuthFailure::NoCredentials,
            });
        }
        self.authorize(&ctx).await
    }

    /// The base URL of the registry API: `http` for loopback and the
    /// configured insecure hosts, `https` otherwise. Docker Hub's API lives
    /// on `registry-1.docker.io`.
    pub fn base_url(&self, registry: &str) -> Result<Url> {
        let host = crate::image::reference::api_host(registry);
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
    ) -> Result<Option<crate::credentials::Credential>> {
        if let Some(c) = self.inner.auth.cached_creds(registry) {
            return Ok(c);
        }
        let creds = self.inner.creds.clone();
        let host = registry.to_owned();
        let got = tokio::task::spawn_blocking(move || creds.get(&host))
            .await
            .map_err(|e| RegistryError::Credentials {
                registry: registry.to_owned(),
                source: crate::credentials::AuthError::Source {
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
    pub(crate) fn chunk_size(&self, registry: &str) -> u64 {
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

    /// A body of `refused` bytes was refused as too large (`limit`: the
    /// largest body the registry said it takes, when it said). Returns the
    /// new cap when this lowered it, `None` when the cap already in force is
    /// below `refused` (the request set out before another blob's refusal
    /// taught it): every blob to this registry shares what one learnt.
    pub(crate) fn learn_body_cap(
        &self,
        registry: &str,
        refused: u64,
        limit: Option<u64>,
    ) -> std::result::Result<Option<u64>, u64> {
        let mut caps = self
            .inner
            .chunk_caps
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let current = caps
            .get(registry)
            .copied()
            .unwrap_or(self.inner.opts.chunk_size)
            .min(self.inner.opts.chunk_size);
        let wanted = match limit {
            Some(l) if l < refused => l,
            _ if refused > current => return Ok(None),
            _ => refused / 2,
        };
        if wanted < FORCED_MIN_CHUNK {
            return Err(refused);
        }
        if wanted >= current {
            return Ok(None);
        }
        caps.insert(registry.to_owned(), wanted);
        Ok(Some(wanted))
    }

    /// Whether the registry's upload-status `Range` is known to be a byte
    /// count; `None` when not learnt yet.
    pub(crate) fn status_range_is_count(&self, registry: &str) -> Option<bool> {
        self.inner
            .status_range_is_count
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .copied()
    }

    pub(crate) fn learn_status_range(&self, registry: &str, is_count: bool) {
        self.inner
            .status_range_is_count
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_owned(), is_count);
    }

    /// Whether `url` is on the registry's own origin (scheme, host, port):
    /// only then may its credentials go with a request.
    pub(crate) fn is_registry_origin(&self, url: &Url, registry: &str) -> bool {
        match self.base_url(registry) {
            Ok(base) => {
                base.scheme() == url.scheme()
                    && base.host_str() == url.host_str()
                    && base.port_or_known_default() == url.port_or_known_default()
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests;
