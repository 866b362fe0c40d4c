//! One blob's upload session, a small state machine over the registry's
//! upload URL: one PUT for small blobs, PATCHes with `Content-Range` for
//! large ones, the final PUT with the digest; after a lost answer it asks the
//! session's status and goes on from the server's `Range`, trusting neither
//! reading of it (the spec's last offset, Forgejo's byte count) until one
//! works; a session that stays inconsistent is cancelled and the blob
//! starts over; a 413 (or ghcr's 416) lowers the chunk size for the
//! registry. Everything is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::error::answer_error;
use super::token::AuthCtx;
use super::{
    Client, ErrorBody, RegistryError, Req, ReqBody, Result, Sent, header_str, read_error_body,
    retry,
};
use crate::image::reference::RegistryRef;
use crate::image::{Descriptor, Digest};
use crate::progress::{Progress, Task, human_bytes};

#[allow(unused_imports)]
use super::push::*;

pub(super) enum Start {
    Mounted,
    Session(Url),
}

/// The `Location` of a response, resolved against the request URL (it may
/// be relative or absolute).
pub(super) fn location(req: &Req, resp: &Response) -> Result<Url> {
    let loc =
        header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| RegistryError::Protocol {
            url: req.redacted(),
            status: resp.status().as_u16(),
            reason: "no Location header for the upload".into(),
        })?;
    req.url.join(loc).map_err(|e| RegistryError::Protocol {
        url: req.redacted(),
        status: resp.status().as_u16(),
        reason: format!("unusable Location header: {e}"),
    })
}

/// `N` of a `Range: 0-N` header (also `bytes=0-N`), when it has that form.
pub(super) fn range_last(resp: &Response) -> Option<u64> {
    let r = header_str(resp.headers(), "range")?;
    let r = r.trim().strip_prefix("bytes=").unwrap_or(r.trim());
    let (start, end) = r.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start == 0).then_some(end)
}

/// The offset after the last byte a PATCH answer's `Range: 0-N` confirms.
/// `0-0` means nothing (distribution says that for an empty upload; a
/// one-byte upload cannot happen here, chunks being far larger).
pub(super) fn range_end(resp: &Response) -> Option<u64> {
    range_last(resp).map(|end| if end == 0 { 0 } else { end.saturating_add(1) })
}

/// One blob's upload session.
pub(super) struct Upload<'a> {
    pub(super) client: &'a Client,
    pub(super) target: &'a RegistryRef,
    pub(super) ctx: &'a AuthCtx,
    pub(super) blob: &'a Descriptor,
    pub(super) path: std::path::PathBuf,
    pub(super) task: Task,
    pub(super) on_chunk: Option<ChunkHook>,
    pub(super) progress: &'a Progress,
    pub(super) requests: u32,
    /// Blob bytes read into request bodies (retries included).
    pub(super) sent: Arc<AtomicU64>,
}

/// What the next request of a session is.
pub(super) enum Step {
    /// Ask the session's status (after a failure).
    Status,
    /// The whole blob in one PUT.
    Monolithic,
    /// PATCH the next chunk.
    Patch,
    /// PUT `?digest=` with no body.
    Finish,
}

/// How a request of the session went.
pub(super) enum Outcome {
    Ok(Response),
    /// Worth another try after asking the status.
    Transient {
        cause: String,
        retry_after: Option<std::time::Duration>,
        /// The answer was HTTP 500 (not a gateway's 502-504, 524 or a
        /// broken connection).
        server_error: bool,
    },
}

/// Sessions one blob may use before the push gives up on it.
pub(super) const MAX_SESSIONS: u32 = 3;

/// Where an upload-status answer says the upload stands, and the other
/// reading of its `Range`. The spec (and distribution) give the last
/// offset, `0-(N-1)` for N bytes; Forgejo gives the count, `0-N`. Which one
/// a registry speaks is learnt from the first resume that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resume {
    pub(super) offset: u64,
    /// The other reading, not tried yet.
    pub(super) alternative: Option<u64>,
    /// Whether `offset` came from reading the `Range` as a count.
    pub(super) offset_is_count: bool,
    /// Whether the alternative was taken.
    pub(super) took_alternative: bool,
}

impl Resume {
    /// From `Range: 0-last` (None: no usable `Range`, so nothing is known
    /// to be there) for a blob of `size` bytes.
    pub(super) fn from_status(last: Option<u64>, size: u64, count_first: bool) -> Resume {
        let (as_offset, as_count) = match last {
            None | Some(0) => (0, 0),
            Some(n) => (n.saturating_add(1), n),
        };
        let (first, other) = if count_first {
            (as_count, as_offset)
        } else {
            (as_offset, as_count)
        };
        let (first, other) = (first.min(size), other.min(size));
        Resume {
            offset: first,
            alternative: (other != first).then_some(other),
            offset_is_count: count_first,
            took_alternative: false,
        }
    }

