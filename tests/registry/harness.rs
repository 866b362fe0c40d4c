//! Test harness of the registry tests: real `docker-registry` processes and
//! nginx proxies through `tests/support/*.sh` (stopped on drop), `skopeo`,
//! and OCI layouts with made-up images of a chosen size.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use guildhall_image::credentials::{Chain, CredentialSource, ForHost, Secret};
use guildhall_image::image::{Digest, media};
use guildhall_image::layout::{Layout, TaggedImage};
use guildhall_image::registry::{Client, ClientOptions};
use rand::{RngCore, SeedableRng};

pub const USER: &str = "testuser";
pub const PASSWORD: &str = "testpass";
pub const MIB: u64 = 1024 * 1024;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fail (never skip) when a tool the test needs is missing.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} || test -x /usr/sbin/{tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed; this test needs it (apt-get install {package})"
    );
}

/// Run a future with a deadline: a test must never hang.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} took more than {secs} s"),
    }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn parse_kv(s: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(s)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// How the real registry authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Anonymous,
    Basic,
    Token,
}

/// Options for [`RealRegistry::start`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// Token lifetime (token mode).
    pub ttl: Option<u64>,
    /// How much earlier than `expires_in` the registry rejects a token.
    pub token_early_death: Option<u64>,
}

/// A real `docker-registry` (CNCF distribution 2.8) on loopback, stopped on drop.
pub struct RealRegistry {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub port: String,
    pub pid: i32,
    pub mode: Mode,
    pub token_log: Option<PathBuf>,
    args: Vec<String>,
}

impl RealRegistry {
    pub fn start(mode: Mode) -> RealRegistry {
        RealRegistry::start_with(mode, RegistryOpts::default())
    }

    pub fn start_with(mode: Mode, opts: RegistryOpts) -> RealRegistry {
        require("docker-registry", "docker-registry");
        if mode == Mode::Basic {
            require("htpasswd", "apache2-utils");
        }
        let dir = tempfile::Builder::new()
            .prefix("guildhall-reg-")
            .tempdir()
            .expect("temp dir");
        let mode_s = match mode {
            Mode::Anonymous => "anonymous",
            Mode::Basic => "basic",
            Mode::Token => "token",
        };
        let mut args: Vec<String> = vec![
            "--dir".into(),
            dir.path().display().to_string(),
            "--mode".into(),
            mode_s.into(),
            "--watch-pid".into(),
            std::process::id().to_string(),
        ];
        if let Some(t) = opts.ttl {
            args.extend(["--ttl".into(), t.to_string()]);
        }
        if let Some(l) = opts.token_early_death {
            // distribution's own leeway is 60 s; more makes tokens die early.
            args.extend(["--token-leeway".into(), (60 + l).to_string()]);
        }
        let out = run(
            Command::new("bash")
                .arg(root().join("tests/support/registry.sh"))
                .arg("start")
                .args(&args),
            "tests/support/registry.sh start",
        );
        let kv = parse_kv(&out.stdout);
        let port = kv["PORT"].clone();
        args.extend(["--port".into(), port.clone()]);
        RealRegistry {
            host: kv["HOST"].clone(),
            port,
            pid: kv["PID"].parse().expect("a pid"),
            mode,
            token_log: kv.get("TOKEN_LOG").map(PathBuf::from),
            dir,
            args,
        }
    }

