//! Pushing an image from a layout: HEAD every blob, mount or upload what is
//! missing (several at once), then the manifest, then each further tag.
//!
//! An upload session is a small state machine over the registry's upload
//! URL: one PUT for small blobs, PATCHes of `chunk` bytes with
//! `Content-Range` for large ones, and a final PUT with the digest. After a
//! broken connection or a server error it asks the session's status and
//! goes on from the server's `Range`, trusting neither reading of it (the
//! spec's last offset, Forgejo's byte count) until one works; a session that
//! stays inconsistent is cancelled and the blob starts over in a new one; a
//! lost session starts a new one; a 413 (or ghcr's 416) lowers the chunk size
//! for every blob to that registry. Everything is bounded. Bytes stream from
//! the blob file, so memory does not grow with blob size.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::pull::rejected_or_protocol;
use super::token::{AuthCtx, Scope};
use super::{
    Client, ErrorBody, RegistryError, Req, ReqBody, Result, Sent, header_str, read_error_body,
    retry,
};
use crate::image::reference::RegistryRef;
use crate::image::source::BlobSource;
use crate::image::{Descriptor, Digest, ImageDoc, media};
use crate::progress::{Progress, Task, human_bytes};

/// Called with a blob's digest and the offset the registry confirmed,
/// after each chunk of a chunked upload (for tests that interrupt a push at
/// a known point, and for callers that log progress in their own way).
pub type ChunkHook = Arc<dyn Fn(&Digest, u64) + Send + Sync>;

/// Options for one push.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Repositories on the same registry that may hold the blobs already
    /// (the base image's): missing blobs are mounted from them
    /// (`?mount=&from=`) before anything is uploaded.
    pub mount_from: Vec<String>,
    /// See [`ChunkHook`].
    pub on_chunk: Option<ChunkHook>,
}

impl fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushOptions")
            .field("mount_from", &self.mount_from)
            .field("on_chunk", &self.on_chunk.is_some())
            .finish()
    }
}

/// What happened to one blob.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum BlobHow {
    /// The registry had it (HEAD answered 200).
    Existed,
    /// Mounted from another repository of the registry.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Uploaded.
    Uploaded {
        /// Requests of the upload session (POST, PATCHes, PUTs, status GETs).
        requests: u32,
        /// Bytes of the blob sent, retries included.
        bytes: u64,
    },
}

/// One blob of the pushed image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlobOutcome {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// What was done.
    #[serde(flatten)]
    pub how: BlobHow,
}

/// The result of [`Client::push`]: only returned once the registry
/// confirmed the manifest under every tag.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    /// The manifest (or index) digest.
    pub digest: Digest,
    /// `HOST/REPO@sha256:…`.
    pub reference: String,
    /// Every blob, in manifest order.
    pub blobs: Vec<BlobOutcome>,
    /// The tags pushed.
    pub tags: Vec<String>,
}

impl PushReport {
    /// Blobs uploaded (not existing, not mounted).
    pub fn uploaded(&self) -> usize {
        self.blobs
            .iter()
            .filter(|b| matches!(b.how, BlobHow::Uploaded { .. }))
            .count()
    }
}

/// One push: which image, from where, to where, under which tags.
pub struct PushRequest<'a> {
    /// Where the image's blobs are (the layout).
    pub source: &'a dyn BlobSource,
    /// The manifest or index to push.
    pub image: &'a Descriptor,
    /// The repository.
    pub target: &'a RegistryRef,
    /// The tags to set (at least one).
    pub tags: &'a [String],
    /// Mounts and hooks.
    pub options: &'a PushOptions,
    /// Progress display.
    pub progress: &'a Progress,
}

/// What a push sends, children before parents.
struct Plan {
    blobs: Vec<Descriptor>,
    /// Child manifests of an index, pushed by digest before the top one.
    children: Vec<(Digest, String, Vec<u8>)>,
    top: Vec<u8>,
}

