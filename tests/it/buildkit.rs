//! The BuildKit engine against a real Docker engine (Debian's docker.io 20.10,
//! started by `tests/support/dockerd.sh` on its own socket), and the archive
//! import on archives made here. buildx and buildctl are not packaged for
//! Debian 12: their command lines are unit-tested in `src/build/buildkit.rs`.
//!
//! These tests need root, `docker.io`, `debootstrap` (for the builder image,
//! cached), `umoci`, `skopeo`, `runc`, `curl`, and fail (not skip) without them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clap::Parser;
use serde_json::{Value, json};

use guildhall_image::archive::{self, ImportError};
use guildhall_image::cli::{Cli, Command as Sub};
use guildhall_image::engine::buildkit::{self, Builder, BuildkitError, EngineEnv, SystemProbe};
use guildhall_image::image::Digest;
use guildhall_image::layout::Layout;
use guildhall_image::progress::Progress;
use guildhall_image::settings::{ConfigFile, Settings};

use crate::support::{Mode, Registry, Running, bin, http_get, json, root};

const DOCKER: &str = "/usr/bin/docker";

/// The Docker engine of `tests/support/dockerd.sh` (started when it does not
/// answer) and the builder/runner images of `fixtures/make-builder-image.sh`;
/// the process environment points the tool at them (once, for every test).
struct Engine {
    builder_image: String,
    runner_image: String,
}

/// Tests that build hold this: builds share two cores anyway, and a test can
/// then check that no temporary tag is left behind.
static DOCKER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock_docker() -> std::sync::MutexGuard<'static, ()> {
    DOCKER_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn no_temporary_tags() {
    let tags = docker_tags();
    assert!(
        !tags.contains("guildhall-image-tmp:"),
        "temporary tag left behind: {tags}"
    );
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        assert!(
            Path::new(DOCKER).is_file() && Path::new("/usr/sbin/dockerd").is_file(),
            "Debian's docker.io is not installed ({DOCKER}, /usr/sbin/dockerd): `apt-get install docker.io` \
             (.ci/run installs it). The BuildKit tests need a real Docker engine."
        );
        let kv = |out: &str| -> BTreeMap<String, String> {
            out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
        };
        let docker = kv(&script("tests/support/dockerd.sh", &["start"]));
        // SAFETY: set once, before any test of this binary starts a process or reads these.
        unsafe {
            std::env::set_var("DOCKER_HOST", &docker["DOCKER_HOST"]);
            std::env::set_var("DOCKER_CONFIG", &docker["DOCKER_CONFIG"]);
            std::env::set_var("GUILDHALL_IMAGE_DOCKER", DOCKER);
            std::env::remove_var("BUILDKIT_HOST");
            std::env::remove_var("SOURCE_DATE_EPOCH");
        }
        let images = kv(&script("fixtures/make-builder-image.sh", &[]));
        Engine { builder_image: images["BUILDER_IMAGE"].clone(), runner_image: images["RUNNER_IMAGE"].clone() }
    })
}

fn script(path: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(root().join(path))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        out.status.success(),
        "{path} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A copy of the fixture project (sources only), as a checkout would be.
fn fixture_project(dir: &Path) -> PathBuf {
    let project = dir.join("guildhall");
    let src = root().join("fixtures/guildhall_fixture");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&project)
        .status()
        .expect("cp");
    assert!(status.success());
    let _ = fs::remove_dir_all(project.join("_build"));
    let _ = fs::remove_dir_all(project.join("deps"));
    project
}

/// `guildhall-image build …` parsed and validated as the binary does.
fn build(
    args: &[&str],
    layout: &Layout,
    tags: &[String],
) -> guildhall_image::error::Result<guildhall_image::engine::BuildOutcome> {
    let mut argv = vec!["guildhall-image", "build", "--engine", "buildkit"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).expect("valid flags");
    let Sub::Build(a) = &cli.command else {
        unreachable!()
    };
    let s = Settings::from_file(ConfigFile::default())
        .build(a)
        .expect("valid settings");
    buildkit::build_blocking(&s, layout, tags, &Progress::hidden())
}

