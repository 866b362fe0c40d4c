//! A DOUBLE of a Debian mirror that lies, in process, in front of the real
//! one: every GET under `/debian/` and `/debian-security/` is fetched from
//! deb.debian.org through the tool's own archive client and answered as a
//! plain HTTP/1.1 mirror answers apt's http method (200 with the bytes and
//! a Content-Length, 404 for what the mirror does not have) — then
//! tampered with as told. A real mirror cannot lie on cue; this one can.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use guildhall_image::debian::{Fetch, FetchError};
use url::Url;

/// How the double lies.
#[derive(Clone, Debug)]
pub enum Tamper {
    /// It does not: a faithful proxy (to show the refusals come from the lies).
    Nothing,
    /// One hex digit of the signed text of every `InRelease` is changed, so
    /// its signature no longer matches.
    BreakSignature,
    /// `InRelease` is served as the bare text, its signature removed.
    StripSignature,
    /// One byte in the middle of every `.deb` is flipped.
    FlipDebByte,
    /// Every `InRelease` of this pocket is these bytes (a replay).
    Replay {
        /// The pocket (`bookworm-security`).
        pocket: String,
        /// What to serve.
        bytes: Vec<u8>,
    },
}

/// The double, listening on loopback until dropped with the test process.
pub struct MirrorDouble {
    /// `http://127.0.0.1:PORT/debian`.
    pub mirror: Url,
    /// `http://127.0.0.1:PORT/debian-security`.
    pub security_mirror: Url,
    /// Every path asked for, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl MirrorDouble {
    /// Start one that tampers as told, forwarding through `upstream`.
    pub fn start(tamper: Tamper, upstream: Arc<dyn Fetch>) -> MirrorDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (tamper, upstream, seen) =
                    (tamper.clone(), Arc::clone(&upstream), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let _ = serve(conn, &tamper, upstream.as_ref(), &seen);
                });
            }
        });
        MirrorDouble {
            mirror: Url::parse(&format!("http://127.0.0.1:{port}/debian")).unwrap(),
            security_mirror: Url::parse(&format!("http://127.0.0.1:{port}/debian-security"))
                .unwrap(),
            requests,
        }
    }
}

fn serve(
    conn: TcpStream,
    tamper: &Tamper,
    upstream: &dyn Fetch,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    seen.lock().unwrap().push(path.clone());
    let mut out = conn;
    let body = if path.starts_with("/debian/") || path.starts_with("/debian-security/") {
        fetch(upstream, &format!("http://deb.debian.org{path}"))
    } else {
        None
    };
    let Some(mut body) = body else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    lie(tamper, &path, &mut body);
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

fn fetch(upstream: &dyn Fetch, url: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let dest = dir.path().join("body");
    match upstream.get(&Url::parse(url).ok()?, &dest, 1 << 30) {
        Ok(_) => std::fs::read(&dest).ok(),
        Err(FetchError::NotFound { .. }) => None,
        Err(e) => panic!("the double's upstream failed: {e}"),
    }
}

fn lie(tamper: &Tamper, path: &str, body: &mut Vec<u8>) {
    let in_release = path.ends_with("/InRelease");
    match tamper {
        Tamper::Nothing => {}
        Tamper::BreakSignature if in_release => {
            // The first hash of the SHA256 list: 0 ↔ 1 of its first digit.
            let text = String::from_utf8_lossy(body).into_owned();
            let at = text.find("\nSHA256:\n ").expect("a SHA256 field") + 10;
            let c = body[at];
            body[at] = if c == b'0' { b'1' } else { b'0' };
        }
        Tamper::StripSignature if in_release => {
            let text = String::from_utf8_lossy(body).into_owned();
            let start = text.find("\n\n").expect("armor headers") + 2;
            let end = text
                .find("\n-----BEGIN PGP SIGNATURE-----")
                .expect("a signature");
            *body = text.as_bytes()[start..end].to_vec();
        }
        Tamper::FlipDebByte if path.ends_with(".deb") => {
            let mid = body.len() / 2;
            body[mid] ^= 0x01;
        }
        Tamper::Replay { pocket, bytes }
            if in_release && path.contains(&format!("/dists/{pocket}/")) =>
        {
            body.clone_from(bytes);
        }
        _ => {}
    }
}

/// A path the double was asked for ends with `suffix`.
pub fn asked(requests: &Mutex<Vec<String>>, suffix: &str) -> bool {
    requests.lock().unwrap().iter().any(|p| p.ends_with(suffix))
}

/// The body of a URL through `f` (for tests that need a real file).
pub fn get_bytes(f: &dyn Fetch, url: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b");
    f.get(&Url::parse(url).unwrap(), &dest, 1 << 30).unwrap();
    std::fs::read(Path::new(&dest)).unwrap()
}
