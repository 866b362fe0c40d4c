//! Small blobs fetched into memory (an image config for `inspect`): bounded
//! in size and verified against their digest.

use reqwest::{Method, StatusCode};

use super::error::{read_body, rejected_or_protocol};
use super::token::{AuthCtx, Scope};
use super::{Client, RegistryError, Req, Result, read_error_body};
use crate::image::Digest;
use crate::image::reference::RegistryRef;

/// Configs are small; anything bigger than this is not one.
const MAX_SMALL_BLOB: usize = 16 << 20;

impl Client {
    /// Fetch a small blob (at most 16 MiB) of `r`'s repository into memory,
    /// checking its digest.
    pub async fn fetch_small_blob(&self, r: &RegistryRef, digest: &Digest) -> Result<Vec<u8>> {
        let ctx = AuthCtx {
            registry: r.registry.clone(),
            repository: Some(r.repository.clone()),
            scope: Scope::pull(&r.repository),
        };
        let url = self.api_url(&r.registry, &format!("{}/blobs/{digest}", r.repository))?;
        let req = Req::new(Method::GET, url);
        let resp = self.request(&req, &ctx).await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = read_error_body(resp).await;
            return Err(rejected_or_protocol(
                &r.registry,
                format!("blob {digest}"),
                &req,
                body,
            ));
        }
        let bytes = read_body(&req, resp, MAX_SMALL_BLOB).await?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: req.redacted().to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}
