//! Getting files from a Debian mirror: the [`Fetch`] trait (implemented on
//! reqwest in `registry::archive_http`, the only place that speaks HTTP),
//! and the content-addressed [`Cache`] every verified index and `.deb`
//! goes through, so that a warm cache needs no network.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use url::Url;

use super::error::DebianError;

/// GET a URL into a file. Implementations retry transient failures
/// themselves and never buffer a whole body in memory.
pub trait Fetch: Send + Sync {
    /// Write the body of `url` to `dest` (created or truncated); refuse a
    /// body over `limit` bytes. Returns the bytes written.
    fn get(&self, url: &Url, dest: &Path, limit: u64) -> Result<u64, FetchError>;
}

/// A download that failed. URLs are printed without user info.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 404 or 410.
    #[error("{url}: not found (HTTP {status})")]
    NotFound {
        /// The URL.
        url: String,
        /// 404 or 410.
        status: u16,
    },
    /// Another error status, after retries.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body is larger than allowed.
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The bound.
        limit: u64,
    },
    /// Connection refused, DNS, timeouts, a broken body, after retries.
    #[error("cannot download {url}: {reason}")]
    Network {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The destination file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// Whether the network (not the answer or the disk) is at fault.
    pub fn is_network(&self) -> bool {
        matches!(self, FetchError::Network { .. } | FetchError::Status { .. })
    }
}

/// A URL fit for messages: no user name or password.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// From 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Sha256> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex.trim(), &mut out).ok()?;
        Some(Sha256(out))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest of a file's contents, and its size.
    pub fn of_file(path: &Path) -> io::Result<(Sha256, u64)> {
        let mut f = File::open(path)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((Sha256(h.finalize().into()), size))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.hex())
    }
}

/// What a file must be: its size and sha256, and who said so.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    /// The sha256.
    pub sha256: Sha256,
    /// The size in bytes.
    pub size: u64,
    /// What it is, for messages (`Packages of bookworm-security`).
    pub what: &'a str,
    /// Who promised the hash (`InRelease`, `Packages`, the lock file).
    pub source_of_truth: &'a str,
}