impl Client {
    /// Push an image (a manifest or an index, with every blob it reaches, from
    /// its source) to a repository under each of its tags (at least one).
    /// Blobs the registry has are not sent again; the manifest goes last,
    /// after every blob is confirmed.
    pub async fn push(&self, req: PushRequest<'_>) -> Result<PushReport> {
        let PushRequest {
            source,
            image: manifest,
            target,
            tags,
            options: opts,
            progress,
        } = req;
        if tags.is_empty() {
            return Err(RegistryError::Usage("push needs at least one tag".into()));
        }
        let plan = plan(source, manifest)?;
        let mount_from: Vec<String> = opts
            .mount_from
            .iter()
            .filter(|m| **m != target.repository)
            .cloned()
            .collect();
        let ctx = AuthCtx {
            registry: target.registry.clone(),
            repository: Some(target.repo_name()),
            scope: Scope::push(&target.repository, &mount_from),
        };
        // One ping and one token before the fan-out: bad credentials are a
        // single error, not one per blob.
        self.authorize(&ctx).await?;
        if self.flavor(&target.registry) == super::token::Flavor::Forgejo {
            check_forgejo_tags(&target.repo_name(), tags, progress)?;
        }

        // Largest first, so the long uploads start early.
        let mut order: Vec<usize> = (0..plan.blobs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(plan.blobs[i].size));
        let mut outcomes: Vec<(usize, BlobOutcome)> =
            futures_util::stream::iter(order.into_iter().map(|i| {
                let b = &plan.blobs[i];
                let ctx = &ctx;
                let mount_from = &mount_from;
                async move {
                    let how = self
                        .push_blob(source, target, ctx, b, mount_from, opts, progress)
                        .await?;
                    Ok::<_, RegistryError>((
                        i,
                        BlobOutcome {
                            digest: b.digest.clone(),
                            size: b.size,
                            how,
                        },
                    ))
                }
            }))
            .buffer_unordered(self.inner.opts.concurrency)
            .try_collect()
            .await?;
        outcomes.sort_by_key(|(i, _)| *i);

        for (digest, media_type, bytes) in &plan.children {
            self.put_manifest(target, &ctx, &digest.to_string(), media_type, bytes)
                .await?;
        }
        let mut digest = None;
        for tag in tags {
            let d = self
                .put_manifest(target, &ctx, tag, &manifest.media_type, &plan.top)
                .await?;
            digest = Some(d);
        }
        let digest = digest.expect("at least one tag");
        Ok(PushReport {
            reference: format!("{}/{}@{}", target.registry, target.repository, digest),
            digest,
            blobs: outcomes.into_iter().map(|(_, o)| o).collect(),
            tags: tags.to_vec(),
        })
    }

    /// PUT a manifest under a tag or digest; the registry's digest must be ours.
    async fn put_manifest(
        &self,
        target: &RegistryRef,
        ctx: &AuthCtx,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let ours = Digest::of(bytes);
        // Forgejo refuses a media type with parameters; none is needed.
        let media_type = media_type.split(';').next().unwrap_or(media_type).trim();
        let url = self.api_url(
            &target.registry,
            &format!("{}/manifests/{reference}", target.repository),
        )?;
        let req = Req::new(Method::PUT, url)
            .header(CONTENT_TYPE, media_type)
            .body(ReqBody::Bytes(bytes::Bytes::copy_from_slice(bytes)));
        let resp = self.request(&req, ctx).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_error_body(resp).await;
            return Err(rejected_or_protocol(
                &target.registry,
                format!("manifest {ours} for {}:{reference}", target.repo_name()),
                &req,
                body,
            ));
        }
        if status != StatusCode::CREATED
            && status != StatusCode::OK
            && status != StatusCode::ACCEPTED
        {
            return Err(RegistryError::Protocol {
                url: req.redacted(),
                status: status.as_u16(),
                reason: "a manifest PUT should answer 201 Created".into(),
            });
        }
        if let Some(theirs) = header_str(resp.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
        {
            if theirs != ours {
                return Err(RegistryError::DigestMismatch {
                    what: format!("the manifest stored at {}:{reference}", target.repo_name()),
                    expected: ours,
                    actual: theirs,
                });
            }
        }
        Ok(ours)
    }

