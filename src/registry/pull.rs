//! Pulling: manifests and indexes by tag or digest (verified), an index
//! resolved to one platform, and blobs streamed into an OCI layout with
//! their digest and size checked on the way (a broken download resumes with
//! a `Range` request when the server allows it).

use std::io::Write;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use super::error::{read_body, rejected_or_protocol};
use super::token::{AuthCtx, Scope};
use super::{
    Client, FetchedManifest, MAX_MANIFEST, Redacted, RegistryError, Req, Result, Sent, error_chain,
    header_str, read_error_body, retry,
};
use crate::image::reference::RegistryRef;
use crate::image::{ConfigFile, Descriptor, Digest, ImageDoc, Platform, media};
use crate::layout::{BlobWriter, Layout, LayoutError};
use crate::progress::Progress;

/// What [`Client::pull`] stored in the layout.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The platform manifest's digest.
    pub digest: Digest,
    /// Its media type (OCI or Docker manifest).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The index the manifest was chosen from, when the reference named one.
    pub index_digest: Option<Digest>,
    /// The image config's digest.
    pub config_digest: Digest,
    /// The image config.
    pub config: Vec<u8>,
    /// Blobs downloaded (the others were in the layout already).
    pub blobs_fetched: usize,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
}

impl Client {
    /// Fetch a manifest or index by tag or digest. By digest, the bytes must
    /// hash to it; by tag, the digest is computed and checked against
    /// `Docker-Content-Digest` when the registry sends one.
    pub async fn fetch_manifest(&self, r: &RegistryRef) -> Result<FetchedManifest> {
        let ctx = AuthCtx {
            registry: r.registry.clone(),
            repository: Some(r.repository.clone()),
            scope: Scope::pull(&r.repository),
        };
        self.fetch_manifest_in(r, &ctx).await
    }

