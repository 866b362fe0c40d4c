//! `FaultyRegistry`: an in-process FAKE registry that misbehaves on cue —
//! a lying registry.
//!
//! Only for faults a real registry cannot produce on demand: 429 with
//! `Retry-After`, a connection dropped in the middle of a PATCH, HTML or
//! garbage answers, a 202 answer to a cross-repository mount, a rejected
//! manifest, an upload `Location` on another host, bodies that stall after
//! the headers, a `Range` that never advances, absurd token lifetimes, an
//! upload status that counts bytes. Everything else is tested against the
//! real `docker-registry` (or, for Forgejo, its double `ForgejoRegistry`).
//!
//! A plain HTTP/1.1 server on std threads (one per connection, keep-alive),
//! storing uploads, blobs and manifests in memory, and logging every request
//! so tests can assert what the client did.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use guildhall_image::image::Digest;

/// What to get wrong.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Answer the first N blob HEADs with 429 and this `Retry-After` value.
    pub throttle_heads: u32,
    /// The `Retry-After` value sent with a 429.
    pub retry_after: String,
    /// Drop the connection during PATCH number `.0` (0-based, over the
    /// server's life) after keeping `.1` bytes of its body.
    pub drop_patch: Option<(usize, usize)>,
    /// Answer every request with this status and an HTML page.
    pub html_everywhere: Option<u16>,
    /// Answer manifest GETs with 200 and garbage that is not JSON.
    pub garbage_manifests: bool,
    /// Answer mount requests with 202 and a fresh upload session.
    pub mount_202: bool,
    /// Refuse manifest PUTs with 400 MANIFEST_INVALID.
    pub reject_manifests: bool,
    /// Demand Basic credentials (any will do) on every request: 401 with a
    /// Basic challenge when none are sent.
    pub require_basic: bool,
    /// Answer blob GETs with a 307 to this base URL + the request path
    /// (a storage backend on another host).
    pub redirect_blobs_to: Option<String>,
    /// Answer blob GETs with the stored bytes, last byte flipped (content
    /// that does not match its digest).
    pub corrupt_blobs: bool,
    /// Listen on a second port too, and send uploads there: the upload
    /// POST's `Location` names the other port (another host:port for the
    /// client). `require_basic` applies to the main port only.
    pub upload_alias: bool,
    /// Send a manifest's headers, then stall its body.
    pub stall_manifest_body: bool,
    /// Send an error's headers (a 404 for a manifest), then stall its body.
    pub stall_error_body: bool,
    /// Demand Bearer tokens from `/token` on this server, which answers
    /// with `token_response` (raw JSON).
    pub token_response: Option<String>,
    /// Send the token response's headers, then stall its body.
    pub stall_token_body: bool,
    /// Answer every PATCH with 202 and the `Range` of what is stored,
    /// storing nothing: an upload that never advances.
    pub stuck_patches: bool,
    /// Answer the upload-status GET with `Range: 0-<byte count>`, as
    /// Forgejo does, instead of the last offset.
    pub status_range_counts: bool,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Query string.
    pub query: String,
    /// `Content-Range`, if sent.
    pub content_range: Option<String>,
    /// Body bytes received.
    pub body_len: usize,
    /// Status answered (0 when the connection was dropped).
    pub status: u16,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// Whether it came in on the alias port (`upload_alias`).
    pub on_alias: bool,
}

#[derive(Default)]
struct State {
    faults: Faults,
    host: String,
    alias_host: Option<String>,
    uploads: HashMap<String, Vec<u8>>,
    blobs: HashMap<(String, String), Vec<u8>>,
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    log: Vec<Logged>,
    heads_throttled: u32,
    patches: usize,
    next_id: u64,
}

/// The fake. Stops (and frees its port) on drop.
pub struct FaultyRegistry {
    addr: SocketAddr,
    alias: Option<SocketAddr>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

use super::http::{Head as Request, query_param, read_head, reason};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the headers and half the body, then nothing more.
    stall: bool,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stall: false,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
    fn json(mut self, body: &str) -> Reply {
        self.body = body.as_bytes().to_vec();
        self.header("Content-Type", "application/json")
    }
    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::new(status).json(&format!(
            r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":"from the fake"}}]}}"#
        ))
    }
}