    /// HEAD, then mount or upload.
    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        source: &dyn BlobSource,
        target: &RegistryRef,
        ctx: &AuthCtx,
        b: &Descriptor,
        mount_from: &[String],
        opts: &PushOptions,
        progress: &Progress,
    ) -> Result<BlobHow> {
        if self.blob_exists(target, ctx, b).await? {
            tracing::debug!(digest = %b.digest, "blob exists");
            return Ok(BlobHow::Existed);
        }
        let (path, _) = source
            .blob_file(&b.digest)
            .map_err(|e| RegistryError::BadImage {
                source_name: source.name(),
                digest: b.digest.clone(),
                reason: e.to_string(),
            })?;
        let mut requests = 0u32;
        let mut session = None;
        for (i, from) in mount_from.iter().enumerate() {
            requests += 1;
            match self.start_session(target, ctx, b, Some(from)).await? {
                Start::Mounted => {
                    tracing::debug!(digest = %b.digest, from = %from, "blob mounted");
                    return Ok(BlobHow::Mounted { from: from.clone() });
                }
                // The registry opened an upload instead (202). With more
                // sources to try, give it back; with none, use it.
                Start::Session(url) if i + 1 < mount_from.len() => {
                    requests += 1;
                    self.cancel_session(ctx, url).await;
                }
                Start::Session(url) => session = Some(url),
            }
        }
        let task = progress.task(format!("push {}", b.digest.short()), Some(b.size));
        let mut up = Upload {
            client: self,
            target,
            ctx,
            blob: b,
            path,
            task: task.clone(),
            on_chunk: opts.on_chunk.clone(),
            progress,
            requests,
            sent: Arc::new(AtomicU64::new(0)),
        };
        let how = up.run(session).await?;
        task.finish("pushed");
        Ok(how)
    }

    async fn blob_exists(
        &self,
        target: &RegistryRef,
        ctx: &AuthCtx,
        b: &Descriptor,
    ) -> Result<bool> {
        let url = self.api_url(
            &target.registry,
            &format!("{}/blobs/{}", target.repository, b.digest),
        )?;
        let req = Req::new(Method::HEAD, url);
        let resp = self.request(&req, ctx).await?;
        match resp.status() {
            StatusCode::OK => {
                // A registry that has the digest with another size is broken;
                // upload rather than trust it.
                let len = header_str(resp.headers(), CONTENT_LENGTH.as_str())
                    .and_then(|l| l.parse::<u64>().ok());
                Ok(len.is_none_or(|l| l == b.size))
            }
            StatusCode::NOT_FOUND => Ok(false),
            s => {
                let body = read_error_body(resp).await;
                if s.is_client_error() {
                    Err(rejected_or_protocol(
                        &target.registry,
                        format!("HEAD of blob {}", b.digest),
                        &req,
                        body,
                    ))
                } else {
                    Err(RegistryError::Protocol {
                        url: req.redacted(),
                        status: s.as_u16(),
                        reason: "a blob HEAD should answer 200 or 404".into(),
                    })
                }
            }
        }
    }

    /// Cancel an upload session, best effort (the registry purges stale
    /// sessions anyway).
    async fn cancel_session(&self, ctx: &AuthCtx, url: Url) {
        let req = Req::new(Method::DELETE, url);
        if let Ok(Sent::Answer(r)) = self.send(&req, ctx, false).await {
            tracing::debug!(status = r.status().as_u16(), "upload session cancelled");
        }
    }

    /// POST to start an upload (or mount from `from`).
    async fn start_session(
        &self,
        target: &RegistryRef,
        ctx: &AuthCtx,
        b: &Descriptor,
        from: Option<&str>,
    ) -> Result<Start> {
        let mut url = self.api_url(
            &target.registry,
            &format!("{}/blobs/uploads/", target.repository),
        )?;
        if let Some(from) = from {
            url.query_pairs_mut()
                .append_pair("mount", &b.digest.to_string())
                .append_pair("from", from);
        }
        let req = Req::new(Method::POST, url);
        let resp = self.request(&req, ctx).await?;
        match resp.status() {
            StatusCode::CREATED if from.is_some() => Ok(Start::Mounted),
            StatusCode::ACCEPTED => Ok(Start::Session(location(&req, &resp)?)),
            s => {
                let body = read_error_body(resp).await;
                if s.is_client_error() {
                    Err(rejected_or_protocol(
                        &target.registry,
                        format!("an upload of blob {} to {}", b.digest, target.repo_name()),
                        &req,
                        body,
                    ))
                } else {
                    Err(RegistryError::Protocol {
                        url: req.redacted(),
                        status: s.as_u16(),
                        reason: format!("starting an upload should answer 202 ({body})"),
                    })
                }
            }
        }
    }
}

