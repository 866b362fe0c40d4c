//! `ForgejoRegistry`: a DOUBLE of Forgejo 9.x's container registry, with
//! Cloudflare in front of it when asked, and faults on cue.
//!
//! Written from Forgejo's source (forgejo branch of 2024-11, commit
//! 5e777a43a1, the 9.0 line; the container code is the one 9.0.x ships):
//!
//! - `routers/api/packages/api.go`: `ContainerRoutes` (the manual route
//!   mapping, the middleware order `ReqContainerAccess` →
//!   `UserAssignmentWeb` → `PackageAssignment` → `reqPackageAccess(read)`,
//!   write checks per route), `reqPackageAccess` (401 with
//!   `WWW-Authenticate: Basic realm="Gitea Package API"`, written through
//!   `ctx.Error(401, "reqPackageAccess", "user should have …")`, whose body is
//!   its *first* string: `services/context/base.go` `Base.Error`), `verifyAuth`
//!   (an Authorization that no method accepts is a plain-text 401
//!   `authGroup.Verify` without any challenge; `services/auth/group.go`);
//! - `routers/api/packages/container/container.go`: the Bearer challenge
//!   `Bearer realm="<ROOT_URL>v2/token",service="container_registry",scope="*"`,
//!   `Authenticate` (`{"token": …}`, no `expires_in`, scope and service
//!   ignored, a ghost token for anonymous callers), `InitiateUploadBlob`
//!   (a mount that finds nothing falls through to `?digest=` or a new
//!   session: never 404; `from` matched exactly against the lower-cased
//!   `owner/image`), `GetUploadBlob` (`204`, `Range: 0-<bytes received>`,
//!   no `Location`), `UploadBlob` (only the start of `Content-Range` is
//!   checked, 416 when it is not the byte count; no `Content-Range` only as
//!   the first write), `EndUploadBlob`, `CancelUploadBlob`, `HeadBlob`
//!   (`Content-Length`, no `Content-Type`), `GetBlob` (ignores `Range`),
//!   `UploadManifest`, `GetManifest`, `GetTagList` (`404 NAME_UNKNOWN` for an
//!   image that does not exist);
//! - `routers/api/packages/container/manifest.go` (`processManifest`: media
//!   type from `Content-Type` when it starts with `application/vnd.docker.`
//!   or `application/vnd.oci.`, compared exactly, so parameters are
//!   refused; missing blobs are `404 BLOB_UNKNOWN`; index children must be
//!   image manifests of the same image, else `MANIFEST_BLOB_UNKNOWN`;
//!   versions, i.e. tags, stored lower-cased), `errors.go`, `blob.go`;
//! - `services/packages/container/blob_uploader.go` (`Append`: the session
//!   file must end at `BytesReceived`, else 500; a body that breaks
//!   mid-copy leaves its bytes in the file without updating the count, so
//!   the session answers 500 from then on);
//! - `services/packages/auth.go` (24 h tokens), `models/packages/
//!   package_blob_upload.go` (upload ids: 25 lower-case alphanumerics),
//!   `routers/common/middleware.go` (trailing slashes stripped).
//!
//! Not modelled: `_catalog`, DELETE of blobs and manifests, organisations
//! and teams, quotas, storage redirects (`SERVE_DIRECT`).
//!
//! The CDN, when on, behaves as Cloudflare does for a proxied host: it
//! buffers each request body before the origin sees it, refuses bodies over
//! its cap with an HTML 413 page, and answers 524 when the origin takes
//! longer than its window (the origin still finishes the request). The
//! ghcr.io chunk limit (`416 REQUESTED_RANGE_NOT_SATISFIABLE`, "the request
//! body is too large and exceeds the maximum permissible limit of
//! 4.00MiB") is a fault here too; ghcr's source is not public, that answer
//! is as ghcr's users report it.
//!
//! A plain HTTP/1.1 server on std threads (one per connection,
//! keep-alive). Upload sessions and blobs are files in a temporary
//! directory (Forgejo's `ChunkedUploadPath` and content store); every
//! request is logged so tests can assert what the client did.
#![allow(dead_code)]

use super::http::reason;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// A Forgejo account and one personal access token of it (the secret, used
/// as the password of Basic auth, as `docker login` does).
#[derive(Clone, Debug)]
pub struct Account {
    /// User name (also the owner of its own packages).
    pub user: String,
    /// The access token.
    pub secret: String,
    /// Whether the token has the `write:package` scope.
    pub write_package: bool,
}

/// Cloudflare in front of the origin.
#[derive(Clone, Debug)]
pub struct Cdn {
    /// Request bodies over this many bytes get Cloudflare's HTML 413.
    pub body_cap: Option<u64>,
    /// How long the origin may take to answer (Cloudflare: 100 s) before
    /// the CDN answers 524 itself.
    pub origin_timeout: Duration,
    /// PATCHes (0-based, over the server's life) answered 524 although the
    /// origin stored them.
    pub timeout_on_patches: Vec<usize>,
    /// Final PUTs (`?digest=` on a session, 0-based) answered 524 although
    /// the origin stored the blob.
    pub timeout_on_puts: Vec<usize>,
}

impl Default for Cdn {
    fn default() -> Cdn {
        Cdn {
            body_cap: None,
            origin_timeout: Duration::from_secs(100),
            timeout_on_patches: Vec::new(),
            timeout_on_puts: Vec::new(),
        }
    }
}

