//! Pushing an image from a layout: HEAD every blob, mount or upload what is
//! missing (several at once), then the manifest, then each further tag.
//!
//! An upload session is a small state machine over the registry's upload
//! URL: one PUT for small blobs, PATCHes of `chunk` bytes with
//! `Content-Range` for large ones, and a final PUT with the digest. After a
//! broken connection or a server error it asks the session's status and
//! goes on from the server's `Range`; a lost session starts a new one; a 413
//! halves the chunk size. Bytes stream from the blob file, so memory does
//! not grow with blob size.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use url::Url;

use super::auth::{AuthCtx, Scope};
use super::pull::{BlobDesc, descriptor, manifest_blobs, rejected_or_protocol};
use super::{
    Client, MIN_CHUNK, RegistryError, Req, ReqBody, Result, Sent, header_str, read_error_body,
    retry,
};
use crate::image::reference::RegistryRef;
use crate::image::{Digest, media};
use crate::layout::{Layout, TaggedImage};
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

/// What a push sends, children before parents.
struct Plan {
    blobs: Vec<BlobDesc>,
    /// Child manifests of an index, pushed by digest before the top one.
    children: Vec<(Digest, String, Vec<u8>)>,
    top: Vec<u8>,
}

impl Client {
    /// Push the image `manifest` (a manifest or an index, stored in
    /// `layout`) to the repository `target` under each of `tags` (at least
    /// one). Blobs the registry has are not sent again; the manifest goes
    /// last, after every blob is confirmed.
    pub async fn push(
        &self,
        layout: &Layout,
        manifest: &TaggedImage,
        target: &RegistryRef,
        tags: &[String],
        opts: &PushOptions,
        progress: &Progress,
    ) -> Result<PushReport> {
        if tags.is_empty() {
            return Err(RegistryError::Usage("push needs at least one tag".into()));
        }
        let plan = plan(layout, manifest)?;
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
                        .push_blob(layout, target, ctx, b, mount_from, opts, progress)
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
        layout: &Layout,
        target: &RegistryRef,
        ctx: &AuthCtx,
        b: &BlobDesc,
        mount_from: &[String],
        opts: &PushOptions,
        progress: &Progress,
    ) -> Result<BlobHow> {
        if self.blob_exists(target, ctx, b).await? {
            tracing::debug!(digest = %b.digest, "blob exists");
            return Ok(BlobHow::Existed);
        }
        let path = layout.blob_path(&b.digest);
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

    async fn blob_exists(&self, target: &RegistryRef, ctx: &AuthCtx, b: &BlobDesc) -> Result<bool> {
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
        b: &BlobDesc,
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

/// The offset after the last byte a `Range: 0-N` header confirms. `0-0`
/// means nothing (distribution says that for an empty upload; a one-byte
/// upload cannot happen here, chunks being at least 1 MiB).
fn range_end(resp: &Response) -> Option<u64> {
    let r = header_str(resp.headers(), "range")?;
    let r = r.trim().strip_prefix("bytes=").unwrap_or(r.trim());
    let (start, end) = r.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

/// One blob's upload session.
struct Upload<'a> {
    client: &'a Client,
    target: &'a RegistryRef,
    ctx: &'a AuthCtx,
    blob: &'a BlobDesc,
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
    },
}

impl Upload<'_> {
    async fn run(&mut self, session: Option<Url>) -> Result<BlobHow> {
        let size = self.blob.size;
        let registry = self.target.registry.clone();
        let mut url = match session {
            Some(u) => u,
            None => self.new_session().await?,
        };
        let mut offset = 0u64;
        let mut chunked = size
            > self
                .client
                .inner
                .opts
                .monolithic_max
                .min(self.client.chunk_size(&registry));
        let mut failures = 0u32;
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
                    let retry_after = retry::retry_after(resp.headers());
                    let body = read_error_body(resp).await;
                    Outcome::Transient {
                        cause: body.to_string(),
                        retry_after,
                    }
                }
                Sent::Answer(resp) => Outcome::Ok(resp),
                Sent::Failed(super::Failure::Local(path, source)) => {
                    return Err(RegistryError::Io { path, source });
                }
                Sent::Failed(f) => Outcome::Transient {
                    cause: f.describe(),
                    retry_after: None,
                },
            };
            let resp = match outcome {
                Outcome::Ok(r) => r,
                Outcome::Transient { cause, retry_after } => {
                    failures += 1;
                    if failures >= self.client.inner.opts.max_attempts {
                        return Err(self.give_up(failures, cause));
                    }
                    let wait = self.client.backoff(failures, retry_after);
                    tracing::debug!(digest = %self.blob.digest, %cause, ?wait, "upload step failed; will ask the upload's status");
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
                        let confirmed = range_end(&resp).unwrap_or(0).min(size);
                        if confirmed != offset {
                            tracing::debug!(digest = %self.blob.digest, from = offset, to = confirmed, "resuming from the registry's Range");
                        }
                        offset = confirmed;
                        if offset > 0 {
                            chunked = true;
                        }
                    }
                    StatusCode::NOT_FOUND => {
                        // The session is gone. Maybe because it completed
                        // (the answer to the final PUT was lost)?
                        if self
                            .client
                            .blob_exists(self.target, self.ctx, self.blob)
                            .await?
                        {
                            return Ok(self.uploaded());
                        }
                        tracing::debug!(digest = %self.blob.digest, "upload session gone; starting a new one");
                        url = self.new_session().await?;
                        offset = 0;
                    }
                    _ => return Err(self.unexpected(&req, resp).await),
                },
                Step::Monolithic | Step::Finish => match status {
                    StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => {
                        self.check_digest(&req, &resp)?;
                        self.task.set_position(size);
                        return Ok(self.uploaded());
                    }
                    StatusCode::PAYLOAD_TOO_LARGE if matches!(next, Step::Monolithic) => {
                        self.shrink(size)?;
                        chunked = true;
                        step = Some(Step::Status);
                    }
                    StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE => {
                        failures += 1;
                        if failures >= self.client.inner.opts.max_attempts {
                            let body = read_error_body(resp).await;
                            return Err(self.give_up(failures, body.to_string()));
                        }
                        step = Some(Step::Status);
                    }
                    _ => return Err(self.unexpected(&req, resp).await),
                },
                Step::Patch => match status {
                    StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                        url = location(&req, &resp)?;
                        let sent_to = offset + body_len;
                        let confirmed = range_end(&resp).unwrap_or(sent_to).min(size);
                        if confirmed > offset {
                            failures = 0;
                        }
                        offset = confirmed;
                        if let Some(h) = &self.on_chunk {
                            h(&self.blob.digest, offset);
                        }
                    }
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        self.shrink(body_len)?;
                        step = Some(Step::Status);
                    }
                    StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE => {
                        failures += 1;
                        if failures >= self.client.inner.opts.max_attempts {
                            let body = read_error_body(resp).await;
                            return Err(self.give_up(failures, body.to_string()));
                        }
                        step = Some(Step::Status);
                    }
                    _ => return Err(self.unexpected(&req, resp).await),
                },
            }
        }
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

    /// A 413 for a body of `refused` bytes: halve the chunk size (never
    /// below 1 MiB) for this registry, and say so.
    fn shrink(&self, refused: u64) -> Result<()> {
        let registry = &self.target.registry;
        let base = refused;
        if base <= MIN_CHUNK {
            return Err(RegistryError::TooLarge {
                registry: registry.clone(),
                chunk: base,
            });
        }
        let smaller = (base / 2).max(MIN_CHUNK);
        self.client.lower_chunk_size(registry, smaller);
        self.progress.say(format!(
            "{registry} refused a {} request body (HTTP 413); uploading in chunks of {}",
            human_bytes(base),
            human_bytes(smaller)
        ));
        tracing::debug!(registry = %registry, refused = base, chunk = smaller, "413: smaller chunks");
        Ok(())
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

/// What to send for `manifest`: its blobs (deduplicated, sizes checked
/// against the layout) and, for an index, its child manifests.
fn plan(layout: &Layout, manifest: &TaggedImage) -> Result<Plan> {
    let top = layout.read_blob(&manifest.digest)?;
    let bad = |digest: &Digest, reason: String| RegistryError::BadImage {
        path: layout.root().to_owned(),
        digest: digest.clone(),
        reason,
    };
    let mut blobs: Vec<BlobDesc> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut children = Vec::new();
    let mut add_manifest = |bytes: &[u8],
                            digest: &Digest,
                            blobs: &mut Vec<BlobDesc>|
     -> Result<()> {
        for b in manifest_blobs(bytes, &format!("manifest {digest}")).map_err(|r| bad(digest, r))? {
            if !seen.insert(b.digest.clone()) {
                continue;
            }
            let have = layout.blob_size(&b.digest)?;
            if have != b.size {
                return Err(bad(
                    &b.digest,
                    format!("the blob is {have} bytes, its descriptor says {}", b.size),
                ));
            }
            blobs.push(b);
        }
        Ok(())
    };
    if media::is_index(&manifest.media_type) {
        let v: Value = serde_json::from_slice(&top)
            .map_err(|e| bad(&manifest.digest, format!("the index is not JSON: {e}")))?;
        for m in v
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let d = descriptor(m, media::OCI_MANIFEST, "the index")
                .map_err(|r| bad(&manifest.digest, r))?;
            if !media::is_manifest(&d.media_type) {
                return Err(bad(
                    &d.digest,
                    format!("nested `{}` in an index is not supported", d.media_type),
                ));
            }
            let bytes = layout.read_blob(&d.digest)?;
            add_manifest(&bytes, &d.digest, &mut blobs)?;
            children.push((d.digest, d.media_type, bytes));
        }
    } else if media::is_manifest(&manifest.media_type) {
        add_manifest(&top, &manifest.digest, &mut blobs)?;
    } else {
        return Err(bad(
            &manifest.digest,
            format!("`{}` is not a manifest or index", manifest.media_type),
        ));
    }
    Ok(Plan {
        blobs,
        children,
        top,
    })
}