    /// SIGKILL the registry process (not the token server).
    pub fn kill(&self) {
        // SAFETY: sending a signal to a pid we started.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Start it again on the same port and data directory.
    pub fn restart(&self) -> i32 {
        let out = run(
            Command::new("bash")
                .arg(root().join("tests/support/registry.sh"))
                .arg("start")
                .args(&self.args),
            "tests/support/registry.sh start (restart)",
        );
        parse_kv(&out.stdout)["PID"].parse().expect("a pid")
    }

    /// Credentials for this registry (any mode; unused when anonymous).
    pub fn creds(&self, password: &str) -> Arc<dyn CredentialSource> {
        Arc::new(Chain::new().with(ForHost::new(
            &self.host,
            USER.into(),
            Secret::new(password),
            "test",
        )))
    }

    /// Lines of the token server's request log.
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        let Some(p) = &self.token_log else {
            return Vec::new();
        };
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The registry's log (access log lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `--creds` for skopeo, when the registry needs them.
    pub fn skopeo_creds(&self, flag: &str) -> Vec<String> {
        match self.mode {
            Mode::Anonymous => vec![],
            _ => vec![flag.into(), format!("{USER}:{PASSWORD}")],
        }
    }
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/support/registry.sh"))
            .args(["stop", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

/// `tests/support/proxy.sh`, or `GUILDHALL_TEST_PROXY_SH` (to try another
/// proxy configuration in the benchmarks).
fn proxy_script() -> PathBuf {
    std::env::var_os("GUILDHALL_TEST_PROXY_SH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/support/proxy.sh"))
}

/// nginx with a `client_max_body_size` cap in front of a registry.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub host: String,
}

impl Proxy {
    pub fn start(upstream_port: &str, max_body: &str) -> Proxy {
        require("nginx", "nginx-light");
        let dir = tempfile::Builder::new()
            .prefix("guildhall-proxy-")
            .tempdir()
            .expect("temp dir");
        let out = run(
            Command::new("bash")
                .arg(proxy_script())
                .args(["0", upstream_port, max_body])
                .arg(dir.path()),
            "tests/support/proxy.sh",
        );
        let kv = parse_kv(&out.stdout);
        Proxy {
            host: kv["HOST"].clone(),
            dir,
        }
    }

    /// `METHOD URI STATUS len=N auth=…` lines.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(proxy_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// `skopeo ARGS`, which must succeed.
pub fn skopeo(args: &[&str]) -> Output {
    require("skopeo", "skopeo");
    run(
        Command::new("skopeo").args(args),
        &format!("skopeo {args:?}"),
    )
}

/// The cached base layout (tags `bare`, `runner`) from the fixtures script.
pub fn base_layout() -> PathBuf {
    let out = run(
        Command::new("bash").arg(root().join("fixtures/make-base-layout.sh")),
        "fixtures/make-base-layout.sh",
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

/// Client options for tests: fast retries, short timeouts.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_base_delay: Duration::from_millis(100),
        retry_max_delay: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

pub fn client(creds: Arc<dyn CredentialSource>, opts: ClientOptions) -> Client {
    Client::new(creds, opts).expect("a client")
}

pub fn anonymous() -> Arc<dyn CredentialSource> {
    Arc::new(Chain::new())
}

/// Deterministic incompressible bytes.
struct Noise {
    rng: rand::rngs::SmallRng,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        self.rng.fill_bytes(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// An uncompressed tar layer holding one file of `size` noise bytes.
pub fn write_layer(layout: &Layout, size: u64, seed: u64) -> (Digest, u64) {
    let mut w = layout.blob_writer().expect("blob writer");
    {
        let mut b = tar::Builder::new(&mut w);
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let noise = Noise {
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
            left: size,
        };
        b.append_data(&mut h, format!("data-{seed}.bin"), noise)
            .expect("writing a layer");
        b.finish().expect("finishing a layer");
    }
    w.commit(None).expect("committing a layer")
}

/// An image of uncompressed tar layers of the given sizes, tagged `tag` in
/// a new layout under `dir`.
pub fn make_image(dir: &Path, tag: &str, layer_sizes: &[u64], seed: u64) -> (Layout, TaggedImage) {
    make_image_for(dir, tag, layer_sizes, seed, "amd64")
}

/// [`make_image`] for another architecture.
pub fn make_image_for(
    dir: &Path,
    tag: &str,
    layer_sizes: &[u64],
    seed: u64,
    arch: &str,
) -> (Layout, TaggedImage) {
    let layout = Layout::create_or_open(dir).expect("a layout");
    let layers: Vec<(String, Digest, u64)> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (d, n) = write_layer(&layout, *s, seed * 1000 + i as u64);
            (media::OCI_LAYER_TAR.to_owned(), d, n)
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|(_, d, _)| d.to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/true"], "Labels": {"org.opencontainers.image.source": "https://git.guildhouse.dev/tking/guildhall"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let (cd, cs) = layout
        .write_blob(&serde_json::to_vec(&config).expect("json"))
        .expect("config");
    let manifest =
        guildhall_image::image::config::build_manifest((&cd, cs), &layers, &BTreeMap::new());
    let (md, _) = layout.write_blob(&manifest).expect("manifest");
    layout
        .set_tags(media::OCI_MANIFEST, &md, &[tag.to_owned()])
        .expect("tagging");
    let img = layout.resolve(Some(tag)).expect("resolving");
    (layout, img)
}

/// The digest of the manifest under `tag` in a layout skopeo wrote.
pub fn layout_digest(dir: &Path, tag: &str) -> Digest {
    Layout::open(dir)
        .expect("a layout")
        .resolve(Some(tag))
        .expect("the tag")
        .digest
}