/// What to get wrong, on cue.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Put Cloudflare in front.
    pub cdn: Option<Cdn>,
    /// PATCH number `.0`: the origin copies `.1` bytes of the body into the
    /// session file, then the body breaks (the connection drops). The
    /// session is poisoned, as Forgejo's is.
    pub break_patch_body: Option<(usize, u64)>,
    /// PATCHes whose answer is lost (the connection closes) after the
    /// origin stored them.
    pub drop_answer_on_patches: Vec<usize>,
    /// After PATCH number N is answered, every token issued so far expires.
    pub expire_tokens_after_patch: Option<usize>,
    /// ghcr.io's per-request limit: PATCH or PUT bodies over it get 416.
    pub ghcr_request_limit: Option<u64>,
    /// The origin takes this long to answer each PATCH and final PUT (a
    /// slow disk or object store).
    pub origin_delay: Duration,
}

/// How the double is set up.
#[derive(Clone, Debug)]
pub struct ForgejoOptions {
    /// Accounts (and so owners).
    pub accounts: Vec<Account>,
    /// Other public users, which exist as owners but have no credentials here.
    pub other_owners: Vec<String>,
    /// `[service] REQUIRE_SIGNIN_VIEW`: no anonymous tokens.
    pub require_signin_view: bool,
    /// Faults.
    pub faults: Faults,
}

impl Default for ForgejoOptions {
    fn default() -> ForgejoOptions {
        ForgejoOptions {
            accounts: vec![Account {
                user: "tking".into(),
                secret: "pat-tking-write".into(),
                write_package: true,
            }],
            other_owners: vec!["someone".into()],
            require_signin_view: false,
            faults: Faults::default(),
        }
    }
}

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path as sent (before slashes are stripped), no query.
    pub path: String,
    /// Query string.
    pub query: String,
    /// `Content-Range`, if sent.
    pub content_range: Option<String>,
    /// `Content-Length` announced.
    pub content_length: u64,
    /// Status the client got (0: the connection was closed without one).
    pub status: u16,
    /// `none`, `basic` or `bearer`.
    pub auth: String,
    /// What happened on the way (`cdn-413`, `cdn-524`, `broken`, `dropped`).
    pub note: String,
}

#[derive(Clone, Debug)]
struct TokenInfo {
    /// None: the ghost user (anonymous).
    user: Option<String>,
    /// The scope of the PAT the token was made from.
    write_package: bool,
    expired: bool,
}

#[derive(Clone)]
struct UploadModel {
    bytes_received: u64,
    hasher: Sha256,
}

#[derive(Clone, Debug)]
struct File {
    /// Lower-cased version: a tag, a digest, or `_upload`.
    version: String,
    digest: String,
    size: u64,
    media_type: String,
    is_manifest: bool,
}

#[derive(Default)]
struct Package {
    files: Vec<File>,
    /// Lower-cased versions that are tags.
    tagged: BTreeMap<String, ()>,
}

struct State {
    opts: ForgejoOptions,
    root: PathBuf,
    app_url: String,
    tokens: HashMap<String, TokenInfo>,
    uploads: HashMap<String, UploadModel>,
    /// (lower owner, lower image) → package.
    packages: HashMap<(String, String), Package>,
    log: Vec<Logged>,
    patches: usize,
    puts: usize,
    next_token: u64,
}

/// The double. Stops (and frees its port) on drop.
pub struct ForgejoRegistry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct Request {
    method: String,
    raw_path: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    content_length: u64,
}

/// A request head as Forgejo's router sees it: `stripSlashesMiddleware`
/// (no trailing slash, no doubled slashes) applied to the path.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let head = super::http::read_head(r)?;
    let mut path = String::new();
    let mut prev = false;
    for c in head.path.trim_end_matches('/').chars() {
        if c != '/' || !prev {
            path.push(c);
        }
        prev = c == '/';
    }
    let content_length = head
        .headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    Some(Request {
        method: head.method,
        raw_path: head.path,
        path,
        query: head.query,
        headers: head.headers,
        content_length,
    })
}

