//! Plain HTTP GETs for Debian's archive: the [`Fetch`] of
//! [`crate::debian`] on reqwest (rustls), kept here because no module
//! outside the network client may speak HTTP. A GET has a connect
//! deadline, an idle deadline on every read, a size bound and a few
//! retries with backoff for transient failures (connection errors, broken
//! bodies, 408, 429, 5xx); 404 and 410 are answers, not failures, and are
//! never retried. Bodies stream to the destination file. Archive files
//! need no credentials and none are sent; their integrity comes from the
//! signed indexes, so plain `http://` mirrors are fine, as for apt.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::debian::fetch::{Fetch, FetchError, display_url};

/// How archive downloads behave.
#[derive(Clone, Debug)]
pub struct ArchiveHttpOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time a response may send nothing (headers or body) before the
    /// attempt is abandoned.
    pub read_timeout: Duration,
    /// Attempts per file.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub retry_delay: Duration,
    /// `User-Agent`.
    pub user_agent: String,
}

impl Default for ArchiveHttpOptions {
    fn default() -> Self {
        ArchiveHttpOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_attempts: 4,
            retry_delay: Duration::from_millis(500),
            user_agent: concat!("guildhall-image/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The archive client. [`Fetch::get`] blocks: call it from a plain or
/// `spawn_blocking` thread (on a multi-threaded runtime's worker it uses
/// `block_in_place`).
#[derive(Clone, Debug)]
pub struct ArchiveHttp {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    opts: ArchiveHttpOptions,
}

enum Attempt {
    Done(u64),
    Final(FetchError),
    Retry(FetchError),
}

impl ArchiveHttp {
    /// A client whose requests run on `runtime`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        opts: ArchiveHttpOptions,
    ) -> Result<ArchiveHttp, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(ArchiveHttp {
            http,
            runtime,
            opts,
        })
    }

    async fn get_async(&self, url: &Url, dest: &Path, limit: u64) -> Result<u64, FetchError> {
        let mut delay = self.opts.retry_delay;
        let mut attempt = 1;
        loop {
            match self.attempt(url, dest, limit).await {
                Attempt::Done(n) => return Ok(n),
                Attempt::Final(e) => return Err(e),
                Attempt::Retry(e) if attempt >= self.opts.max_attempts => return Err(e),
                Attempt::Retry(e) => {
                    tracing::debug!("{e}; attempt {attempt} of {}", self.opts.max_attempts);
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, url: &Url, dest: &Path, limit: u64) -> Attempt {
        let shown = display_url(url);
        let network = |reason: String| FetchError::Network {
            url: shown.clone(),
            reason,
        };
        let idle = self.opts.read_timeout;
        let resp = match tokio::time::timeout(idle, self.http.get(url.clone()).send()).await {
            Err(_) => return Attempt::Retry(network(format!("no answer within {idle:?}"))),
            Ok(Err(e)) => return Attempt::Retry(network(error_chain(&e.without_url()))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Attempt::Final(FetchError::NotFound {
                url: shown,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let e = FetchError::Status {
                url: shown,
                status: status.as_u16(),
            };
            let transient = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            return if transient {
                Attempt::Retry(e)
            } else {
                Attempt::Final(e)
            };
        }
        let too_large = || FetchError::TooLarge {
            url: shown.clone(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Attempt::Final(too_large());
        }
        let io = |source| FetchError::Io {
            path: dest.to_owned(),
            source,
        };
        let mut file = match tokio::fs::File::create(dest).await {
            Ok(f) => f,
            Err(e) => return Attempt::Final(io(e)),
        };
        let mut resp = resp;
        let mut written = 0u64;
        loop {
            let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                Err(_) => return Attempt::Retry(network(format!("the body stalled for {idle:?}"))),
                Ok(Err(e)) => return Attempt::Retry(network(error_chain(&e.without_url()))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            written += chunk.len() as u64;
            if written > limit {
                return Attempt::Final(too_large());
            }
            if let Err(e) = file.write_all(&chunk).await {
                return Attempt::Final(io(e));
            }
        }
        if let Err(e) = file.flush().await {
            return Attempt::Final(io(e));
        }
        Attempt::Done(written)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Fetch for ArchiveHttp {
    fn get(&self, url: &Url, dest: &Path, limit: u64) -> Result<u64, FetchError> {
        let fut = self.get_async(url, dest, limit);
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.runtime.block_on(fut))
        } else {
            self.runtime.block_on(fut)
        }
    }
}