fn fixture_build_args(e: &Engine) -> Vec<String> {
    vec![
        "--build-arg".into(),
        "SKIP_HEX=1".into(),
        "--build-arg".into(),
        "SKIP_APT=1".into(),
        "--build-arg".into(),
        format!("BUILDER_IMAGE={}", e.builder_image),
        "--build-arg".into(),
        format!("RUNNER_IMAGE={}", e.runner_image),
        "--network".into(),
        "host".into(),
    ]
}

fn fsck_clean(layout: &Layout) {
    let report = Layout::open(layout.root())
        .expect("a layout")
        .fsck(true)
        .expect("fsck");
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn docker_tags() -> String {
    run_ok(DOCKER, &["images", "--format", "{{.Repository}}:{{.Tag}}"])
}

#[test]
fn the_fixture_built_with_the_shipped_dockerfile_lands_in_the_layout_tagged_and_answers_health() {
    let e = engine();
    let _docker = lock_docker();
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = fixture_project(tmp.path());
    let layout = Layout::create_or_open(tmp.path().join("layout")).expect("layout");
    let mut args: Vec<String> = vec!["--project".into(), project.display().to_string()];
    args.extend(fixture_build_args(e));
    args.extend([
        "--source".into(),
        "https://git.guildhouse.dev/tking/guildhall".into(),
        "--revision".into(),
        "abc123".into(),
        "--label".into(),
        "org.opencontainers.image.vendor=Guildhouse".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let outcome = build(&args, &layout, &[]).unwrap_or_else(|e| panic!("build failed: {e:#}"));
    // No --tag: the release's version (the fixture's mix.exs does not state it literally).
    assert_eq!(outcome.tags, vec!["0.1.0"]);
    assert_eq!(outcome.release, "guildhall 0.1.0");
    assert_eq!(
        layout.resolve(Some("0.1.0")).expect("tagged").digest,
        outcome.digest
    );
    fsck_clean(&layout);
    no_temporary_tags();

    let oci = format!("oci:{}:0.1.0", layout.root().display());
    let inspect: Value = serde_json::from_str(&run_ok("skopeo", &["inspect", &oci])).expect("json");
    let labels = &inspect["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], json!("guildhall"));
    assert_eq!(labels["org.opencontainers.image.version"], json!("0.1.0"));
    assert_eq!(
        labels["org.opencontainers.image.source"],
        json!("https://git.guildhouse.dev/tking/guildhall")
    );
    assert_eq!(labels["org.opencontainers.image.revision"], json!("abc123"));
    assert_eq!(
        labels["org.opencontainers.image.vendor"],
        json!("Guildhouse")
    );
    assert_eq!(
        labels["org.opencontainers.image.created"],
        json!("1970-01-01T00:00:00Z")
    );
    let config: Value =
        serde_json::from_str(&run_ok("skopeo", &["inspect", "--config", &oci])).expect("json");
    assert_eq!(config["config"]["Cmd"], json!(["/app/bin/server"]));
    assert_eq!(config["config"]["User"], json!("65534:65534"));
    assert_eq!(config["config"]["WorkingDir"], json!("/app"));
    assert!(
        config["config"]["Env"]
            .as_array()
            .expect("env")
            .contains(&json!("LANG=C.UTF-8"))
    );
    let tags = run_ok(
        "umoci",
        &["ls", "--layout", &layout.root().display().to_string()],
    );
    assert!(tags.lines().any(|t| t == "0.1.0"), "umoci ls: {tags}");

    // As a restricted Pod runs it: no runAsUser, read-only root, /tmp only.
    let port = free_port();
    let running = Running::start_restricted(
        layout.root(),
        "0.1.0",
        &format!("bk-health-{}", std::process::id()),
        port,
    );
    let (status, body) = http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "{body}");

    // Unchanged sources: BuildKit's cache answers and every layer is already in the layout.
    let again = build(&args, &layout, &["again".into()])
        .unwrap_or_else(|e| panic!("second build failed: {e:#}"));
    assert!(again.layers.iter().all(|l| l.reused), "{:?}", again.layers);
    fsck_clean(&layout);
}

#[test]
fn a_build_secret_reaches_its_step_but_not_the_image() {
    let e = engine();
    let _docker = lock_docker();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).expect("mkdir");
    let df = tmp.path().join("Dockerfile.secret");
    fs::write(
        &df,
        format!(
            "FROM {}\nRUN --mount=type=secret,id=hex_key test \"$(sha256sum < /run/secrets/hex_key | cut -c1-64)\" = {} && echo used > /proof\n\
             LABEL org.opencontainers.image.version=9.9.9\n",
            e.runner_image,
            Digest::of(b"s3cr3t-hex-k3y").hex()
        ),
    )
    .expect("write");
    let layout = Layout::create_or_open(tmp.path().join("layout")).expect("layout");
    // SAFETY: only this test reads this variable (the engine client inherits it).
    unsafe { std::env::set_var("GUILDHALL_TEST_HEX_KEY", "s3cr3t-hex-k3y") };
    let args = [
        "--project",
        ctx.to_str().unwrap(),
        "--dockerfile",
        df.to_str().unwrap(),
        "--secret",
        "id=hex_key,env=GUILDHALL_TEST_HEX_KEY",
        "--network",
        "host",
        "--builder",
        "docker",
    ];
    let outcome = build(&args, &layout, &[]).unwrap_or_else(|e| panic!("build failed: {e:#}"));
    assert_eq!(outcome.tags, vec!["9.9.9"], "tagged with its version label");
    // No blob of the image holds the secret, compressed or not.
    for l in &outcome.layers {
        let mut text = Vec::new();
        let mut r = flate2::read::MultiGzDecoder::new(layout.open_blob(&l.digest).expect("blob"));
        std::io::Read::read_to_end(&mut r, &mut text).expect("gunzip");
        assert!(
            !String::from_utf8_lossy(&text).contains("s3cr3t-hex-k3y"),
            "secret in layer {}",
            l.digest
        );
    }
    let config = layout.read_blob(&outcome.config).expect("config");
    assert!(!String::from_utf8_lossy(&config).contains("s3cr3t"));
}

#[test]
fn a_failing_step_is_named_in_the_error_with_the_engines_last_lines() {
    let e = engine();
    let _docker = lock_docker();
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = fixture_project(tmp.path());
    fs::write(
        project.join("lib/broken.ex"),
        "defmodule Broken do\n  def x, do: undefined_call()\nend\n",
    )
    .expect("write");
    let layout = Layout::create_or_open(tmp.path().join("layout")).expect("layout");
    let mut args: Vec<String> = vec!["--project".into(), project.display().to_string()];
    args.extend(fixture_build_args(e));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err =
        build(&args, &layout, &["broken".into()]).expect_err("a compile error fails the build");
    let msg = format!("{err:#}");
    assert!(msg.contains("docker build failed at step"), "{msg}");
    assert!(msg.contains("mix compile"), "{msg}");
    assert!(
        msg.contains("undefined_call"),
        "the compiler's complaint is in the tail: {msg}"
    );
    assert!(layout.images().expect("index").is_empty(), "nothing tagged");
    no_temporary_tags();
}

#[test]
fn a_missing_engine_says_what_was_looked_for_and_how_to_get_one() {
    let env = EngineEnv {
        docker: Some(DOCKER.into()),
        buildctl: None,
        buildkit_host: None,
        docker_host: Some("unix:///nonexistent/guildhall-image-test.sock".into()),
    };
    let err = buildkit::detect(None, &env, &SystemProbe).expect_err("no engine");
    let msg = err.to_string();
    for want in [
        "no BuildKit engine found",
        "BUILDKIT_HOST",
        "docker buildx",
        "/nonexistent/guildhall-image-test.sock",
        "apt-get install docker.io",
    ] {
        assert!(msg.contains(want), "`{want}` missing: {msg}");
    }
    let no_client = EngineEnv {
        docker: None,
        ..env
    };
    let err =
        buildkit::detect(Some(Builder::Docker), &no_client, &SystemProbe).expect_err("no client");
    assert!(matches!(err, BuildkitError::NoEngine { .. }));
    assert!(err.to_string().contains("GUILDHALL_IMAGE_DOCKER"), "{err}");
}

// ----------------------------------------------------- archives made here ---

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn append(b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).expect("append");
}

/// A docker-archive as `docker save` (20.10) writes it; `corrupt` flips a
/// byte inside layer 2's file content.
fn docker_archive(path: &Path, corrupt: bool) {
    let l1 = layer_tar(&[("etc/hello.txt", b"hello from layer one\n")]);
    let mut l2 = layer_tar(&[("app/bin/server", b"#!/bin/sh\necho layer two\n")]);
    let diff_ids = [Digest::of(&l1), Digest::of(&l2)];
    if corrupt {
        let at = l2.windows(5).position(|w| w == b"layer").expect("content");
        l2[at] ^= 0x20;
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/app/bin/server"], "Labels": {"org.opencontainers.image.version": "1.0.0"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_ids[0].to_string(), diff_ids[1].to_string()]},
        "history": [{"created_by": "ADD one"}, {"created_by": "COPY two"}]
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = json!([{"Config": config_name, "RepoTags": ["t:1"], "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"]}]);
    let mut b = tar::Builder::new(fs::File::create(path).expect("create"));
    append(&mut b, "aaaa/layer.tar", &l1);
    append(&mut b, "bbbb/layer.tar", &l2);
    append(&mut b, &config_name, &config);
    append(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.finish().expect("finish");
}

/// The layout's files as an OCI archive (what `--output type=oci` writes).
fn oci_archive_of(layout: &Path, path: &Path, corrupt_blob: Option<&Digest>) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create"));
    append(
        &mut b,
        "oci-layout",
        &fs::read(layout.join("oci-layout")).unwrap(),
    );
    append(
        &mut b,
        "index.json",
        &fs::read(layout.join("index.json")).unwrap(),
    );
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let mut data = fs::read(entry.path()).unwrap();
        if corrupt_blob.is_some_and(|d| d.hex() == entry.file_name().to_str().unwrap()) {
            let last = data.len() - 1;
            data[last] ^= 0xff;
        }
        append(
            &mut b,
            &format!("blobs/sha256/{}", entry.file_name().to_str().unwrap()),
            &data,
        );
    }
    b.finish().expect("finish");
}

