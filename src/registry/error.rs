//! What can go wrong talking to a registry, each error naming what was being done and to what (never a secret), and what a registry's error body says.

#[allow(unused_imports)]
use super::*;

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
    /// A request made no progress for the idle timeout while sending, or
    /// got no answer within the response timeout once sent, after retries.
    #[error(
        "{method} {url}: {}, after {attempts} attempt(s)",
        if *waiting_for_answer {
            format!("no answer {}s after the request was sent", idle.as_secs())
        } else {
            format!("no progress for {}s", idle.as_secs())
        }
    )]
    Stalled {
        /// HTTP method.
        method: String,
        /// The URL.
        url: Redacted,
        /// The time allowed.
        idle: Duration,
        /// Whether the request had been sent in full (the response timeout
        /// ran out) rather than stalling while sending (the idle timeout).
        waiting_for_answer: bool,
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
        source: crate::credentials::AuthError,
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
        /// Which kind of failure.
        kind: AuthFailure,
    },
    /// Authenticated (the credentials are valid, a token was issued), but
    /// not allowed: a 403, a token without the scope, or Forgejo's
    /// `Basic realm="Gitea Package API"` answer to a write.
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
        "{registry} refuses request bodies of {} bytes (HTTP 413 or 416) even in chunks of the minimum size",
        chunk
    )]
    TooLarge {
        /// `host[:port]`.
        registry: String,
        /// The chunk size refused.
        chunk: u64,
    },
    /// The image in its source cannot be pushed as it is.
    #[error("image {digest} in {source_name}: {reason}")]
    BadImage {
        /// Where it is (`the layout _build/image`).
        source_name: String,
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

impl RegistryError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        match self {
            RegistryError::Unauthorized { .. }
            | RegistryError::Denied { .. }
            | RegistryError::Credentials { .. } => ExitCode::Auth,
            RegistryError::ManifestUnknown { .. }
            | RegistryError::PlatformNotFound { .. }
            | RegistryError::DigestMismatch { .. }
            | RegistryError::SizeMismatch { .. }
            | RegistryError::BadImage { .. } => ExitCode::Input,
            RegistryError::Layout(LayoutError::Io(_)) | RegistryError::Io { .. } => {
                ExitCode::Failure
            }
            RegistryError::Layout(_) => ExitCode::Input,
            RegistryError::Usage(_) => ExitCode::Usage,
            _ => ExitCode::Registry,
        }
    }
}

/// Why authentication failed, for messages and `--json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    /// The registry needs credentials and none were found.
    NoCredentials,
    /// The credentials were refused (by the token service or the registry).
    WrongCredentials,
}

impl RegistryError {
    /// For authentication and authorisation failures, what kind they are:
    /// `no_credentials`, `wrong_credentials` (the credentials themselves
    /// were refused) or `no_permission` (they are valid, the access is not
    /// granted).
    pub fn auth_kind(&self) -> Option<&'static str> {
        match self {
            RegistryError::Unauthorized {
                kind: AuthFailure::NoCredentials,
                ..
            } => Some("no_credentials"),
            RegistryError::Unauthorized { .. } => Some("wrong_credentials"),
            RegistryError::Denied { .. } => Some("no_permission"),
            _ => None,
        }
    }
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
    match read_limited(resp, MAX_ERROR_BODY).await {
        Ok(bytes) => parse_error_body(status, &content_type, &bytes),
        Err(reason) => ErrorBody {
            status,
            code: None,
            message: Some(format!("(its body could not be read: {reason})")),
        },
    }
}

pub(super) fn parse_error_body(status: u16, content_type: &str, bytes: &[u8]) -> ErrorBody {
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

pub(super) fn strip_tags(bytes: &[u8]) -> String {
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
pub(super) fn snippet(bytes: &[u8]) -> String {
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

/// A 4xx that is the registry speaking (JSON errors) becomes `Rejected`;
/// anything else (HTML, a 200-range surprise) is a protocol error saying
/// while doing `what` it came.
pub(crate) fn rejected_or_protocol(
    registry: &str,
    what: String,
    req: &Req,
    body: ErrorBody,
) -> RegistryError {
    answer_error(
        registry,
        what.clone(),
        req,
        body,
        &format!("while fetching {what}"),
    )
}

/// [`rejected_or_protocol`] with the protocol error's wording given.
pub(crate) fn answer_error(
    registry: &str,
    what: String,
    req: &Req,
    body: ErrorBody,
    during: &str,
) -> RegistryError {
    if body.code.is_some() {
        RegistryError::Rejected {
            registry: registry.to_owned(),
            what,
            url: req.redacted(),
            body,
        }
    } else {
        RegistryError::Protocol {
            url: req.redacted(),
            status: body.status,
            reason: format!("{during}: {body}"),
        }
    }
}

/// A response body of at most `limit` bytes, read within its deadline; a
/// longer, stalled or broken body is a protocol error naming the request.
pub(crate) async fn read_body(req: &Req, resp: Response, limit: usize) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    read_limited(resp, limit)
        .await
        .map_err(|reason| RegistryError::Protocol {
            url: req.redacted(),
            status,
            reason,
        })
}