impl Request {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// `Content-Length` to announce when it is not the body's (HEAD).
    length: Option<u64>,
    /// Close the connection without answering.
    drop: bool,
    /// The CDN answers 524 instead (the origin did the work).
    force_524: bool,
    note: &'static str,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            length: None,
            drop: false,
            force_524: false,
            note: "",
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    /// `setResponseHeaders`: every answer of the container API carries
    /// the API version header.
    fn api(status: u16) -> Reply {
        Reply::new(status).header("Docker-Distribution-Api-Version", "registry/2.0")
    }
    /// `apiErrorDefined`: the distribution error JSON.
    fn named(status: u16, code: &str, message: &str) -> Reply {
        let mut r = Reply::api(status).header("Content-Type", "application/json");
        r.body = format!(
            "{{\"errors\":[{{\"code\":{},\"message\":{}}}]}}\n",
            json_str(code),
            json_str(message)
        )
        .into_bytes();
        r
    }
    /// `apiError`: a status and nothing else.
    fn bare(status: u16) -> Reply {
        Reply::api(status)
    }
    /// `ctx.Error(status, first, …)`: Go's `http.Error` with the first string.
    fn plain(status: u16, text: &str) -> Reply {
        let mut r = Reply::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("X-Content-Type-Options", "nosniff");
        r.body = format!("{text}\n").into_bytes();
        r
    }
    fn html(status: u16, body: String) -> Reply {
        let mut r = Reply::new(status).header("Content-Type", "text/html; charset=UTF-8");
        r.body = body.into_bytes();
        r
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn cloudflare_page(status: u16, title: &str) -> String {
    format!(
        "<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n<center><h1>{status} {title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
}

impl ForgejoRegistry {
    /// Start on a free loopback port.
    pub fn start(opts: ForgejoOptions) -> ForgejoRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let dir = tempfile::Builder::new()
            .prefix("guildhall-forgejo-")
            .tempdir()
            .expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("upload")).unwrap();
        std::fs::create_dir_all(dir.path().join("content")).unwrap();
        let state = Arc::new(Mutex::new(State {
            opts,
            root: dir.path().to_owned(),
            app_url: format!("http://{addr}/"),
            tokens: HashMap::new(),
            uploads: HashMap::new(),
            packages: HashMap::new(),
            log: Vec::new(),
            patches: 0,
            puts: 0,
            next_token: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(conn, state));
                }
            })
        };
        ForgejoRegistry {
            addr,
            state,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forget the request log.
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Put a saved log back.
    pub fn replace_log(&self, log: Vec<Logged>) {
        self.state.lock().unwrap().log = log;
    }

    /// Expire every token issued so far (as 24 h passing would).
    pub fn expire_tokens(&self) {
        for t in self.state.lock().unwrap().tokens.values_mut() {
            t.expired = true;
        }
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens.len()
    }

    /// Change the faults (e.g. none for a re-push).
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().opts.faults = faults;
    }

    /// The bytes of a blob `owner/image` can see, if any.
    pub fn blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let st = self.state.lock().unwrap();
        let (owner, image) = repo.split_once('/')?;
        let f = find_blob(&st, owner, image, digest)?;
        std::fs::read(content_path(&st.root, &f.digest)).ok()
    }

    /// The manifest under a tag (case-insensitive, as Forgejo looks it up)
    /// or digest: (media type, bytes).
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<(String, Vec<u8>)> {
        let st = self.state.lock().unwrap();
        let (owner, image) = repo.split_once('/')?;
        let f = find_manifest(&st, owner, image, reference)?;
        let bytes = std::fs::read(content_path(&st.root, &f.digest)).ok()?;
        Some((f.media_type, bytes))
    }

    /// The tags of `owner/image`, as stored (lower-cased), sorted.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let Some((owner, image)) = repo.split_once('/') else {
            return Vec::new();
        };
        st.packages
            .get(&(owner.to_lowercase(), image.to_lowercase()))
            .map(|p| p.tagged.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Open upload sessions.
    pub fn open_sessions(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }
}

impl Drop for ForgejoRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn content_path(root: &std::path::Path, digest: &str) -> PathBuf {
    root.join("content").join(digest.replace(':', "_"))
}

