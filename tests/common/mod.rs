//! Shared helpers of the integration tests: the real components (registry,
//! fixture release, base layouts, runc) through `tests/support` and
//! `fixtures` scripts, and the binary under test.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_script(script: &str, args: &[&str]) -> String {
    run_script_env(script, args, &[])
}

fn run_script_env(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
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

/// A fixture release work dir (holds `_build/prod/rel/guildhall` and the tarball).
pub fn fixture_release(args: &[&str]) -> PathBuf {
    let out = run_script("fixtures/build-release.sh", args);
    PathBuf::from(out.lines().last().expect("a path").trim())
}

/// The release directory of a fixture build.
pub fn release_dir(args: &[&str]) -> PathBuf {
    fixture_release(args).join("_build/prod/rel/guildhall")
}

/// The cached base OCI layout (tags `bare`, `runner`).
pub fn base_layout() -> PathBuf {
    let out = run_script("fixtures/make-base-layout.sh", &[]);
    PathBuf::from(out.lines().last().expect("a path").trim())
}

/// `KEY=VALUE` lines.
fn parse_kv(s: &str) -> HashMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A real `docker-registry` process on loopback, stopped on drop.
pub struct Registry {
    /// Its data/config dir.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// What registry.sh printed.
    pub info: HashMap<String, String>,
}

impl Registry {
    /// Start one: `mode` is anonymous, basic or token; extra args are passed on.
    pub fn start(mode: &str, extra: &[&str]) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id().to_string();
        let d = dir.path().to_str().expect("utf-8").to_owned();
        let mut args = vec!["start", "--dir", &d, "--mode", mode, "--watch-pid", &pid];
        args.extend_from_slice(extra);
        let info = parse_kv(&run_script("tests/support/registry.sh", &args));
        let host = info.get("HOST").cloned().expect("HOST=");
        Registry { dir, host, info }
    }

    /// Copy an OCI layout image into this registry with skopeo.
    pub fn seed(&self, src: &str, repo_tag: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let d = self.dir.path().to_str().unwrap_or_default().to_owned();
        let _ = Command::new("bash")
            .arg(root().join("tests/support/registry.sh"))
            .args(["stop", "--dir", &d])
            .output();
    }
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

/// The binary under test, with a private cache and no stray credentials.
pub fn bin(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_guildhall-image"));
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
        let info = parse_kv(&run_script_env(
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

/// The parsed JSON of a command's stdout.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    serde_json::from_str(&ok(cmd)).expect("JSON on stdout")
}