impl FaultyRegistry {
    /// Start on a free loopback port.
    pub fn start(faults: Faults) -> FaultyRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let alias_listener = faults
            .upload_alias
            .then(|| TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"));
        let alias = alias_listener
            .as_ref()
            .map(|l| l.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State {
            faults,
            host: addr.to_string(),
            alias_host: alias.map(|a| a.to_string()),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, on_alias) in
            std::iter::once((listener, false)).chain(alias_listener.into_iter().map(|l| (l, true)))
        {
            let state = state.clone();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || serve(conn, state, on_alias, stop));
                }
            }));
        }
        FaultyRegistry {
            addr,
            alias,
            state,
            stop,
            threads,
        }
    }

    /// The alias `127.0.0.1:PORT` uploads are sent to (`upload_alias`).
    pub fn alias_host(&self) -> Option<String> {
        self.alias.map(|a| a.to_string())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// A blob stored in `repo`, if any.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .blobs
            .get(&(repo.to_owned(), digest.to_string()))
            .cloned()
    }

    /// Store a blob in `repo` (to mount from).
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) {
        self.state.lock().unwrap().blobs.insert(
            (repo.to_owned(), Digest::of(bytes).to_string()),
            bytes.to_vec(),
        );
    }

    /// Store a manifest under a tag.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        self.state.lock().unwrap().manifests.insert(
            (repo.to_owned(), reference.to_owned()),
            (media_type.to_owned(), bytes.to_vec()),
        );
    }

    /// The manifest under a tag or digest, if any.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .manifests
            .get(&(repo.to_owned(), reference.to_owned()))
            .map(|(_, b)| b.clone())
    }
}