    async fn fetch_manifest_in(&self, r: &RegistryRef, ctx: &AuthCtx) -> Result<FetchedManifest> {
        let url = self.api_url(
            &r.registry,
            &format!("{}/manifests/{}", r.repository, r.reference()),
        )?;
        let req = Req::new(Method::GET, url).header(ACCEPT, media::MANIFEST_ACCEPT);
        let resp = self.request(&req, ctx).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            let body = read_error_body(resp).await;
            return Err(RegistryError::ManifestUnknown {
                reference: r.to_string(),
                body,
            });
        }
        if !status.is_success() {
            let body = read_error_body(resp).await;
            return Err(rejected_or_protocol(
                &r.registry,
                format!("manifest {r}"),
                &req,
                body,
            ));
        }
        let header_digest = header_str(resp.headers(), "docker-content-digest").map(str::to_owned);
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let bytes = read_body(&req, resp, MAX_MANIFEST).await?;
        let declared = (media::is_index(&content_type) || media::is_manifest(&content_type))
            .then_some(content_type.as_str());
        let doc = ImageDoc::parse(&format!("manifest {r}"), declared, &bytes).map_err(|e| {
            RegistryError::Protocol {
                url: req.redacted(),
                status: status.as_u16(),
                reason: format!(
                    "{}; the body starts with {:?}",
                    e.reason,
                    super::snippet(&bytes[..bytes.len().min(80)])
                ),
            }
        })?;
        let media_type = match (&doc, declared) {
            (_, Some(mt)) => mt.to_owned(),
            (ImageDoc::Manifest(m), None) => m.media_type().to_owned(),
            (ImageDoc::Index(i), None) => i.media_type().to_owned(),
        };
        let digest = Digest::of(&bytes);
        if let Some(expected) = &r.digest {
            if &digest != expected {
                return Err(RegistryError::DigestMismatch {
                    what: r.to_string(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        } else if let Some(h) = header_digest.and_then(|h| h.parse::<Digest>().ok()) {
            if h != digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{r} (Docker-Content-Digest)"),
                    expected: h,
                    actual: digest,
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
            doc,
        })
    }

    /// Pull an image into `layout`: resolve an index to `platform` (an
    /// error lists the platforms there are), then store the config and every
    /// layer (skipping blobs the layout has), each verified while it streams
    /// to disk, and the manifest last. Tags nothing.
    pub async fn pull(
        &self,
        r: &RegistryRef,
        platform: &Platform,
        layout: &Layout,
        progress: &Progress,
    ) -> Result<Pulled> {
        let ctx = AuthCtx {
            registry: r.registry.clone(),
            repository: Some(r.repository.clone()),
            scope: Scope::pull(&r.repository),
        };
        self.authorize(&ctx).await?;
        let top = self.fetch_manifest_in(r, &ctx).await?;
        let (manifest, index_digest) = match &top.doc {
            ImageDoc::Index(index) => {
                let chosen =
                    index
                        .select(platform)
                        .map_err(|none| RegistryError::PlatformNotFound {
                            reference: r.to_string(),
                            wanted: platform.to_string(),
                            available: none.listed(),
                        })?;
                let m = self
                    .fetch_manifest_in(&r.with_digest(chosen.digest.clone()), &ctx)
                    .await?;
                (m, Some(top.digest.clone()))
            }
            ImageDoc::Manifest(_) => (top, None),
        };
        let ImageDoc::Manifest(m) = &manifest.doc else {
            return Err(RegistryError::Protocol {
                url: Redacted(r.to_string()),
                status: 200,
                reason: format!("expected an image manifest, got `{}`", manifest.media_type),
            });
        };
        let config_desc = m.config.clone();
        let missing = |b: &Descriptor| -> Result<bool> {
            Ok(!(layout.has_blob(&b.digest) && layout.blob_size(&b.digest)? == b.size))
        };
        let mut blobs_fetched = 0;
        let mut bytes_fetched = 0;
        // The config first: it says which platform the image is for.
        if missing(&config_desc)? {
            self.download_blob(r, &ctx, &config_desc, layout, progress)
                .await?;
            blobs_fetched += 1;
            bytes_fetched += config_desc.size;
        }
        let config = layout.read_blob(&config_desc.digest)?;
        if index_digest.is_none() {
            let cfg = ConfigFile::parse(&config_desc.digest.to_string(), &config).map_err(|e| {
                RegistryError::Protocol {
                    url: Redacted(format!(
                        "{}/{}@{}",
                        r.registry, r.repository, config_desc.digest
                    )),
                    status: 200,
                    reason: e.to_string(),
                }
            })?;
            if let Some(p) = cfg.platform() {
                if !p.satisfies(platform) {
                    return Err(RegistryError::PlatformNotFound {
                        reference: r.to_string(),
                        wanted: platform.to_string(),
                        available: p.to_string(),
                    });
                }
            }
        }
        let mut todo: Vec<Descriptor> = Vec::new();
        for b in &m.layers {
            if missing(b)? && !todo.iter().any(|t| t.digest == b.digest) {
                todo.push(b.clone());
            }
        }
        blobs_fetched += todo.len();
        bytes_fetched += todo.iter().map(|b| b.size).sum::<u64>();
        futures_util::stream::iter(todo.into_iter().map(|b| {
            let ctx = &ctx;
            async move { self.download_blob(r, ctx, &b, layout, progress).await }
        }))
        .buffer_unordered(self.inner.opts.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
        layout.write_blob(&manifest.bytes)?;
        Ok(Pulled {
            size: manifest.bytes.len() as u64,
            digest: manifest.digest,
            media_type: manifest.media_type,
            index_digest,
            config_digest: config_desc.digest,
            config,
            blobs_fetched,
            bytes_fetched,
        })
    }

    /// Download one blob into the layout, verifying size and digest as it
    /// streams; a broken transfer is retried, resuming with `Range` when the
    /// server answers 206.
    async fn download_blob(
        &self,
        r: &RegistryRef,
        ctx: &AuthCtx,
        b: &Descriptor,
        layout: &Layout,
        progress: &Progress,
    ) -> Result<()> {
        let url = self.api_url(&r.registry, &format!("{}/blobs/{}", r.repository, b.digest))?;
        let task = progress.task(format!("pull {}", b.digest.short()), Some(b.size));
        let mut writer: Option<BlobWriter> = None;
        let mut failures = 0u32;
        let give_up = |attempts: u32, last: String| RegistryError::BlobDownload {
            digest: b.digest.clone(),
            repository: r.repo_name(),
            attempts,
            last,
        };
        loop {
            let have = writer.as_ref().map(BlobWriter::len).unwrap_or(0);
            let mut req = Req::new(Method::GET, url.clone());
            if have > 0 {
                req = req.header(RANGE, &format!("bytes={have}-"));
            }
            let last = match self.send(&req, ctx, false).await? {
                Sent::Answer(resp) => {
                    let status = resp.status();
                    let retry_after = retry::retry_after(resp.headers());
                    if status == StatusCode::OK
                        || (status == StatusCode::PARTIAL_CONTENT && have > 0)
                    {
                        if status == StatusCode::OK || writer.is_none() {
                            writer = Some(layout.blob_writer()?);
                            task.set_position(0);
                        }
                        let w = writer.as_mut().expect("set above");
                        match self.stream_into(resp, w, b, &req, &task).await {
                            Ok(()) => break,
                            Err(StreamError::Fatal(e)) => return Err(e),
                            Err(StreamError::Transient(msg)) => msg,
                        }
                    } else if retry::is_transient_status(status) {
                        let body = read_error_body(resp).await;
                        failures += 1;
                        if failures >= self.inner.opts.max_attempts {
                            return Err(give_up(failures, body.to_string()));
                        }
                        tokio::time::sleep(self.backoff(failures, retry_after)).await;
                        continue;
                    } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
                        writer = None;
                        format!("HTTP {status} for a resumed download; starting over")
                    } else {
                        let body = read_error_body(resp).await;
                        return Err(rejected_or_protocol(
                            &r.registry,
                            format!("blob {}", b.digest),
                            &req,
                            body,
                        ));
                    }
                }
                Sent::Failed(f) => f.describe(),
            };
            failures += 1;
            if failures >= self.inner.opts.max_attempts {
                return Err(give_up(failures, last));
            }
            tracing::debug!(digest = %b.digest, cause = %last, "download interrupted; retrying");
            tokio::time::sleep(self.backoff(failures, None)).await;
        }
        let w = writer.expect("a finished download has a writer");
        w.commit(Some(&b.digest)).map_err(|e| match e {
            LayoutError::DigestMismatch {
                expected, actual, ..
            } => RegistryError::DigestMismatch {
                what: Redacted::new(&url).to_string(),
                expected,
                actual,
            },
            other => other.into(),
        })?;
        task.finish("done");
        Ok(())
    }

    async fn stream_into(
        &self,
        mut resp: reqwest::Response,
        w: &mut BlobWriter,
        b: &Descriptor,
        req: &Req,
        task: &crate::progress::Task,
    ) -> std::result::Result<(), StreamError> {
        let idle = self.inner.opts.read_timeout;
        loop {
            let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                Err(_) => return Err(StreamError::Transient("no data (timed out)".into())),
                Ok(Err(e)) => return Err(StreamError::Transient(error_chain(&e.without_url()))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            if w.len() + chunk.len() as u64 > b.size {
                return Err(StreamError::Fatal(RegistryError::SizeMismatch {
                    digest: b.digest.clone(),
                    url: req.redacted(),
                    expected: b.size,
                    actual: w.len() + chunk.len() as u64,
                }));
            }
            w.write_all(&chunk).map_err(|e| {
                StreamError::Fatal(RegistryError::Io {
                    path: w.tmp_path().to_owned(),
                    source: e,
                })
            })?;
            task.inc(chunk.len() as u64);
        }
        if w.len() != b.size {
            return Err(StreamError::Transient(format!(
                "the body ended after {} of {} bytes",
                w.len(),
                b.size
            )));
        }
        Ok(())
    }
}

enum StreamError {
    Fatal(RegistryError),
    Transient(String),
}
