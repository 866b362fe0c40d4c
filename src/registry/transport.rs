//! Requests on the wire: one send with its idle and response deadlines, authorisation by the URL's own host, retries with backoff that honour Retry-After, bodies streamed from files, small bodies read with a bound and a deadline.

#[allow(unused_imports)]
use super::*;

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

    pub(super) fn redacted(&self) -> Redacted {
        Redacted::new(&self.url)
    }
}

/// How a request failed in transport (no HTTP answer).
pub(crate) enum Failure {
    /// Could not connect.
    Connect(reqwest::Error),
    /// Connected, then the request or response broke.
    Broken(reqwest::Error),
    /// No progress while sending for the idle timeout (`false`), or no
    /// answer within the response timeout once sent (`true`).
    Stalled(bool),
    /// The local file for the body could not be read.
    Local(PathBuf, std::io::Error),
}

impl Failure {
    pub(super) fn describe(&self) -> String {
        match self {
            Failure::Connect(e) | Failure::Broken(e) => error_chain(e),
            Failure::Stalled(false) => "no progress while sending (timed out)".into(),
            Failure::Stalled(true) => "no answer to the request (timed out)".into(),
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

/// Marks the last moment bytes moved, for the idle timeout, and whether the
/// whole body has been handed to the connection (then the wait is for the
/// answer, with its own bound).
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    sent_all: Arc<std::sync::atomic::AtomicBool>,
}

impl Activity {
    pub(super) fn new(sent_all: bool) -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            sent_all: Arc::new(std::sync::atomic::AtomicBool::new(sent_all)),
        }
    }
    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(super) fn finished_sending(&self) {
        self.touch();
        self.sent_all.store(true, Ordering::Relaxed);
    }
    pub(super) fn sent_all(&self) -> bool {
        self.sent_all.load(Ordering::Relaxed)
    }
    pub(super) fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The bounds for reading a response body, attached to each response so
/// every reader of a small body (manifest, token, error) obeys them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyDeadline {
    /// Longest wait for the next bytes.
    idle: Duration,
    /// Longest time for the whole (small) body.
    total: Duration,
}

impl Client {
    /// Send once: no auth logic, no retry. The idle timeout applies.
    pub(crate) async fn send_once(
        &self,
        req: &Req,
        authorization: Option<&HeaderValue>,
    ) -> std::result::Result<Response, Failure> {
        let activity = Activity::new(!matches!(req.body, ReqBody::File { .. }));
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
        let answer_limit = self.inner.opts.response_timeout;
        let check = (idle_limit.min(answer_limit) / 4).max(Duration::from_millis(50));
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tokio::time::sleep(check) => {
                    // Sending: the idle bound. Sent in full: the answer's bound.
                    let waiting = activity.sent_all();
                    let limit = if waiting { answer_limit } else { idle_limit };
                    if activity.idle() >= limit {
                        tracing::debug!(method = %req.method, url = %req.redacted(), waiting_for_answer = waiting, "no progress; abandoning request");
                        return Err(Failure::Stalled(waiting));
                    }
                }
            }
        };
        match result {
            Ok(mut resp) => {
                resp.extensions_mut().insert(BodyDeadline {
                    idle: idle_limit,
                    total: answer_limit,
                });
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
    pub(crate) async fn send(&self, req: &Req, ctx: &token::AuthCtx, retry: bool) -> Result<Sent> {
        let mut attempt = 0;
        let mut reauthorized = false;
        let mut ctx = std::borrow::Cow::Borrowed(ctx);
        // Credentials go only to the registry's own scheme, host and port:
        // a `Location` elsewhere is followed without them, as redirects are.
        let foreign = !self.is_registry_origin(&req.url, &ctx.registry);
        loop {
            attempt += 1;
            let authorization = if foreign {
                None
            } else {
                self.authorization(&ctx).await?
            };
            match self.send_once(req, authorization.as_ref()).await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && foreign => {
                    let body = read_error_body(resp).await;
                    return Err(RegistryError::Protocol {
                        url: req.redacted(),
                        status: 401,
                        reason: format!(
                            "{} sent this request to another host, which asks for credentials; the credentials for {} are only sent to {} ({body})",
                            ctx.registry, ctx.registry, ctx.registry
                        ),
                    });
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = token::parse_challenges(resp.headers());
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
                    return Err(self.denied(&ctx, &body).await);
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
    pub(crate) async fn request(&self, req: &Req, ctx: &token::AuthCtx) -> Result<Response> {
        match self.send(req, ctx, true).await? {
            Sent::Answer(r) => Ok(r),
            Sent::Failed(f) => Err(self.failure_error(req, &ctx.registry, f, 1)),
        }
    }

    /// Connection failures are retried fewer times than broken requests, so
    /// an unreachable host fails in bounded time (at most 3 connect timeouts).
    pub(super) fn attempts_for(&self, f: &Failure) -> u32 {
        match f {
            Failure::Connect(_) => self.inner.opts.max_attempts.min(3),
            Failure::Local(..) => 1,
            _ => self.inner.opts.max_attempts,
        }
    }

    pub(super) fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry::delay(
            attempt,
            self.inner.opts.retry_base_delay,
            self.inner.opts.retry_max_delay,
            retry_after,
        )
    }

    pub(super) fn failure_error(
        &self,
        req: &Req,
        registry: &str,
        f: Failure,
        attempts: u32,
    ) -> RegistryError {
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
            Failure::Stalled(waiting_for_answer) => RegistryError::Stalled {
                method: req.method.to_string(),
                url: req.redacted(),
                idle: if waiting_for_answer {
                    self.inner.opts.response_timeout
                } else {
                    self.inner.opts.read_timeout
                },
                waiting_for_answer,
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
pub(super) struct Counters {
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
    let mut produced = 0u64;
    if len == 0 {
        counters.activity.finished_sending();
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_BUF).inspect_ok(
        move |chunk: &Bytes| {
            let n = chunk.len() as u64;
            produced += n;
            if produced >= len {
                counters.activity.finished_sending();
            } else {
                counters.activity.touch();
            }
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

/// Read a response body, failing when it is longer than `limit`, when no
/// bytes come for the idle bound, or when the whole body takes longer than
/// the response bound (both attached to the response by `send_once`).
pub(crate) async fn read_limited(
    mut resp: Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let deadline = resp
        .extensions()
        .get::<BodyDeadline>()
        .copied()
        .unwrap_or(BodyDeadline {
            idle: DEFAULT_IDLE_TIMEOUT,
            total: DEFAULT_RESPONSE_TIMEOUT,
        });
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        let left = deadline.total.saturating_sub(started.elapsed());
        let wait = deadline.idle.min(left);
        let next = match tokio::time::timeout(wait, resp.chunk()).await {
            Ok(r) => r,
            Err(_) => {
                return Err(if left <= deadline.idle {
                    format!(
                        "the body did not arrive within {}s ({} bytes received)",
                        deadline.total.as_secs(),
                        out.len()
                    )
                } else {
                    format!(
                        "the body stalled for {}s ({} bytes received)",
                        deadline.idle.as_secs(),
                        out.len()
                    )
                });
            }
        };
        match next {
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