impl Drop for FaultyRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loops.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.alias {
            let _ = TcpStream::connect(a);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, state: Arc<Mutex<State>>, on_alias: bool, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(req) = read_head(&mut reader) else {
            return;
        };
        let len: usize = req
            .headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        // The PATCH to drop?
        if req.method == "PATCH" {
            let mut st = state.lock().unwrap();
            let n = st.patches;
            st.patches += 1;
            if let Some((which, keep)) = st.faults.drop_patch {
                if which == n {
                    drop(st);
                    let mut body = vec![0u8; keep.min(len)];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let mut st = state.lock().unwrap();
                    if let Some(id) = req.path.rsplit('/').next() {
                        if let Some(u) = st.uploads.get_mut(id) {
                            u.extend_from_slice(&body);
                        }
                    }
                    st.log.push(Logged {
                        method: req.method.clone(),
                        path: req.path.clone(),
                        query: req.query.clone(),
                        content_range: req.headers.get("content-range").cloned(),
                        body_len: body.len(),
                        status: 0,
                        authorization: req.headers.contains_key("authorization"),
                        on_alias,
                    });
                    drop(st);
                    let _ = out.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = {
            let mut st = state.lock().unwrap();
            let reply = handle(&mut st, &req, &body, on_alias);
            st.log.push(Logged {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
                content_range: req.headers.get("content-range").cloned(),
                body_len: body.len(),
                status: reply.status,
                authorization: req.headers.contains_key("authorization"),
                on_alias,
            });
            reply
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if reply.stall {
            // Half the body, then silence (bounded, so the test's process
            // does not keep the thread for ever).
            let _ = out.write_all(&reply.body[..reply.body.len() / 2]);
            let _ = out.flush();
            let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            return;
        }
        if req.method != "HEAD" && out.write_all(&reply.body).is_err() {
            return;
        }
        let _ = out.flush();
    }
}

fn range_header(len: usize) -> String {
    format!("0-{}", len.saturating_sub(1))
}

fn handle(st: &mut State, req: &Request, body: &[u8], on_alias: bool) -> Reply {
    if let Some(status) = st.faults.html_everywhere {
        let mut r = Reply::new(status).header("Content-Type", "text/html");
        r.body = format!(
            "<html><head><title>{status} Oops</title></head><body><h1>Something broke</h1></body></html>"
        )
        .into_bytes();
        return r;
    }
    if st.faults.require_basic && !on_alias && !req.headers.contains_key("authorization") {
        return Reply::error(401, "UNAUTHORIZED", "authentication required")
            .header("WWW-Authenticate", r#"Basic realm="faulty""#);
    }
    if let Some(token) = st.faults.token_response.clone() {
        if req.path == "/token" {
            let mut r = Reply::new(200).json(&token);
            r.stall = st.faults.stall_token_body;
            return r;
        }
        if !req
            .headers
            .get("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
        {
            return Reply::error(401, "UNAUTHORIZED", "authentication required").header(
                "WWW-Authenticate",
                format!(
                    r#"Bearer realm="http://{}/token",service="faulty""#,
                    st.host
                ),
            );
        }
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        // Not the API: a storage backend serving redirected blob GETs.
        let mut r = Reply::new(200).header("Content-Type", "application/octet-stream");
        if let Some(d) = req.path.rsplit('/').next() {
            if let Some(b) = st.blobs.iter().find(|((_, dg), _)| dg == d).map(|(_, b)| b) {
                r.body = b.clone();
                return r;
            }
        }
        return Reply::new(404);
    };
    if rest.is_empty() {
        return Reply::new(200).json("{}");
    }
    if let Some((name, id)) = rest.split_once("/blobs/uploads/") {
        return upload(st, req, name, id, body);
    }
    if let Some((name, digest)) = rest.split_once("/blobs/") {
        if req.method == "HEAD" && st.heads_throttled < st.faults.throttle_heads {
            st.heads_throttled += 1;
            return Reply::new(429).header("Retry-After", st.faults.retry_after.clone());
        }
        if let (Some(to), "GET") = (&st.faults.redirect_blobs_to, req.method.as_str()) {
            return Reply::new(307).header("Location", format!("{to}/storage/{digest}"));
        }
        return match st.blobs.get(&(name.to_owned(), digest.to_owned())) {
            Some(b) => {
                let mut r = Reply::new(200)
                    .header("Docker-Content-Digest", digest)
                    .header("Content-Type", "application/octet-stream");
                r.body = b.clone();
                if st.faults.corrupt_blobs && req.method == "GET" {
                    if let Some(last) = r.body.last_mut() {
                        *last ^= 0xff;
                    }
                }
                r
            }
            None => Reply::error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        };
    }
    if let Some((name, reference)) = rest.split_once("/manifests/") {
        let key = (name.to_owned(), reference.to_owned());
        return match req.method.as_str() {
            "PUT" => {
                if st.faults.reject_manifests {
                    return Reply::error(400, "MANIFEST_INVALID", "manifest invalid");
                }
                let mt = req.headers.get("content-type").cloned().unwrap_or_default();
                let d = Digest::of(body).to_string();
                st.manifests.insert(key, (mt.clone(), body.to_vec()));
                st.manifests
                    .insert((name.to_owned(), d.clone()), (mt, body.to_vec()));
                Reply::new(201)
                    .header("Docker-Content-Digest", d.clone())
                    .header("Location", format!("/v2/{name}/manifests/{d}"))
            }
            _ => {
                if st.faults.garbage_manifests {
                    let mut r = Reply::new(200).header("Content-Type", "text/html");
                    r.body = b"<html><body>Welcome to our CDN!</body></html>".to_vec();
                    return r;
                }
                match st.manifests.get(&key) {
                    Some((mt, b)) => {
                        let mut r = Reply::new(200)
                            .header("Content-Type", mt.clone())
                            .header("Docker-Content-Digest", Digest::of(b).to_string());
                        r.body = b.clone();
                        r.stall = st.faults.stall_manifest_body;
                        r
                    }
                    None => {
                        let mut r = Reply::error(404, "MANIFEST_UNKNOWN", "manifest unknown");
                        r.stall = st.faults.stall_error_body;
                        r
                    }
                }
            }
        };
    }
    Reply::new(404)
}

fn upload(st: &mut State, req: &Request, name: &str, id: &str, body: &[u8]) -> Reply {
    let session = |st: &mut State| {
        st.next_id += 1;
        let id = format!("upload-{}", st.next_id);
        st.uploads.insert(id.clone(), Vec::new());
        let base = match &st.alias_host {
            Some(a) => format!("http://{a}"),
            None => String::new(),
        };
        Reply::new(202)
            .header("Location", format!("{base}/v2/{name}/blobs/uploads/{id}"))
            .header("Range", "0-0")
            .header("Docker-Upload-UUID", id)
    };
    match (req.method.as_str(), id) {
        ("POST", "") => {
            if let (Some(digest), Some(from)) = (
                query_param(&req.query, "mount"),
                query_param(&req.query, "from"),
            ) {
                if !st.faults.mount_202 {
                    if let Some(b) = st.blobs.get(&(from, digest.clone())).cloned() {
                        st.blobs.insert((name.to_owned(), digest.clone()), b);
                        return Reply::new(201).header("Docker-Content-Digest", digest);
                    }
                }
            }
            session(st)
        }
        ("GET", id) => match st.uploads.get(id) {
            Some(u) if st.faults.status_range_counts => Reply::new(204)
                .header("Range", format!("0-{}", u.len()))
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}")),
            Some(u) => Reply::new(204)
                .header("Range", range_header(u.len()))
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}")),
            None => Reply::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"),
        },
        ("PATCH", id) => {
            let Some(u) = st.uploads.get_mut(id) else {
                return Reply::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
            };
            if let Some(cr) = req.headers.get("content-range") {
                let start: Option<usize> = cr.split('-').next().and_then(|s| s.parse().ok());
                if start != Some(u.len()) {
                    return Reply::new(416).header("Range", range_header(u.len()));
                }
            }
            if st.faults.stuck_patches {
                return Reply::new(202)
                    .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                    .header("Range", range_header(u.len()));
            }
            u.extend_from_slice(body);
            Reply::new(202)
                .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("Range", range_header(u.len()))
        }
        ("PUT", id) => {
            let Some(mut u) = st.uploads.remove(id) else {
                return Reply::error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown");
            };
            u.extend_from_slice(body);
            let want = query_param(&req.query, "digest").unwrap_or_default();
            let got = Digest::of(&u).to_string();
            if want != got {
                return Reply::error(400, "DIGEST_INVALID", "provided digest did not match");
            }
            st.blobs.insert((name.to_owned(), got.clone()), u);
            Reply::new(201)
                .header("Docker-Content-Digest", got.clone())
                .header("Location", format!("/v2/{name}/blobs/{got}"))
        }
        ("DELETE", id) => {
            st.uploads.remove(id);
            Reply::new(204)
        }
        _ => Reply::new(405),
    }
}
