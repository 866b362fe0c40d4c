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
use std::sync::atomic::AtomicU64;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::error::rejected_or_protocol;
use super::token::{AuthCtx, Scope};
use super::upload::*;
use super::{Client, RegistryError, Req, ReqBody, Result, Sent, header_str, read_error_body};
use crate::image::reference::RegistryRef;
use crate::image::source::BlobSource;
use crate::image::{Descriptor, Digest, ImageDoc, media};
use crate::progress::Progress;

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

    pub(super) async fn blob_exists(
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
    pub(super) async fn cancel_session(&self, ctx: &AuthCtx, url: Url) {
        let req = Req::new(Method::DELETE, url);
        if let Ok(Sent::Answer(r)) = self.send(&req, ctx, false).await {
            tracing::debug!(status = r.status().as_u16(), "upload session cancelled");
        }
    }

    /// POST to start an upload (or mount from `from`).
    pub(super) async fn start_session(
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
