//! The one harness of the integration tests: the repository's scripts
//! (`fixtures/`, `tests/support/*.sh`) run for real components, the binary
//! under test with a private cache, and small helpers every test module
//! shares. Doubles, for what no real server does on cue, are in their own
//! files and named as such.

pub mod debian;
pub mod faulty_registry;
pub mod forgejo_registry;
pub mod http;
pub mod images;
pub mod keyring;
pub mod mirror_double;
pub mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub use images::*;
pub use registry::*;

/// The default user of the real registries (`tests/support/registry.sh`).
pub const USER: &str = "testuser";
/// Its password.
pub const PASSWORD: &str = "testpass";
/// 1 MiB.
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

/// `KEY=VALUE` lines (what every `tests/support` script prints).
pub fn parse_kv(s: &str) -> HashMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Run a repository script with `bash`, insisting on success; its stdout.
pub fn run_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg(root().join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The last line a script printed, as a path.
fn last_path(out: &str) -> PathBuf {
    PathBuf::from(out.lines().last().expect("a path").trim())
}

/// A fixture release work dir (holds `_build/prod/rel/guildhall` and the tarball).
pub fn fixture_release(args: &[&str]) -> PathBuf {
    last_path(&run_script("fixtures/build-release.sh", args, &[]))
}

/// The release directory of a fixture build.
pub fn release_dir(args: &[&str]) -> PathBuf {
    fixture_release(args).join("_build/prod/rel/guildhall")
}

/// The cached base OCI layout (tags `bare`, `runner`).
pub fn base_layout() -> PathBuf {
    last_path(&run_script("fixtures/make-base-layout.sh", &[], &[]))
}

/// The test cache (`GUILDHALL_IMAGE_TEST_CACHE`, else `~/.cache/guildhall-image-tests`).
pub fn test_cache() -> PathBuf {
    std::env::var("GUILDHALL_IMAGE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/guildhall-image-tests")
        })
}

/// A docker config dir whose `auths` holds `user:pass` for `host`.
pub fn docker_config(host: &str, user: &str, pass: &str) -> tempfile::TempDir {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .expect("write");
    dir
}

/// The binary under test.
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_guildhall-image"))
}

/// The binary under test, with a private cache and no stray credentials.
pub fn bin(cache: &Path) -> Command {
    let mut c = Command::new(bin_path());
    c.env("GUILDHALL_IMAGE_CACHE", cache)
        .env("DOCKER_CONFIG", cache.join("no-docker-config"))
        .env_remove("GUILDHALL_IMAGE_USERNAME")
        .env_remove("GUILDHALL_IMAGE_PASSWORD")
        .env_remove("SOURCE_DATE_EPOCH")
        .env("CI", "true");
    c
}

/// Run and return the output, whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running the binary")
}

/// Run and insist on success; stdout as text.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The parsed JSON of a command's stdout.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&ok(cmd)).expect("JSON on stdout")
}

/// The layout's tagged images, checked with fsck (digests verified).
pub fn fsck_ok(layout: &Path) {
    let l = guildhall_image::layout::Layout::open(layout).expect("the layout opens");
    let report = l.fsck(true).expect("fsck runs");
    assert!(
        report.problems.is_empty(),
        "layout {} has problems: {:?}",
        layout.display(),
        report.problems
    );
}

/// A container started from a layout with runc; stopped on drop.
pub struct Running {
    /// Container name.
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Running {
    /// Start `LAYOUT:TAG` listening on `port` (waits for /health = 200).
    pub fn start(layout: &Path, tag: &str, name: &str, port: u16) -> Running {
        Running::start_with(layout, tag, name, port, false)
    }

    /// Start it as a Pod under the `restricted` Pod Security profile runs
    /// it: the image's own (numeric, non-root) user, a read-only root file
    /// system with a writable /tmp, no capabilities, no new privileges.
    pub fn start_restricted(layout: &Path, tag: &str, name: &str, port: u16) -> Running {
        Running::start_with(layout, tag, name, port, true)
    }

    fn start_with(layout: &Path, tag: &str, name: &str, port: u16, restricted: bool) -> Running {
        let info = parse_kv(&run_script(
            "tests/support/run-image.sh",
            &[
                layout.to_str().expect("utf-8"),
                tag,
                name,
                &port.to_string(),
            ],
            &[("RUN_IMAGE_RESTRICTED", if restricted { "1" } else { "0" })],
        ));
        Running {
            name: name.to_owned(),
            url: info
                .get("URL")
                .cloned()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/support/stop-image.sh"))
            .arg(&self.name)
            .output();
    }
}

/// GET a URL with curl: (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `skopeo ARGS`, which must succeed.
pub fn skopeo(args: &[&str]) -> Output {
    require("skopeo", "skopeo");
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running skopeo: {e}"));
    assert!(
        out.status.success(),
        "skopeo {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