fn upload_path(root: &std::path::Path, id: &str) -> PathBuf {
    root.join("upload").join(id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(req) = read_head(&mut reader) else {
            return;
        };
        let cdn = state.lock().unwrap().opts.faults.cdn.clone();
        let (reply, keep_open) = match cdn {
            Some(cdn) => through_cdn(&state, &cdn, &req, &mut reader),
            None => {
                let mut body = (&mut reader).take(req.content_length);
                let r = origin(&state, &req, &mut body);
                // Whatever the origin did not read is drained, as Go's
                // server does before reusing the connection.
                let left = std::io::copy(&mut body, &mut std::io::sink()).is_ok();
                (r, left)
            }
        };
        {
            let mut st = state.lock().unwrap();
            st.log.push(Logged {
                method: req.method.clone(),
                path: req.raw_path.clone(),
                query: req.query.clone(),
                content_range: req.headers.get("content-range").cloned(),
                content_length: req.content_length,
                status: if reply.drop { 0 } else { reply.status },
                auth: match req.header("authorization") {
                    Some(a) if a.to_ascii_lowercase().starts_with("basic ") => "basic".into(),
                    Some(a) if a.to_ascii_lowercase().starts_with("bearer ") => "bearer".into(),
                    Some(_) => "other".into(),
                    None => "none".into(),
                },
                note: reply.note.to_owned(),
            });
        }
        if reply.drop {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let len = reply.length.unwrap_or(reply.body.len() as u64);
        head.push_str(&format!("Content-Length: {len}\r\n"));
        if !keep_open {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if req.method != "HEAD" && out.write_all(&reply.body).is_err() {
            return;
        }
        let _ = out.flush();
        if !keep_open {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Cloudflare: cap, buffer, forward, and time the origin out.
fn through_cdn(
    state: &Arc<Mutex<State>>,
    cdn: &Cdn,
    req: &Request,
    reader: &mut BufReader<TcpStream>,
) -> (Reply, bool) {
    if let Some(cap) = cdn.body_cap {
        if req.content_length > cap {
            // Refused on the announced length; the body is read and thrown
            // away so the client sees the answer, then the connection ends.
            let _ = std::io::copy(&mut reader.take(req.content_length), &mut std::io::sink());
            let mut r = Reply::html(413, cloudflare_page(413, "Request Entity Too Large"));
            r.note = "cdn-413";
            return (r, false);
        }
    }
    let mut body = Vec::with_capacity(req.content_length.min(64 << 20) as usize);
    if reader
        .take(req.content_length)
        .read_to_end(&mut body)
        .is_err()
        || body.len() as u64 != req.content_length
    {
        // The client went away mid-body: the origin never hears of it.
        let mut r = Reply::new(0);
        r.drop = true;
        r.note = "client-broke";
        return (r, false);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let state = state.clone();
        let req = Request {
            method: req.method.clone(),
            raw_path: req.raw_path.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            content_length: req.content_length,
        };
        std::thread::spawn(move || {
            let r = origin(&state, &req, &mut std::io::Cursor::new(body));
            let _ = tx.send(r);
        });
    }
    let timeout = |note| {
        let mut r = Reply::html(524, cloudflare_page(524, "A timeout occurred"));
        r.note = note;
        r
    };
    match rx.recv_timeout(cdn.origin_timeout) {
        // The origin finished (stored the chunk); the client hears 524.
        Ok(r) if r.force_524 => (timeout("cdn-524"), true),
        Ok(r) if r.drop => (r, false),
        Ok(r) => (r, true),
        Err(_) => (timeout("cdn-524-slow-origin"), true),
    }
}

fn query_param(q: &str, key: &str) -> Option<String> {
    super::http::query_param(q, key).map(|v| v.trim().to_owned())
}

/// Who is asking: `verifyAuth` with `auth.Basic` then `container.Auth`.
enum Doer {
    Nobody,
    Ghost,
    User {
        name: String,
        /// `IsApiToken` with this `write:package` scope.
        write_package: bool,
    },
}

fn verify_auth(st: &State, req: &Request) -> Result<Doer, ()> {
    let Some(h) = req.header("authorization") else {
        return Ok(Doer::Nobody);
    };
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .unwrap_or_default();
        let (user, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
        // A token as the password (or as the user name with no password).
        let token = if secret.is_empty() || secret == "x-oauth-basic" {
            user
        } else {
            secret
        };
        return match st.opts.accounts.iter().find(|a| a.secret == token) {
            Some(a) => Ok(Doer::User {
                name: a.user.clone(),
                write_package: a.write_package,
            }),
            None => Err(()),
        };
    }
    // container.Auth: a package token (a JWT in Forgejo; opaque here).
    match st.tokens.get(rest.trim()) {
        Some(t) if !t.expired => Ok(match &t.user {
            None => Doer::Ghost,
            Some(u) => Doer::User {
                name: u.clone(),
                write_package: t.write_package,
            },
        }),
        _ => Err(()),
    }
}

fn challenge(st: &State) -> Reply {
    Reply::named(401, "UNAUTHORIZED", "").header(
        "WWW-Authenticate",
        format!(
            "Bearer realm=\"{}v2/token\",service=\"container_registry\",scope=\"*\"",
            st.app_url
        ),
    )
}

fn no_permission() -> Reply {
    Reply::plain(401, "reqPackageAccess")
        .header("WWW-Authenticate", "Basic realm=\"Gitea Package API\"")
}

fn image_name_ok(s: &str) -> bool {
    // \A[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*\z
    !s.is_empty()
        && s.split('/').all(|comp| {
            let b = comp.as_bytes();
            if b.is_empty() {
                return false;
            }
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            let mut prev_sep = true;
            for &c in b {
                if alnum(c) {
                    prev_sep = false;
                } else if matches!(c, b'.' | b'_' | b'-') {
                    if prev_sep {
                        return false;
                    }
                    prev_sep = true;
                } else {
                    return false;
                }
            }
            !prev_sep
        })
}

fn reference_ok(s: &str) -> bool {
    // \A[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\z
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The origin: Forgejo.
fn origin(state: &Arc<Mutex<State>>, req: &Request, body: &mut dyn Read) -> Reply {
    let mut st = state.lock().unwrap();
    let doer = match verify_auth(&st, req) {
        Ok(d) => d,
        Err(()) => return Reply::plain(401, "authGroup.Verify"),
    };
    let Some(rest) = req.path.strip_prefix("/v2") else {
        return Reply::html(404, "<html><body>Page Not Found</body></html>".into());
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        // ReqContainerAccess, DetermineSupport.
        return match (req.method.as_str(), &doer) {
            ("GET" | "HEAD", Doer::Nobody) => challenge(&st),
            ("GET" | "HEAD", _) => Reply::api(200),
            _ => Reply::new(405),
        };
    }
    if rest == "token" {
        return match req.method.as_str() {
            "GET" => {
                let (user, write_package) = match &doer {
                    Doer::Nobody | Doer::Ghost if st.opts.require_signin_view => {
                        return challenge(&st);
                    }
                    Doer::Nobody | Doer::Ghost => (None, false),
                    Doer::User {
                        name,
                        write_package,
                    } => (Some(name.clone()), *write_package),
                };
                st.next_token += 1;
                let token = format!(
                    "fgj{}.{}",
                    st.next_token,
                    hex(&Sha256::digest(format!("{}{}", st.next_token, st.app_url)))
                );
                st.tokens.insert(
                    token.clone(),
                    TokenInfo {
                        user,
                        write_package,
                        expired: false,
                    },
                );
                let mut r =
                    Reply::new(200).header("Content-Type", "application/json;charset=utf-8");
                r.body = format!("{{\"token\":{}}}\n", json_str(&token)).into_bytes();
                r
            }
            "POST" => Reply::new(404),
            _ => Reply::new(405),
        };
    }
    // The `/{username}` group: ReqContainerAccess, UserAssignmentWeb,
    // PackageAssignment, reqPackageAccess(read).
    if matches!(doer, Doer::Nobody) {
        return challenge(&st);
    }
    let (owner, path) = rest.split_once('/').unwrap_or((rest, ""));
    let owner = owner.to_lowercase();
    let exists = st
        .opts
        .accounts
        .iter()
        .any(|a| a.user.to_lowercase() == owner)
        || st
            .opts
            .other_owners
            .iter()
            .any(|o| o.to_lowercase() == owner);
    if !exists {
        return Reply::html(404, "<html><body>Not found.</body></html>".into());
    }
    let can_write = match &doer {
        Doer::User {
            name,
            write_package,
        } => name.to_lowercase() == owner && *write_package,
        _ => false,
    };
    let method = req.method.as_str();
    // The manual route mapping.
    if method == "POST" && path.ends_with("/blobs/uploads") {
        if !can_write {
            return no_permission();
        }
        let image = &path[..path.len() - "/blobs/uploads".len()];
        if !image_name_ok(image) {
            return Reply::named(400, "NAME_INVALID", "");
        }
        drop(st);
        return initiate_upload(state, req, &owner, image, body);
    }
    if method == "GET" && path.ends_with("/tags/list") {
        let image = &path[..path.len() - "/tags/list".len()];
        if !image_name_ok(image) {
            return Reply::named(400, "NAME_INVALID", "");
        }
        return tag_list(&st, &owner, image);
    }
    if let Some((image, uuid)) = path.rsplit_once("/blobs/uploads/") {
        if !uuid.is_empty()
            && !uuid.contains('/')
            && uuid
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'='))
            && matches!(method, "GET" | "PUT" | "PATCH" | "DELETE")
        {
            if !can_write {
                return no_permission();
            }
            if !image_name_ok(image) {
                return Reply::named(400, "NAME_INVALID", "");
            }
            return match method {
                "GET" => match st.uploads.get(uuid) {
                    Some(u) => Reply::api(204)
                        .header("Range", format!("0-{}", u.bytes_received))
                        .header("Docker-Upload-Uuid", uuid),
                    None => Reply::named(404, "BLOB_UPLOAD_UNKNOWN", ""),
                },
                "PATCH" => {
                    let n = st.patches;
                    st.patches += 1;
                    drop(st);
                    let mut r = upload_chunk(state, req, &owner, image, uuid, body, n);
                    let mut st = state.lock().unwrap();
                    if st.opts.faults.expire_tokens_after_patch == Some(n) {
                        for t in st.tokens.values_mut() {
                            t.expired = true;
                        }
                    }
                    r.force_524 = st
                        .opts
                        .faults
                        .cdn
                        .as_ref()
                        .is_some_and(|c| c.timeout_on_patches.contains(&n));
                    r
                }
                "PUT" => {
                    let n = st.puts;
                    st.puts += 1;
                    drop(st);
                    let mut r = end_upload(state, req, &owner, image, uuid, body);
                    r.force_524 = state
                        .lock()
                        .unwrap()
                        .opts
                        .faults
                        .cdn
                        .as_ref()
                        .is_some_and(|c| c.timeout_on_puts.contains(&n));
                    r
                }
                _ => match st.uploads.remove(uuid) {
                    Some(_) => {
                        let _ = std::fs::remove_file(upload_path(&st.root, uuid));
                        Reply::api(204)
                    }
                    None => Reply::named(404, "BLOB_UPLOAD_UNKNOWN", ""),
                },
            };
        }
    }
    if let Some((image, digest)) = path.rsplit_once("/blobs/") {
        if !digest.contains('/') && matches!(method, "HEAD" | "GET") {
            if !image_name_ok(image) {
                return Reply::named(400, "NAME_INVALID", "");
            }
            let found = is_digest(digest)
                .then(|| find_blob(&st, &owner, image, digest))
                .flatten();
            return match found {
                None => Reply::named(404, "BLOB_UNKNOWN", ""),
                Some(f) if method == "HEAD" => {
                    let mut r = Reply::api(200)
                        .header("Docker-Content-Digest", f.digest.clone())
                        .header("ETag", format!("\"{}\"", f.digest));
                    r.length = Some(f.size);
                    r
                }
                Some(f) => {
                    // serveBlob: the whole blob, whatever `Range` asked.
                    let mut r = Reply::api(200)
                        .header("Docker-Content-Digest", f.digest.clone())
                        .header("ETag", format!("\"{}\"", f.digest))
                        .header(
                            "Content-Type",
                            if f.media_type.is_empty() {
                                "application/octet-stream".to_owned()
                            } else {
                                f.media_type.clone()
                            },
                        );
                    r.body = std::fs::read(content_path(&st.root, &f.digest)).unwrap_or_default();
                    r
                }
            };
        }
    }
    if let Some((image, reference)) = path.rsplit_once("/manifests/") {
        if !reference.contains('/') && matches!(method, "HEAD" | "GET" | "PUT") {
            if !image_name_ok(image) {
                return Reply::named(400, "NAME_INVALID", "");
            }
            if method == "PUT" {
                if !can_write {
                    return no_permission();
                }
                let mut bytes = Vec::new();
                let max = 10 * 1024 * 1024;
                if body.take(max + 1).read_to_end(&mut bytes).is_err() {
                    return Reply::bare(500);
                }
                if bytes.len() as u64 > max {
                    return Reply::named(413, "MANIFEST_INVALID", "Manifest exceeds maximum size");
                }
                return upload_manifest(&mut st, req, &owner, image, reference, &bytes);
            }
            let found = if is_digest(reference) || reference_ok(reference) {
                find_manifest(&st, &owner, image, reference)
            } else {
                None
            };
            return match found {
                None => Reply::named(404, "MANIFEST_UNKNOWN", ""),
                Some(f) => {
                    let mut r = Reply::api(200)
                        .header("Docker-Content-Digest", f.digest.clone())
                        .header("ETag", format!("\"{}\"", f.digest))
                        .header("Content-Type", f.media_type.clone());
                    if method == "HEAD" {
                        r.length = Some(f.size);
                    } else {
                        r.body =
                            std::fs::read(content_path(&st.root, &f.digest)).unwrap_or_default();
                    }
                    r
                }
            };
        }
    }
    // No referrers endpoint, no catalog per image: ctx.Status(404).
    Reply::new(404)
}

fn package_files<'a>(st: &'a State, owner: &str, image: &str) -> &'a [File] {
    st.packages
        .get(&(owner.to_lowercase(), image.to_lowercase()))
        .map(|p| p.files.as_slice())
        .unwrap_or(&[])
}

/// `GetContainerBlob` with OwnerID, Image and Digest.
fn find_blob(st: &State, owner: &str, image: &str, digest: &str) -> Option<File> {
    package_files(st, owner, image)
        .iter()
        .find(|f| f.digest == digest)
        .cloned()
}

/// `GetContainerBlob` with IsManifest and a tag (lower-cased) or digest.
fn find_manifest(st: &State, owner: &str, image: &str, reference: &str) -> Option<File> {
    let files = package_files(st, owner, image);
    if is_digest(reference) {
        files
            .iter()
            .find(|f| f.is_manifest && f.digest == reference)
            .cloned()
    } else {
        let v = reference.to_lowercase();
        files
            .iter()
            .find(|f| f.is_manifest && f.version == v)
            .cloned()
    }
}

fn add_upload_file(st: &mut State, owner: &str, image: &str, digest: &str, size: u64) {
    let p = st
        .packages
        .entry((owner.to_lowercase(), image.to_lowercase()))
        .or_default();
    if !p
        .files
        .iter()
        .any(|f| f.version == "_upload" && f.digest == digest)
    {
        p.files.push(File {
            version: "_upload".into(),
            digest: digest.to_owned(),
            size,
            media_type: String::new(),
            is_manifest: false,
        });
    }
}

fn new_upload_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn initiate_upload(
    state: &Arc<Mutex<State>>,
    req: &Request,
    owner: &str,
    image: &str,
    body: &mut dyn Read,
) -> Reply {
    let mut st = state.lock().unwrap();
    let mount = query_param(&req.query, "mount").unwrap_or_default();
    let from = query_param(&req.query, "from").unwrap_or_default();
    if !mount.is_empty() {
        // BlobSearchOptions{Repository: from, Digest: mount}: `from` must be
        // the repository property exactly (lower-cased owner/image).
        let found = st
            .packages
            .iter()
            .filter(|((o, i), _)| format!("{o}/{i}") == from)
            .flat_map(|(_, p)| p.files.iter())
            .find(|f| f.digest == mount)
            .cloned();
        if let Some(f) = found {
            add_upload_file(&mut st, owner, image, &f.digest, f.size);
            return Reply::api(201)
                .header("Location", format!("/v2/{owner}/{image}/blobs/{mount}"))
                .header("Docker-Content-Digest", mount.clone())
                .header("ETag", format!("\"{mount}\""));
        }
    }
    let digest = query_param(&req.query, "digest").unwrap_or_default();
    if !digest.is_empty() {
        drop(st);
        let mut bytes = Vec::new();
        if body.read_to_end(&mut bytes).is_err() {
            return Reply::bare(500);
        }
        let got = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if got != digest {
            return Reply::named(400, "DIGEST_INVALID", "");
        }
        let mut st = state.lock().unwrap();
        let _ = std::fs::write(content_path(&st.root, &got), &bytes);
        add_upload_file(&mut st, owner, image, &got, bytes.len() as u64);
        return Reply::api(201)
            .header("Location", format!("/v2/{owner}/{image}/blobs/{digest}"))
            .header("Docker-Content-Digest", digest.clone())
            .header("ETag", format!("\"{digest}\""));
    }
    let id = new_upload_id();
    st.uploads.insert(
        id.clone(),
        UploadModel {
            bytes_received: 0,
            hasher: Sha256::new(),
        },
    );
    let _ = std::fs::File::create(upload_path(&st.root, &id));
    Reply::api(202)
        .header(
            "Location",
            format!("/v2/{owner}/{image}/blobs/uploads/{id}"),
        )
        .header("Range", "0-0")
        .header("Docker-Upload-Uuid", id)
}

enum AppendError {
    OffsetMismatch,
    Io,
}

/// `BlobUploader.Append`: the file must end where the model says; the body
/// is copied into the file and the hasher; the model is updated only when
/// the copy succeeded. Returns whether anything was written.
fn append(
    state: &Arc<Mutex<State>>,
    id: &str,
    body: &mut dyn Read,
    break_after: Option<u64>,
) -> Result<(), AppendError> {
    let (root, mut model) = {
        let st = state.lock().unwrap();
        let Some(m) = st.uploads.get(id) else {
            return Err(AppendError::Io);
        };
        (st.root.clone(), m.clone())
    };
    let path = upload_path(&root, id);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|_| AppendError::Io)?;
    let end = f.metadata().map_err(|_| AppendError::Io)?.len();
    if end != model.bytes_received {
        return Err(AppendError::OffsetMismatch);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let want = match break_after {
            Some(b) if n >= b => return Err(AppendError::Io),
            Some(b) => (b - n).min(buf.len() as u64) as usize,
            None => buf.len(),
        };
        let got = match body.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => k,
            Err(_) => return Err(AppendError::Io),
        };
        f.write_all(&buf[..got]).map_err(|_| AppendError::Io)?;
        model.hasher.update(&buf[..got]);
        n += got as u64;
    }
    if n == 0 {
        return Ok(());
    }
    model.bytes_received += n;
    let mut st = state.lock().unwrap();
    if let Some(m) = st.uploads.get_mut(id) {
        *m = model;
    }
    Ok(())
}

