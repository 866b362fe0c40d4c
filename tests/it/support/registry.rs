//! Real registries and proxies for the tests: CNCF distribution
//! (`docker-registry`) with anonymous, Basic or Bearer-token auth, and nginx
//! capping request bodies in front of one, through `tests/support/*.sh`;
//! stopped on drop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use guildhall_image::credentials::{Chain, CredentialSource, ForHost, Secret};

use super::{PASSWORD, USER, parse_kv, require, root, run_script, skopeo};

/// How the real registry authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No auth at all.
    Anonymous,
    /// `htpasswd` Basic auth.
    Basic,
    /// Bearer tokens from `tests/support/token_server.py`.
    Token,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Anonymous => "anonymous",
            Mode::Basic => "basic",
            Mode::Token => "token",
        }
    }
}

/// Options for [`Registry::start_with`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// Token lifetime in seconds (token mode).
    pub ttl: Option<u64>,
    /// How much earlier than `expires_in` the registry rejects a token.
    pub token_early_death: Option<u64>,
    /// Tokens for pulls without credentials (token mode).
    pub anonymous_pull: bool,
    /// A random user and password (for tests that look for leaked secrets),
    /// instead of [`USER`]/[`PASSWORD`].
    pub random_credentials: bool,
}

/// A real `docker-registry` (CNCF distribution 2.8) on loopback.
pub struct Registry {
    /// Its directory (config, data, logs, `token.log`).
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The port.
    pub port: String,
    /// The registry process.
    pub pid: i32,
    /// How it authenticates.
    pub mode: Mode,
    /// What `registry.sh` printed.
    pub info: HashMap<String, String>,
    /// The user it accepts.
    pub user: String,
    /// The password it accepts.
    pub password: String,
    args: Vec<String>,
}

impl Registry {
    /// Start one with the default credentials.
    pub fn start(mode: Mode) -> Registry {
        Registry::start_with(mode, RegistryOpts::default())
    }

    /// Start one.
    pub fn start_with(mode: Mode, opts: RegistryOpts) -> Registry {
        require("docker-registry", "docker-registry");
        if mode == Mode::Basic {
            require("htpasswd", "apache2-utils");
        }
        let dir = tempfile::Builder::new()
            .prefix("guildhall-reg-")
            .tempdir()
            .expect("temp dir");
        let (user, password) = if opts.random_credentials {
            (
                format!("user{}", rand::random::<u32>()),
                format!("pw-{:016x}-secret", rand::random::<u64>()),
            )
        } else {
            (USER.to_owned(), PASSWORD.to_owned())
        };
        let mut args: Vec<String> = vec![
            "--dir".into(),
            dir.path().display().to_string(),
            "--mode".into(),
            mode.as_str().into(),
            "--watch-pid".into(),
            std::process::id().to_string(),
            "--user".into(),
            user.clone(),
            "--password".into(),
            password.clone(),
        ];
        if let Some(t) = opts.ttl {
            args.extend(["--ttl".into(), t.to_string()]);
        }
        if let Some(l) = opts.token_early_death {
            // distribution's own leeway is 60 s; more makes tokens die early.
            args.extend(["--token-leeway".into(), (60 + l).to_string()]);
        }
        if opts.anonymous_pull {
            args.push("--anonymous-pull".into());
        }
        let mut start = vec!["start"];
        start.extend(args.iter().map(String::as_str));
        let info = parse_kv(&run_script("tests/support/registry.sh", &start, &[]));
        let port = info["PORT"].clone();
        args.extend(["--port".into(), port.clone()]);
        Registry {
            host: info["HOST"].clone(),
            port,
            pid: info["PID"].parse().expect("a pid"),
            mode,
            info,
            user,
            password,
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
        let mut start = vec!["start"];
        start.extend(self.args.iter().map(String::as_str));
        parse_kv(&run_script("tests/support/registry.sh", &start, &[]))["PID"]
            .parse()
            .expect("a pid")
    }

    /// Credentials for this registry with `password` (any mode).
    pub fn creds(&self, password: &str) -> Arc<dyn CredentialSource> {
        Arc::new(Chain::new().with(ForHost::new(
            &self.host,
            self.user.clone(),
            Secret::new(password),
            "test",
        )))
    }

    /// Lines of the token server's request log.
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        let p = self
            .info
            .get("TOKEN_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("token.log"));
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

    /// `FLAG USER:PASS` for skopeo, when the registry needs credentials.
    pub fn skopeo_creds(&self, flag: &str) -> Vec<String> {
        match self.mode {
            Mode::Anonymous => vec![],
            _ => vec![flag.into(), format!("{}:{}", self.user, self.password)],
        }
    }

    /// Copy an image (`oci:DIR:TAG`) into this registry with skopeo.
    pub fn seed(&self, src: &str, repo_tag: &str) {
        let dest = format!("docker://{}/{repo_tag}", self.host);
        let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        let creds = self.skopeo_creds("--dest-creds");
        args.extend(creds.iter().map(String::as_str));
        args.extend([src, dest.as_str()]);
        skopeo(&args);
    }

    /// The digest the registry has for `repo:tag` (asked with its credentials).
    pub fn manifest_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.host);
        let accept = "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,\
                      application/vnd.docker.distribution.manifest.v2+json";
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-I", "-H", &format!("Accept: {accept}")]);
        if self.mode == Mode::Token {
            let token_url = format!(
                "{}?service=test_registry&scope=repository:{repo}:pull",
                self.info["TOKEN_URL"]
            );
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-u",
                    &format!("{}:{}", self.user, self.password),
                    &token_url,
                ])
                .output()
                .expect("curl");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            cmd.args([
                "-H",
                &format!("Authorization: Bearer {}", v["token"].as_str()?),
            ]);
        } else if self.mode == Mode::Basic {
            cmd.args(["-u", &format!("{}:{}", self.user, self.password)]);
        }
        let out = cmd.arg(&url).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_owned())
        })
    }
}

impl Drop for Registry {
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
    /// Its directory (config, `access.log`).
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

impl Proxy {
    /// Start one in front of `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: &str, max_body: &str) -> Proxy {
        require("nginx", "nginx-light");
        let dir = tempfile::Builder::new()
            .prefix("guildhall-proxy-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new("bash")
            .arg(proxy_script())
            .args(["0", upstream_port, max_body])
            .arg(dir.path())
            .output()
            .expect("proxy.sh");
        assert!(
            out.status.success(),
            "proxy.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kv = parse_kv(&String::from_utf8_lossy(&out.stdout));
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
