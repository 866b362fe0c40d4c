//! Helpers of the Debian-archive tests: the shared cache (warmed by
//! `tests/support/debian-archive.sh`), the tool's own archive client on a
//! runtime, the debootstrapped root file systems, a fetcher that refuses
//! the network, layer readers, and the lying mirror double.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use guildhall_image::debian::{Cache, Fetch, FetchError};
use guildhall_image::registry::archive_http::{ArchiveHttp, ArchiveHttpOptions};
use url::Url;

fn script(path: &str, args: &[&str]) -> String {
    super::run_script(path, args, &[])
}

/// What `debian-archive.sh` printed: `CACHE`, and `PACKAGE_suite_name` =
/// "VERSION SHA256 POCKET" as apt's tools pick them.
pub fn warm() -> &'static HashMap<String, String> {
    static WARM: OnceLock<HashMap<String, String>> = OnceLock::new();
    WARM.get_or_init(|| {
        let out = script(
            "tests/support/debian-archive.sh",
            &[
                "--package",
                "libssl3",
                "--package",
                "ca-certificates",
                "--package",
                "libssl3t64",
            ],
        );
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// The shared Debian cache of the tests.
pub fn cache() -> Cache {
    Cache::new(warm().get("CACHE").expect("CACHE="))
}

/// A private cache whose indexes and `.deb`s are hard links to the shared
/// cache's (so only `InRelease` and what the test removes go to the network).
pub fn private_cache(dir: &Path) -> Cache {
    let shared = cache();
    let src = shared.root().join("sha256");
    let st = Command::new("cp")
        .arg("-al")
        .arg(&src)
        .arg(dir.join("sha256"))
        .status()
        .expect("cp");
    assert!(st.success());
    Cache::new(dir)
}

/// A multi-threaded runtime for the archive client.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The tool's archive client.
pub fn http() -> ArchiveHttp {
    ArchiveHttp::new(runtime().handle().clone(), ArchiveHttpOptions::default()).expect("a client")
}

/// `$CACHE/rootfs-bookworm-{bare,runner}` (debootstrap, and + apt's
/// libssl3 and ca-certificates).
pub fn rootfs(which: &str) -> PathBuf {
    let out = script("fixtures/make-rootfs.sh", &[]);
    PathBuf::from(out.lines().last().expect("a path").trim())
        .join(format!("rootfs-bookworm-{which}"))
}

/// A fetcher that must not be used: every call is counted and fails.
#[derive(Default)]
pub struct NoNetwork {
    pub calls: AtomicUsize,
}

impl Fetch for NoNetwork {
    fn get(&self, url: &Url, _dest: &Path, _limit: u64) -> Result<u64, FetchError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(FetchError::Network {
            url: url.to_string(),
            reason: "the test allows no network".into(),
        })
    }
}

/// One entry of a layer, read back.
#[derive(Clone, Debug)]
pub struct Back {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// The entries of a gzip layer, in order (file data kept only for paths
/// `keep` says yes to).
pub fn read_layer(gz: &[u8], keep: &dyn Fn(&str) -> bool) -> Vec<Back> {
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
    ar.entries()
        .expect("a tar")
        .map(|e| {
            let mut e = e.expect("an entry");
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            if keep(&path) {
                e.read_to_end(&mut data).expect("data");
            }
            let h = e.header();
            Back {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned()),
                path,
                data,
            }
        })
        .collect()
}

/// `name -> symlink target` of a directory on disk (the files of
/// `/etc/ssl/certs` as apt left them).
pub fn dir_listing(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("a directory")
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let what = match std::fs::read_link(e.path()) {
                Ok(t) => format!("-> {}", t.display()),
                Err(_) => "file".into(),
            };
            (name, what)
        })
        .collect()
}

/// A package's version in a dpkg status file.
pub fn status_version(status: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(status).expect("status");
    let mut cur = "";
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("Package: ") {
            cur = p;
        }
        if cur == package {
            if let Some(v) = l.strip_prefix("Version: ") {
                return v.to_owned();
            }
        }
    }
    panic!("{package} not in {}", status.display())
}

/// Run a command, insisting on success; stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