fn upload_chunk(
    state: &Arc<Mutex<State>>,
    req: &Request,
    owner: &str,
    image: &str,
    id: &str,
    body: &mut dyn Read,
    n: usize,
) -> Reply {
    let (size, faults) = {
        let st = state.lock().unwrap();
        match st.uploads.get(id) {
            Some(u) => (u.bytes_received, st.opts.faults.clone()),
            None => return Reply::named(404, "BLOB_UPLOAD_UNKNOWN", ""),
        }
    };
    if let Some(limit) = faults.ghcr_request_limit {
        if req.content_length > limit {
            return ghcr_416(limit);
        }
    }
    match req.header("content-range") {
        Some(cr) => {
            let mut it = cr.splitn(2, '-');
            let start = it.next().and_then(|s| s.trim().parse::<i64>().ok());
            let end = it.next().and_then(|s| {
                let d: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
                d.parse::<i64>().ok()
            });
            let (Some(start), Some(_)) = (start, end) else {
                return Reply::named(400, "BLOB_UPLOAD_INVALID", "");
            };
            if start != size as i64 {
                return Reply::named(416, "BLOB_UPLOAD_INVALID", "");
            }
        }
        None if size != 0 => {
            return Reply::named(
                400,
                "BLOB_UPLOAD_INVALID",
                "Stream uploads after first write are not allowed",
            );
        }
        None => {}
    }
    let break_after = faults
        .break_patch_body
        .filter(|(which, _)| *which == n)
        .map(|(_, keep)| keep);
    match append(state, id, body, break_after) {
        Ok(()) => {}
        Err(_) if break_after.is_some() => {
            let mut r = Reply::new(0);
            r.drop = true;
            r.note = "broken";
            return r;
        }
        Err(_) => return Reply::bare(500),
    }
    std::thread::sleep(faults.origin_delay);
    let received = state
        .lock()
        .unwrap()
        .uploads
        .get(id)
        .map(|u| u.bytes_received)
        .unwrap_or(0);
    if faults.drop_answer_on_patches.contains(&n) {
        let mut r = Reply::new(0);
        r.drop = true;
        r.note = "dropped";
        return r;
    }
    Reply::api(202)
        .header(
            "Location",
            format!("/v2/{owner}/{image}/blobs/uploads/{id}"),
        )
        .header("Range", format!("0-{}", received as i64 - 1))
        .header("Docker-Upload-Uuid", id)
}