    pub(super) fn take_alternative(&mut self) -> Option<u64> {
        let alt = self.alternative.take()?;
        self.took_alternative = true;
        Some(alt)
    }

    /// The reading that turned out to work.
    pub(super) fn reading_is_count(&self) -> bool {
        self.offset_is_count != self.took_alternative
    }
}

/// A refusal of a body as too large that is not a 413: ghcr.io's `416`
/// "the request body is too large and exceeds the maximum permissible
/// limit of 4.00MiB". `Some(limit)` (the limit when the message gives one)
/// for such an answer, `None` for any other.
pub(super) fn chunk_limit(body: &ErrorBody) -> Option<Option<u64>> {
    if body.status != 416 {
        return None;
    }
    let msg = body.message.as_deref()?.to_ascii_lowercase();
    let at = msg
        .find("maximum permissible limit")
        .or_else(|| msg.find("too large"))?;
    let rest = &msg[at..];
    let limit = rest.find(" of ").and_then(|i| {
        let t = rest[i + 4..].trim_start();
        let num: String = t
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let value: f64 = num.parse().ok()?;
        let unit = t[num.len()..].trim_start();
        let mult = if unit.starts_with("gib") {
            1024.0 * 1024.0 * 1024.0
        } else if unit.starts_with("mib") {
            1024.0 * 1024.0
        } else if unit.starts_with("kib") {
            1024.0
        } else if unit.starts_with("gb") {
            1e9
        } else if unit.starts_with("mb") {
            1e6
        } else if unit.starts_with("kb") {
            1e3
        } else {
            return None;
        };
        let bytes = value * mult;
        (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
    });
    Some(limit)
}

impl Upload<'_> {
    pub(super) async fn run(&mut self, session: Option<Url>) -> Result<BlobHow> {
        let size = self.blob.size;
        let registry = self.target.registry.clone();
        let max_attempts = self.client.inner.opts.max_attempts;
        let mut url = match session {
            Some(u) => u,
            None => self.new_session().await?,
        };
        let mut offset = 0u64;
        let mut chunked = self.needs_chunks();
        // Consecutive failed requests without progress (bounded by the
        // attempts), sessions used for this blob (bounded by
        // MAX_SESSIONS), and 416/500 answers at offsets the registry itself
        // reported (two mean the session is inconsistent).
        let mut failures = 0u32;
        let mut sessions = 1u32;
        let mut strikes = 0u32;
        let mut resume: Option<Resume> = None;
        let mut step = None::<Step>;
        loop {
            let next = step.take().unwrap_or(if !chunked && offset == 0 {
                Step::Monolithic
            } else if offset < size {
                Step::Patch
            } else {
                Step::Finish
            });
            let chunk = self.client.chunk_size(&registry);
            let (req, body_len) = self.request_for(&next, &url, offset, chunk);
            self.requests += 1;
            if body_len > 0 {
                self.task.set_position(offset);
            }
            let outcome = match self.client.send(&req, self.ctx, false).await? {
                Sent::Answer(resp) if retry::is_transient_status(resp.status()) => {
                    let status = resp.status();
                    let retry_after = retry::retry_after(resp.headers());
                    let body = read_error_body(resp).await;
                    Outcome::Transient {
                        cause: body.to_string(),
                        retry_after,
                        server_error: status == StatusCode::INTERNAL_SERVER_ERROR,
                    }
                }
                Sent::Answer(resp) => Outcome::Ok(resp),
                Sent::Failed(super::Failure::Local(path, source)) => {
                    return Err(RegistryError::Io { path, source });
                }
                Sent::Failed(f) => Outcome::Transient {
                    cause: f.describe(),
                    retry_after: None,
                    server_error: false,
                },
            };
            let resp = match outcome {
                Outcome::Ok(r) => r,
                Outcome::Transient {
                    cause,
                    retry_after,
                    server_error,
                } => {
                    // A 500 where the registry said the upload stood: its
                    // session may be poisoned (Forgejo's is, for good, after
                    // a body broke mid-copy).
                    if server_error && resume.is_some() && !matches!(next, Step::Status) {
                        strikes += 1;
                        if strikes >= 2 {
                            self.restart(&mut url, &mut sessions, &cause).await?;
                            (offset, chunked, failures, strikes, resume) =
                                (0, self.needs_chunks(), 0, 0, None);
                            continue;
                        }
                    }
                    failures += 1;
                    if failures >= max_attempts {
                        return Err(self.give_up(failures, cause));
                    }
                    let wait = self.client.backoff(failures, retry_after);
                    tracing::debug!(digest = %self.blob.digest, %cause, ?wait, "upload step failed; will ask the upload's status");
                    self.progress.say(format!(
                        "push {}: {cause}; asking the registry how much it has",
                        self.blob.digest.short()
                    ));
                    tokio::time::sleep(wait).await;
                    step = Some(Step::Status);
                    continue;
                }
            };
            let status = resp.status();
            match next {
                Step::Status => match status {
                    StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                        if let Ok(u) = location(&req, &resp) {
                            url = u;
                        }
                        let r = Resume::from_status(
                            range_last(&resp),
                            size,
                            self.client.status_range_is_count(&registry).unwrap_or(
                                self.client.flavor(&registry) == super::token::Flavor::Forgejo,
                            ),
                        );
                        if r.offset != offset {
                            tracing::debug!(digest = %self.blob.digest, from = offset, to = r.offset, "resuming from the registry's Range");
                        }
                        offset = r.offset;
                        if offset > 0 {
                            chunked = true;
                        }
                        resume = Some(r);
                    }
                    StatusCode::NOT_FOUND => {
                        // The session is gone. Maybe because it completed
                        // (the answer to the final PUT was lost)?
                        if self
                            .client
                            .blob_exists(self.target, self.ctx, self.blob)
                            .await?
                        {
                            self.task.set_position(size);
                            return Ok(self.uploaded());
                        }
                        tracing::debug!(digest = %self.blob.digest, "upload session gone; starting a new one");
                        url = self.new_session().await?;
                        (offset, chunked, strikes, resume) = (0, self.needs_chunks(), 0, None);
                    }
                    _ => return Err(self.unexpected(&req, resp).await),
                },
                Step::Monolithic | Step::Finish | Step::Patch => {
                    let ok = match next {
                        Step::Patch => matches!(
                            status,
                            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED
                        ),
                        _ => matches!(
                            status,
                            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK
                        ),
                    };
                    if ok && !matches!(next, Step::Patch) {
                        self.check_digest(&req, &resp)?;
                        self.task.set_position(size);
                        if let Some(r) = resume.take() {
                            self.client
                                .learn_status_range(&registry, r.reading_is_count());
                        }
                        return Ok(self.uploaded());
                    }
                    if ok {
                        url = location(&req, &resp)?;
                        let sent_to = offset + body_len;
                        // What the registry says it holds, never more than
                        // was sent (a count-style `Range` would claim a byte
                        // more).
                        let confirmed = range_end(&resp).unwrap_or(sent_to).min(sent_to);
                        if confirmed > offset {
                            failures = 0;
                            strikes = 0;
                            if let Some(r) = resume.take() {
                                self.client
                                    .learn_status_range(&registry, r.reading_is_count());
                            }
                        } else {
                            failures += 1;
                            if failures >= max_attempts {
                                return Err(self.give_up(
                                    failures,
                                    format!(
                                        "no progress: the registry accepted {failures} chunk(s) in a row but its Range stayed at {confirmed} of {size} bytes"
                                    ),
                                ));
                            }
                        }
                        offset = confirmed;
                        if let Some(h) = &self.on_chunk {
                            h(&self.blob.digest, offset);
                        }
                        continue;
                    }
                    let body = read_error_body(resp).await;
                    let limit = chunk_limit(&body);
                    if status == StatusCode::PAYLOAD_TOO_LARGE || limit.is_some() {
                        if matches!(next, Step::Finish) {
                            return Err(self.unexpected_body(&req, body));
                        }
                        // Nothing of a refused body was stored: the same
                        // offset again, in smaller chunks.
                        self.shrink(body_len, limit.flatten(), &body)?;
                        chunked = true;
                        continue;
                    }
                    match status {
                        StatusCode::RANGE_NOT_SATISFIABLE => {
                            // After a status request: the registry counts
                            // differently; try its other reading once.
                            if let Some(r) = resume.as_mut() {
                                strikes += 1;
                                if let Some(alt) = r.take_alternative() {
                                    tracing::debug!(digest = %self.blob.digest, from = offset, to = alt, "416 at the offset the status gave; trying the other reading of its Range");
                                    offset = alt;
                                    continue;
                                }
                                if strikes >= 2 {
                                    self.restart(&mut url, &mut sessions, &body.to_string())
                                        .await?;
                                    (offset, chunked, failures, strikes, resume) =
                                        (0, self.needs_chunks(), 0, 0, None);
                                    continue;
                                }
                            }
                            failures += 1;
                            if failures >= max_attempts {
                                return Err(self.give_up(failures, body.to_string()));
                            }
                            step = Some(Step::Status);
                        }
                        StatusCode::NOT_FOUND => {
                            failures += 1;
                            if failures >= max_attempts {
                                return Err(self.give_up(failures, body.to_string()));
                            }
                            step = Some(Step::Status);
                        }
                        _ => return Err(self.unexpected_body(&req, body)),
                    }
                }
            }
        }
    }

    /// Whether the blob goes in chunks at the chunk size now in force.
    pub(super) fn needs_chunks(&self) -> bool {
        self.blob.size
            > self
                .client
                .inner
                .opts
                .monolithic_max
                .min(self.client.chunk_size(&self.target.registry))
    }

    /// Give up on an inconsistent session: cancel it and start the blob
    /// over in a new one, at most `MAX_SESSIONS` times per blob.
    async fn restart(&mut self, url: &mut Url, sessions: &mut u32, cause: &str) -> Result<()> {
        *sessions += 1;
        self.requests += 1;
        self.client.cancel_session(self.ctx, url.clone()).await;
        if *sessions > MAX_SESSIONS {
            return Err(self.give_up(
                MAX_SESSIONS,
                format!(
                    "the registry's upload session stayed inconsistent in {MAX_SESSIONS} sessions; it last said: {cause}"
                ),
            ));
        }
        self.progress.say(format!(
            "push {}: the registry's upload session is inconsistent ({cause}); starting the blob over in a new session",
            self.blob.digest.short()
        ));
        *url = self.new_session().await?;
        self.task.set_position(0);
        Ok(())
    }

    pub(super) fn uploaded(&self) -> BlobHow {
        BlobHow::Uploaded {
            requests: self.requests,
            bytes: self.sent.load(Ordering::Relaxed),
        }
    }

    async fn new_session(&mut self) -> Result<Url> {
        self.requests += 1;
        match self
            .client
            .start_session(self.target, self.ctx, self.blob, None)
            .await?
        {
            Start::Session(u) => Ok(u),
            Start::Mounted => unreachable!("a plain POST cannot mount"),
        }
    }

    pub(super) fn request_for(
        &self,
        step: &Step,
        url: &Url,
        offset: u64,
        chunk: u64,
    ) -> (Req, u64) {
        let size = self.blob.size;
        let with_digest = || {
            let mut u = url.clone();
            u.query_pairs_mut()
                .append_pair("digest", &self.blob.digest.to_string());
            u
        };
        let file = |offset: u64, len: u64| ReqBody::File {
            path: self.path.clone(),
            offset,
            len,
            task: Some(self.task.clone()),
            sent: Some(self.sent.clone()),
        };
        match step {
            Step::Status => (Req::new(Method::GET, url.clone()), 0),
            Step::Monolithic => (
                Req::new(Method::PUT, with_digest())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(file(0, size)),
                size,
            ),
            Step::Patch => {
                let len = chunk.min(size - offset);
                (
                    Req::new(Method::PATCH, url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(
                            reqwest::header::CONTENT_RANGE,
                            &format!("{}-{}", offset, offset + len - 1),
                        )
                        .body(file(offset, len)),
                    len,
                )
            }
            Step::Finish => (Req::new(Method::PUT, with_digest()), 0),
        }
    }

    /// A body of `refused` bytes was refused as too large (a 413, or
    /// ghcr's 416 naming its `limit`): lower the chunk size for every blob
    /// going to this registry, and say so when that changed it.
    pub(super) fn shrink(&self, refused: u64, limit: Option<u64>, body: &ErrorBody) -> Result<()> {
        let registry = &self.target.registry;
        match self.client.learn_body_cap(registry, refused, limit) {
            Ok(Some(smaller)) => {
                self.progress.say(format!(
                    "{registry} refused a {} request body ({body}); uploading in chunks of {}",
                    human_bytes(refused),
                    human_bytes(smaller)
                ));
                tracing::debug!(registry = %registry, refused, chunk = smaller, "body too large: smaller chunks");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(chunk) => Err(RegistryError::TooLarge {
                registry: registry.clone(),
                chunk,
            }),
        }
    }

    pub(super) fn check_digest(&self, req: &Req, resp: &Response) -> Result<()> {
        if let Some(theirs) = header_str(resp.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
        {
            if theirs != self.blob.digest {
                return Err(RegistryError::DigestMismatch {
                    what: req.redacted().to_string(),
                    expected: self.blob.digest.clone(),
                    actual: theirs,
                });
            }
        }
        Ok(())
    }

    pub(super) fn give_up(&self, attempts: u32, last: String) -> RegistryError {
        RegistryError::BlobUpload {
            digest: self.blob.digest.clone(),
            repository: self.target.repo_name(),
            attempts,
            last,
        }
    }

    async fn unexpected(&self, req: &Req, resp: Response) -> RegistryError {
        let body = read_error_body(resp).await;
        self.unexpected_body(req, body)
    }

    pub(super) fn unexpected_body(&self, req: &Req, body: ErrorBody) -> RegistryError {
        answer_error(
            &self.target.registry,
            format!("blob {} for {}", self.blob.digest, self.target.repo_name()),
            req,
            body,
            &format!(
                "unexpected answer while uploading blob {}",
                self.blob.digest
            ),
        )
    }
}