enum Start {
    Mounted,
    Session(Url),
}

/// The `Location` of a response, resolved against the request URL (it may
/// be relative or absolute).
fn location(req: &Req, resp: &Response) -> Result<Url> {
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
fn range_last(resp: &Response) -> Option<u64> {
    let r = header_str(resp.headers(), "range")?;
    let r = r.trim().strip_prefix("bytes=").unwrap_or(r.trim());
    let (start, end) = r.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start == 0).then_some(end)
}

/// The offset after the last byte a PATCH answer's `Range: 0-N` confirms.
/// `0-0` means nothing (distribution says that for an empty upload; a
/// one-byte upload cannot happen here, chunks being far larger).
fn range_end(resp: &Response) -> Option<u64> {
    range_last(resp).map(|end| if end == 0 { 0 } else { end.saturating_add(1) })
}

/// One blob's upload session.
struct Upload<'a> {
    client: &'a Client,
    target: &'a RegistryRef,
    ctx: &'a AuthCtx,
    blob: &'a Descriptor,
    path: std::path::PathBuf,
    task: Task,
    on_chunk: Option<ChunkHook>,
    progress: &'a Progress,
    requests: u32,
    /// Blob bytes read into request bodies (retries included).
    sent: Arc<AtomicU64>,
}

/// What the next request of a session is.
enum Step {
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
enum Outcome {
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
const MAX_SESSIONS: u32 = 3;

/// Where an upload-status answer says the upload stands, and the other
/// reading of its `Range`. The spec (and distribution) give the last
/// offset, `0-(N-1)` for N bytes; Forgejo gives the count, `0-N`. Which one
/// a registry speaks is learnt from the first resume that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resume {
    offset: u64,
    /// The other reading, not tried yet.
    alternative: Option<u64>,
    /// Whether `offset` came from reading the `Range` as a count.
    offset_is_count: bool,
    /// Whether the alternative was taken.
    took_alternative: bool,
}

impl Resume {
    /// From `Range: 0-last` (None: no usable `Range`, so nothing is known
    /// to be there) for a blob of `size` bytes.
    fn from_status(last: Option<u64>, size: u64, count_first: bool) -> Resume {
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

    fn take_alternative(&mut self) -> Option<u64> {
        let alt = self.alternative.take()?;
        self.took_alternative = true;
        Some(alt)
    }

    /// The reading that turned out to work.
    fn reading_is_count(&self) -> bool {
        self.offset_is_count != self.took_alternative
    }
}

/// A refusal of a body as too large that is not a 413: ghcr.io's `416`
/// "the request body is too large and exceeds the maximum permissible
/// limit of 4.00MiB". `Some(limit)` (the limit when the message gives one)
/// for such an answer, `None` for any other.
fn chunk_limit(body: &ErrorBody) -> Option<Option<u64>> {
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
    async fn run(&mut self, session: Option<Url>) -> Result<BlobHow> {
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
    fn needs_chunks(&self) -> bool {
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

    fn uploaded(&self) -> BlobHow {
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

    fn request_for(&self, step: &Step, url: &Url, offset: u64, chunk: u64) -> (Req, u64) {
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
    fn shrink(&self, refused: u64, limit: Option<u64>, body: &ErrorBody) -> Result<()> {
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

    fn check_digest(&self, req: &Req, resp: &Response) -> Result<()> {
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

    fn give_up(&self, attempts: u32, last: String) -> RegistryError {
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

    fn unexpected_body(&self, req: &Req, body: ErrorBody) -> RegistryError {
        if body.code.is_some() {
            RegistryError::Rejected {
                registry: self.target.registry.clone(),
                what: format!("blob {} for {}", self.blob.digest, self.target.repo_name()),
                url: req.redacted(),
                body,
            }
        } else {
            RegistryError::Protocol {
                url: req.redacted(),
                status: body.status,
                reason: format!(
                    "unexpected answer while uploading blob {}: {body}",
                    self.blob.digest
                ),
            }
        }
    }
}

/// Forgejo stores tags lower-cased (`Runner` and `runner` are one tag):
/// refuse tags that differ only by case, and say how an upper-case tag will
/// be stored.
fn check_forgejo_tags(repository: &str, tags: &[String], progress: &Progress) -> Result<()> {
    for (i, a) in tags.iter().enumerate() {
        if let Some(b) = tags[i + 1..]
            .iter()
            .find(|b| *b != a && b.eq_ignore_ascii_case(a))
        {
            return Err(RegistryError::Usage(format!(
                "tags `{a}` and `{b}` differ only by case, and Forgejo stores tags lower-cased: they would be one tag `{}` in {repository}; push one of them",
                a.to_lowercase()
            )));
        }
    }
    for t in tags {
        if t.chars().any(|c| c.is_ascii_uppercase()) {
            progress.say(format!(
                "note: Forgejo stores tags lower-cased: `{t}` will be `{}` in {repository}",
                t.to_lowercase()
            ));
        }
    }
    Ok(())
}

/// What to send for `manifest`: its blobs (deduplicated, sizes checked
/// against the source) and, for an index, its child manifests.
fn plan(source: &dyn BlobSource, manifest: &Descriptor) -> Result<Plan> {
    let bad = |digest: &Digest, reason: String| RegistryError::BadImage {
        source_name: source.name(),
        digest: digest.clone(),
        reason,
    };
    let read = |d: &Digest| source.read_blob(d).map_err(|e| bad(d, e.to_string()));
    let top = read(&manifest.digest)?;
    let doc = ImageDoc::parse(
        &format!("manifest {}", manifest.digest),
        Some(&manifest.media_type),
        &top,
    )
    .map_err(|e| bad(&manifest.digest, e.reason))?;
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut children = Vec::new();
    let mut add = |doc: &ImageDoc, blobs: &mut Vec<Descriptor>| -> Result<()> {
        for b in doc.children() {
            if !seen.insert(b.digest.clone()) {
                continue;
            }
            let (_, have) = source
                .blob_file(&b.digest)
                .map_err(|e| bad(&b.digest, e.to_string()))?;
            if have != b.size {
                return Err(bad(
                    &b.digest,
                    format!("the blob is {have} bytes, its descriptor says {}", b.size),
                ));
            }
            blobs.push(b.clone());
        }
        Ok(())
    };
    match &doc {
        ImageDoc::Index(index) => {
            for d in &index.manifests {
                if !media::is_manifest(&d.media_type) {
                    return Err(bad(
                        &d.digest,
                        format!("nested `{}` in an index is not supported", d.media_type),
                    ));
                }
                let bytes = read(&d.digest)?;
                let child = ImageDoc::parse(
                    &format!("manifest {}", d.digest),
                    Some(&d.media_type),
                    &bytes,
                )
                .map_err(|e| bad(&d.digest, e.reason))?;
                add(&child, &mut blobs)?;
                children.push((d.digest.clone(), d.media_type.clone(), bytes));
            }
        }
        ImageDoc::Manifest(_) => add(&doc, &mut blobs)?,
    }
    Ok(Plan {
        blobs,
        children,
        top,
    })
}