fn ghcr_416(limit: u64) -> Reply {
    let mut r = Reply::new(416).header("Content-Type", "application/json");
    r.body = format!(
        "{{\"errors\":[{{\"code\":\"REQUESTED_RANGE_NOT_SATISFIABLE\",\"message\":\"the request body is too large and exceeds the maximum permissible limit of {:.2}MiB\"}}]}}\n",
        limit as f64 / 1048576.0
    )
    .into_bytes();
    r
}

fn end_upload(
    state: &Arc<Mutex<State>>,
    req: &Request,
    owner: &str,
    image: &str,
    id: &str,
    body: &mut dyn Read,
) -> Reply {
    let digest = query_param(&req.query, "digest").unwrap_or_default();
    if digest.is_empty() {
        return Reply::named(400, "DIGEST_INVALID", "");
    }
    let faults = {
        let st = state.lock().unwrap();
        if !st.uploads.contains_key(id) {
            return Reply::named(404, "BLOB_UPLOAD_UNKNOWN", "");
        }
        st.opts.faults.clone()
    };
    if let Some(limit) = faults.ghcr_request_limit {
        if req.content_length > limit {
            return ghcr_416(limit);
        }
    }
    // `if ctx.Req.Body != nil`: Go's server always has a body, so the
    // offset check runs even for an empty one.
    if append(state, id, body, None).is_err() {
        return Reply::bare(500);
    }
    let (root, model) = {
        let st = state.lock().unwrap();
        match st.uploads.get(id) {
            Some(m) => (st.root.clone(), m.clone()),
            None => return Reply::named(404, "BLOB_UPLOAD_UNKNOWN", ""),
        }
    };
    let got = format!("sha256:{}", hex(&model.hasher.finalize()));
    if got != digest {
        return Reply::named(400, "DIGEST_INVALID", "");
    }
    // saveAsPackageBlob: the whole blob is copied into the content store.
    if std::fs::copy(upload_path(&root, id), content_path(&root, &got)).is_err() {
        return Reply::bare(500);
    }
    std::thread::sleep(faults.origin_delay);
    let mut st = state.lock().unwrap();
    add_upload_file(&mut st, owner, image, &got, model.bytes_received);
    st.uploads.remove(id);
    let _ = std::fs::remove_file(upload_path(&root, id));
    Reply::api(201)
        .header("Location", format!("/v2/{owner}/{image}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.clone())
        .header("ETag", format!("\"{digest}\""))
}

fn is_image_manifest_type(mt: &str) -> bool {
    mt.eq_ignore_ascii_case("application/vnd.oci.image.manifest.v1+json")
        || mt.eq_ignore_ascii_case("application/vnd.docker.distribution.manifest.v2+json")
}

fn is_index_type(mt: &str) -> bool {
    mt.eq_ignore_ascii_case("application/vnd.oci.image.index.v1+json")
        || mt.eq_ignore_ascii_case("application/vnd.docker.distribution.manifest.list.v2+json")
}

fn valid_media_type(mt: &str) -> bool {
    mt.starts_with("application/vnd.docker.") || mt.starts_with("application/vnd.oci.")
}

fn upload_manifest(
    st: &mut State,
    req: &Request,
    owner: &str,
    image: &str,
    reference: &str,
    bytes: &[u8],
) -> Reply {
    let tagged = !is_digest(reference);
    if tagged && !reference_ok(reference) {
        return Reply::named(400, "MANIFEST_INVALID", "Tag is invalid");
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Reply::bare(500);
    };
    if v.get("schemaVersion").and_then(|s| s.as_i64()) != Some(2) {
        return Reply::named(501, "UNSUPPORTED", "Schema version is not supported");
    }
    let mut media_type = req.header("content-type").unwrap_or("").to_owned();
    if !valid_media_type(&media_type) {
        media_type = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned();
        if !valid_media_type(&media_type) {
            return Reply::named(400, "MANIFEST_INVALID", "MediaType not recognized");
        }
    }
    let digest = format!("sha256:{}", hex(&Sha256::digest(bytes)));
    let version = reference.to_lowercase();
    let mut refs: Vec<File> = Vec::new();
    if is_image_manifest_type(&media_type) {
        let descs = std::iter::once(v.get("config").cloned().unwrap_or_default()).chain(
            v.get("layers")
                .and_then(|l| l.as_array())
                .cloned()
                .unwrap_or_default(),
        );
        for d in descs {
            let dg = d.get("digest").and_then(|x| x.as_str()).unwrap_or("");
            let Some(f) = find_blob(st, owner, image, dg) else {
                return Reply::named(404, "BLOB_UNKNOWN", "");
            };
            if d.get("size").and_then(|x| x.as_u64()) != Some(f.size) {
                return Reply::named(400, "SIZE_INVALID", "");
            }
            refs.push(File {
                version: version.clone(),
                digest: f.digest,
                size: f.size,
                media_type: d
                    .get("mediaType")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_owned(),
                is_manifest: false,
            });
        }
    } else if is_index_type(&media_type) {
        for m in v
            .get("manifests")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let mt = m.get("mediaType").and_then(|x| x.as_str()).unwrap_or("");
            if !is_image_manifest_type(mt) {
                return Reply::named(400, "MANIFEST_INVALID", "");
            }
            let dg = m.get("digest").and_then(|x| x.as_str()).unwrap_or("");
            if find_manifest(st, owner, image, dg).is_none() {
                return Reply::named(404, "MANIFEST_BLOB_UNKNOWN", "");
            }
        }
    } else {
        return Reply::named(400, "MANIFEST_INVALID", "");
    }
    let _ = std::fs::write(content_path(&st.root, &digest), bytes);
    let p = st
        .packages
        .entry((owner.to_lowercase(), image.to_lowercase()))
        .or_default();
    // createPackageAndVersion: an existing version is deleted and made anew.
    p.files.retain(|f| f.version != version);
    p.tagged.remove(&version);
    // createFileFromBlobReference: the blobs leave the upload version.
    let moved: Vec<String> = refs.iter().map(|r| r.digest.clone()).collect();
    p.files
        .retain(|f| !(f.version == "_upload" && moved.contains(&f.digest)));
    p.files.extend(refs);
    p.files.push(File {
        version: version.clone(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        media_type,
        is_manifest: true,
    });
    if tagged {
        p.tagged.insert(version, ());
    }
    Reply::api(201)
        .header(
            "Location",
            format!("/v2/{owner}/{image}/manifests/{reference}"),
        )
        .header("Docker-Content-Digest", digest.clone())
        .header("ETag", format!("\"{digest}\""))
}

fn tag_list(st: &State, owner: &str, image: &str) -> Reply {
    let Some(p) = st
        .packages
        .get(&(owner.to_lowercase(), image.to_lowercase()))
    else {
        return Reply::named(404, "NAME_UNKNOWN", "");
    };
    let tags: Vec<&String> = p.tagged.keys().collect();
    let mut r = Reply::api(200).header("Content-Type", "application/json");
    r.body = serde_json::to_vec(&serde_json::json!({
        "name": format!("{owner}/{image}").to_lowercase(),
        "tags": tags,
    }))
    .unwrap_or_default();
    r
}