/// Files by sha256 under a directory (the tool's is
/// `settings::cache_dir()/debian`): `sha256/AB/ABCD…` for downloads,
/// `data/ABCD….tar` for `.deb` contents unpacked once, `tmp/` for
/// downloads in progress. Entries are written to `tmp/` and renamed into
/// place, so concurrent builds share the cache safely; a file is re-hashed
/// every time it is used, so a damaged cache is noticed, not trusted.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache rooted at `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, sha: &Sha256) -> PathBuf {
        let hex = sha.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// Where the unpacked `data.tar` of the `.deb` with this sha256 lives.
    pub(crate) fn data_path(&self, deb_sha: &Sha256) -> PathBuf {
        self.root
            .join("data")
            .join(format!("{}.tar", deb_sha.hex()))
    }

    /// A new file under `tmp/` (the caller renames or removes it).
    pub(crate) fn temp_path(&self, hint: &str) -> Result<PathBuf, DebianError> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir).map_err(DebianError::io("creating", &dir))?;
        let n: u64 = rand::random();
        Ok(dir.join(format!("{hint}.{}.{n:016x}", std::process::id())))
    }

    /// Move a finished file into place at `dest` (atomic rename).
    pub(crate) fn commit(&self, tmp: &Path, dest: &Path) -> Result<(), DebianError> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(DebianError::io("creating", parent))?;
        }
        fs::rename(tmp, dest).map_err(DebianError::io("moving into the cache", dest))
    }

    /// The cached file that is exactly `want`, if there is one. A cached
    /// file with other contents is removed.
    pub fn get(&self, want: &Expected<'_>) -> Option<PathBuf> {
        let path = self.blob_path(&want.sha256);
        match Sha256::of_file(&path) {
            Ok((sha, size)) if sha == want.sha256 && size == want.size => Some(path),
            Ok(_) => {
                tracing::warn!("{}: damaged cache entry removed", path.display());
                let _ = fs::remove_file(&path);
                None
            }
            Err(_) => None,
        }
    }

    /// The file `want` from the cache, else downloaded from the first of
    /// `urls` that has it (a 404 tries the next), checked against its size
    /// and sha256, and cached.
    pub fn fetch(
        &self,
        fetch: &dyn Fetch,
        urls: &[Url],
        want: &Expected<'_>,
    ) -> Result<PathBuf, DebianError> {
        if let Some(p) = self.get(want) {
            return Ok(p);
        }
        let tmp = self.temp_path("download")?;
        let mut last_404 = None;
        for url in urls {
            match fetch.get(url, &tmp, want.size) {
                Ok(_) => {}
                Err(e @ FetchError::NotFound { .. }) => {
                    last_404 = Some(e);
                    continue;
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
            let (sha, size) = Sha256::of_file(&tmp).map_err(DebianError::io("reading", &tmp))?;
            if sha != want.sha256 || size != want.size {
                let _ = fs::remove_file(&tmp);
                return Err(DebianError::HashMismatch {
                    what: want.what.to_owned(),
                    url: display_url(url),
                    expected: format!("{} ({} bytes)", want.sha256, want.size),
                    actual: format!("{sha} ({size} bytes)"),
                    source_of_truth: want.source_of_truth.to_owned(),
                });
            }
            let dest = self.blob_path(&want.sha256);
            self.commit(&tmp, &dest)?;
            return Ok(dest);
        }
        let _ = fs::remove_file(&tmp);
        Err(last_404
            .unwrap_or_else(|| FetchError::NotFound {
                url: "(no URL)".into(),
                status: 404,
            })
            .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Serves fixed bodies by URL and counts requests.
    struct Canned {
        bodies: Vec<(String, Vec<u8>)>,
        asked: Mutex<Vec<String>>,
    }

    impl Fetch for Canned {
        fn get(&self, url: &Url, dest: &Path, limit: u64) -> Result<u64, FetchError> {
            self.asked.lock().unwrap().push(url.to_string());
            let Some((_, body)) = self.bodies.iter().find(|(u, _)| u == url.as_str()) else {
                return Err(FetchError::NotFound {
                    url: url.to_string(),
                    status: 404,
                });
            };
            if body.len() as u64 > limit {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            fs::write(dest, body).unwrap();
            Ok(body.len() as u64)
        }
    }

    #[test]
    fn a_verified_download_is_cached_and_served_from_the_cache_without_asking_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let body = b"Package: a\n".to_vec();
        let f = Canned {
            bodies: vec![("http://m/b".into(), body.clone())],
            asked: Mutex::new(Vec::new()),
        };
        let want = Expected {
            sha256: Sha256::of(&body),
            size: body.len() as u64,
            what: "Packages",
            source_of_truth: "InRelease",
        };
        let urls = [
            Url::parse("http://m/a").unwrap(),
            Url::parse("http://m/b").unwrap(),
        ];
        let p = cache.fetch(&f, &urls, &want).unwrap();
        assert_eq!(fs::read(&p).unwrap(), body);
        assert_eq!(f.asked.lock().unwrap().len(), 2, "404 then the next URL");
        let again = cache.fetch(&f, &urls, &want).unwrap();
        assert_eq!(again, p);
        assert_eq!(f.asked.lock().unwrap().len(), 2, "served from the cache");
    }

    #[test]
    fn a_body_with_another_hash_is_refused_naming_both_hashes_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let f = Canned {
            bodies: vec![("http://m/x.deb".into(), b"evil".to_vec())],
            asked: Mutex::new(Vec::new()),
        };
        let want = Expected {
            sha256: Sha256::of(b"good"),
            size: 4,
            what: "x 1.0",
            source_of_truth: "Packages",
        };
        let err = cache
            .fetch(&f, &[Url::parse("http://m/x.deb").unwrap()], &want)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("x 1.0") && msg.contains("http://m/x.deb"),
            "{msg}"
        );
        assert!(msg.contains(&Sha256::of(b"evil").hex()), "{msg}");
        assert!(cache.get(&want).is_none());
    }

    #[test]
    fn a_damaged_cache_entry_is_dropped_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let want = Expected {
            sha256: Sha256::of(b"good"),
            size: 4,
            what: "x",
            source_of_truth: "Packages",
        };
        let p = cache.blob_path(&want.sha256);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"bad!").unwrap();
        assert!(cache.get(&want).is_none());
        assert!(!p.exists());
    }

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        let u = Url::parse("http://user:secret@mirror.example/debian/").unwrap();
        assert_eq!(display_url(&u), "http://mirror.example/debian/");
    }
}