#[test]
fn a_docker_archive_with_a_corrupted_layer_is_refused_naming_the_layer_and_the_layout_stays_valid()
{
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = Layout::create_or_open(tmp.path().join("layout")).expect("layout");
    let good = tmp.path().join("good.tar");
    docker_archive(&good, false);
    let imported = archive::import_archive(&layout, &good, &["v1".into()], &Progress::hidden())
        .expect("a good archive imports");
    assert_eq!(imported.format, archive::ArchiveFormat::DockerArchive);
    assert_eq!(imported.layers.len(), 2);
    assert_eq!(imported.layers[1].description, "COPY two");
    fsck_clean(&layout);

    let bad = tmp.path().join("bad.tar");
    docker_archive(&bad, true);
    let fresh = Layout::create_or_open(tmp.path().join("fresh")).expect("layout");
    let err = archive::import_archive(&fresh, &bad, &["v2".into()], &Progress::hidden())
        .expect_err("corrupt layer");
    let msg = err.to_string();
    assert!(matches!(err, ImportError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains("layer 2 of 2") && msg.contains("bbbb/layer.tar"),
        "{msg}"
    );
    assert!(fresh.images().unwrap().is_empty(), "nothing tagged");
    fsck_clean(&fresh);
    // And into the layout that already holds v1: v1 untouched, no v2, no temp files.
    let err = archive::import_archive(&layout, &bad, &["v2".into()], &Progress::hidden())
        .expect_err("corrupt layer");
    assert!(err.to_string().contains("layer 2 of 2"));
    assert_eq!(layout.resolve(Some("v1")).unwrap().digest, imported.digest);
    assert!(layout.resolve(Some("v2")).is_err());
    fsck_clean(&layout);
    let leftovers: Vec<_> = fs::read_dir(layout.root().join(".guildhall-tmp"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn an_oci_archive_imports_byte_for_byte_and_a_corrupted_blob_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = Layout::create_or_open(tmp.path().join("src")).expect("layout");
    let docker_tar = tmp.path().join("d.tar");
    docker_archive(&docker_tar, false);
    let first = archive::import_archive(&src, &docker_tar, &["v1".into()], &Progress::hidden())
        .expect("import");

    let oci = tmp.path().join("oci.tar");
    oci_archive_of(src.root(), &oci, None);
    let dst = Layout::create_or_open(tmp.path().join("dst")).expect("layout");
    let again = archive::import_archive(&dst, &oci, &["v1".into()], &Progress::hidden())
        .expect("oci import");
    assert_eq!(again.format, archive::ArchiveFormat::OciArchive);
    assert_eq!(
        again.digest, first.digest,
        "the manifest is kept byte for byte"
    );
    fsck_clean(&dst);

    let bad = tmp.path().join("bad.tar");
    oci_archive_of(src.root(), &bad, Some(&first.layers[0].digest));
    let dst2 = Layout::create_or_open(tmp.path().join("dst2")).expect("layout");
    let err = archive::import_archive(&dst2, &bad, &["v1".into()], &Progress::hidden())
        .expect_err("corrupt blob");
    let msg = err.to_string();
    assert!(
        msg.contains("layer 1 of 2") && msg.contains(first.layers[0].digest.hex()),
        "{msg}"
    );
    assert!(dst2.images().unwrap().is_empty());
    fsck_clean(&dst2);
    let _ = std::io::stderr().flush();
}

/// The figures of the closing note: a cold build (`--no-cache`, fresh layout),
/// a warm one (one module changed, dependency steps cached, layout holding the
/// previous image) and, from the engine's progress lines on stderr, what
/// `docker save` and the import add. Run:
/// `cargo test --release --test buildkit -- --ignored --nocapture build_times 2>&1 | grep -E '^(measure|docker save|imported)'`
#[test]
#[ignore = "a measurement, not a check: run it by name"]
fn build_times_cold_and_warm_with_the_import_share() {
    let e = engine();
    let _docker = lock_docker();
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = fixture_project(tmp.path());
    let layout = Layout::create_or_open(tmp.path().join("layout")).expect("layout");
    let mut base: Vec<String> = vec!["--project".into(), project.display().to_string()];
    base.extend(fixture_build_args(e));
    let progress = Progress::new(guildhall_image::progress::Mode::Lines);
    let run = |extra: &[&str], tag: &str| {
        let mut argv: Vec<&str> = vec!["guildhall-image", "build", "--engine", "buildkit"];
        argv.extend(base.iter().map(String::as_str));
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(&argv).expect("flags");
        let Sub::Build(a) = &cli.command else {
            unreachable!()
        };
        let s = Settings::from_file(ConfigFile::default())
            .build(a)
            .expect("settings");
        let t = std::time::Instant::now();
        buildkit::build_blocking(&s, &layout, &[tag.to_owned()], &progress).expect("build");
        t.elapsed().as_secs_f64()
    };
    let cold = run(&["--no-cache"], "cold");
    let greeting = project.join("lib/guildhall/greeting.ex");
    let text = fs::read_to_string(&greeting).expect("greeting.ex");
    // Content no earlier run built, so BuildKit's cache cannot answer for it.
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    fs::write(
        &greeting,
        text.replacen("@greeting \"", &format!("@greeting \"warm {unique} "), 1),
    )
    .expect("write");
    let warm = run(&[], "warm");
    let unchanged = run(&[], "unchanged");
    eprintln!("measure: cold (--no-cache, empty layout) {cold:.1}s");
    eprintln!("measure: warm (one module changed, deps cached) {warm:.1}s");
    eprintln!("measure: unchanged sources {unchanged:.1}s");
}

/// Incompressible-ish bytes from a xorshift generator: cheap, deterministic.
struct Noise(u64);

impl std::io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// A docker-archive with one layer holding `mib` MiB of noise, written
/// streaming (the test itself holds no layer in memory either).
fn big_docker_archive(dir: &Path, mib: u64) -> PathBuf {
    use std::io::Read as _;
    let layer = dir.join(format!("layer-{mib}.tar"));
    let mut b = tar::Builder::new(fs::File::create(&layer).expect("create"));
    let mut h = tar::Header::new_gnu();
    h.set_size(mib << 20);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(
        &mut h,
        "big.bin",
        Noise(0x9e37_79b9_7f4a_7c15).take(mib << 20),
    )
    .expect("append");
    b.finish().expect("finish");
    drop(b);
    let diff_id = guildhall_image::layout::hash_file(&layer).expect("hash");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let archive = dir.join(format!("big-{mib}.tar"));
    let mut b = tar::Builder::new(fs::File::create(&archive).expect("create"));
    b.append_path_with_name(&layer, "cccc/layer.tar")
        .expect("append");
    append(&mut b, &config_name, &config);
    let manifest = json!([{"Config": config_name, "RepoTags": [], "Layers": ["cccc/layer.tar"]}]);
    append(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.finish().expect("finish");
    fs::remove_file(&layer).expect("rm");
    archive
}

/// Peak resident memory (KiB) of this test binary re-run as a child that
/// imports `archive` (see `import_child`).
// The child is reaped by `wait4`, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn import_peak_kib(archive: &Path, layout: &Path) -> i64 {
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "buildkit::import_child",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env("GUILDHALL_IMAGE_IMPORT_CHILD", archive)
        .env("GUILDHALL_IMAGE_IMPORT_LAYOUT", layout)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child import failed"
    );
    usage.ru_maxrss
}

#[test]
#[ignore = "the child of importing_a_layer_eight_times_bigger_takes_no_more_memory"]
fn import_child() {
    let (Ok(archive), Ok(layout)) = (
        std::env::var("GUILDHALL_IMAGE_IMPORT_CHILD"),
        std::env::var("GUILDHALL_IMAGE_IMPORT_LAYOUT"),
    ) else {
        return;
    };
    let layout = Layout::create_or_open(layout).expect("layout");
    archive::import_archive(
        &layout,
        Path::new(&archive),
        &["t".into()],
        &Progress::hidden(),
    )
    .expect("import");
}

#[test]
fn importing_a_layer_eight_times_bigger_takes_no_more_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = big_docker_archive(tmp.path(), 16);
    let big = big_docker_archive(tmp.path(), 128);
    let small_kib = import_peak_kib(&small, &tmp.path().join("l-small"));
    let big_kib = import_peak_kib(&big, &tmp.path().join("l-big"));
    eprintln!("peak RSS: 16 MiB layer {small_kib} KiB, 128 MiB layer {big_kib} KiB");
    // Buffering the layer would add 112 MiB; streaming adds nothing but noise.
    assert!(
        big_kib < small_kib + 16 * 1024,
        "peak RSS grew from {small_kib} KiB to {big_kib} KiB"
    );
    let l = Layout::open(tmp.path().join("l-big")).expect("layout");
    let img = l
        .resolve(Some("t"))
        .expect("the child imported and tagged the image");
    assert!(l.blob_size(&img.digest).is_ok());
    fsck_clean(&l);
}

#[test]
fn build_engine_buildkit_push_through_the_binary_publishes_an_image_that_runs() {
    let e = engine();
    let _docker = lock_docker();
    let reg = Registry::start(Mode::Anonymous);
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = fixture_project(tmp.path());
    let target = format!("{}/guildhall/bk", reg.host);
    let mut cmd = bin(tmp.path());
    // The engine's own client config (its `auths` keep the Docker CLI off
    // credential helpers); the tool reads it too, harmlessly.
    cmd.env(
        "DOCKER_CONFIG",
        std::env::var_os("DOCKER_CONFIG").expect("set by engine()"),
    );
    cmd.args(["--json", "build", "--engine", "buildkit", "--project"])
        .arg(&project);
    cmd.args(fixture_build_args(e));
    cmd.args(["--tag", "bk", "--layout"])
        .arg(tmp.path().join("layout"));
    cmd.args(["--push", "--to", &target]);
    let report = json(&mut cmd);
    let digest = report["pushed"]["digest"]
        .as_str()
        .expect("pushed digest")
        .to_owned();
    assert_eq!(
        report["digest"].as_str(),
        Some(digest.as_str()),
        "the layout's image is what was pushed"
    );

    let back = tmp.path().join("back");
    run_ok(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{target}:bk"),
            &format!("oci:{}:bk", back.display()),
        ],
    );
    let port = free_port();
    let running = Running::start(
        &back,
        "bk",
        &format!("bk-push-{}", std::process::id()),
        port,
    );
    let (status, body) = http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "{body}");
}
