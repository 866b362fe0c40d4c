//! Publishing from the command line, against real registries: `build
//! --push` with Bearer-token auth from env secrets, the pushed image pulled
//! back with skopeo and run with runc; unchanged and one-module pushes;
//! cross-repository mounts of the base; bad input and faults as the user
//! meets them.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use serde_json::Value;

const USER: &str = "testuser";
const PASS: &str = "testpass";

fn base() -> String {
    format!("oci:{}:runner", base_layout().display())
}

fn uploads(report: &Value) -> usize {
    report["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter(|b| b["how"] == "uploaded")
        .count()
}

#[test]
fn build_push_with_env_secrets_to_a_token_registry_and_the_pulled_image_answers_health() {
    let reg = Registry::start(Mode::Token);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let digest_file = work.path().join("digest");
    let target = format!("{}/guildhall/app", reg.host);
    let out = ok(bin(work.path())
        .env("GUILDHALL_IMAGE_USERNAME", USER)
        .env("GUILDHALL_IMAGE_PASSWORD", PASS)
        .args(["build", "--release"])
        .arg(release_dir(&[]))
        .args(["--base", &base(), "--tag", "v1", "--layout"])
        .arg(&layout)
        .args(["--push", "--to", &target, "--digest-file"])
        .arg(&digest_file));
    let pushed = out.lines().last().unwrap().to_owned();
    let digest = std::fs::read_to_string(&digest_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        pushed,
        format!("{target}@{digest}"),
        "stdout ends with the pushed reference"
    );
    assert!(!out.contains(PASS));

    // skopeo reads it back; the copy runs and answers /health.
    let back = work.path().join("back");
    let st = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{USER}:{PASS}"),
        ])
        .arg(format!("docker://{target}:v1"))
        .arg(format!("oci:{}:pulled", back.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let inspected: Value = serde_json::from_slice(
        &Command::new("skopeo")
            .args(["inspect"])
            .arg(format!("oci:{}:pulled", back.display()))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.title"],
        "guildhall"
    );
    let port = free_port();
    let running = Running::start(&back, "pulled", &format!("gi-push-{port}"), port);
    let (status, body) = http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn pushing_again_uploads_nothing_and_a_one_module_change_uploads_one_layer() {
    let reg = Registry::start(Mode::Basic);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let target = format!("{}/guildhall/app", reg.host);
    for (tag, args) in [("one", vec![]), ("two", vec!["--greeting", "Changed"])] {
        ok(bin(work.path())
            .args(["build", "--release"])
            .arg(release_dir(&args))
            .args(["--base", &base(), "--tag", tag, "--layout"])
            .arg(&layout));
    }
    let push = |tag: &str| -> Value {
        json(
            bin(work.path())
                .env("GUILDHALL_IMAGE_USERNAME", USER)
                .env("GUILDHALL_IMAGE_PASSWORD", PASS)
                .args(["--json", "push", "--tag", tag, "--to", &target, "--layout"])
                .arg(&layout),
        )
    };
    let first = push("one");
    assert_eq!(
        uploads(&first),
        first["blobs"].as_array().unwrap().len(),
        "every blob is new"
    );
    let again = push("one");
    assert_eq!(
        uploads(&again),
        0,
        "an unchanged image uploads no blob: {again}"
    );
    assert_eq!(again["digest"], first["digest"]);
    // inspect reads the pushed image back from the registry.
    let creds = docker_config(&reg.host, USER, PASS);
    let seen = json(bin(work.path()).env("DOCKER_CONFIG", creds.path()).args([
        "inspect",
        "--json",
        &format!("{target}:one"),
    ]));
    assert_eq!(seen["digest"], first["digest"]);
    assert_eq!(seen["user"], "65534:65534");
    let changed = push("two");
    // The app layer and the config: nothing else.
    assert_eq!(uploads(&changed), 2, "{changed}");
}

#[test]
fn base_layers_on_the_same_registry_are_mounted_not_uploaded() {
    let reg = Registry::start(Mode::Anonymous);
    reg.seed(&base(), "base/runner:1");
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let report = json(
        bin(work.path())
            .args(["--json", "build", "--release"])
            .arg(release_dir(&[]))
            .args([
                "--base",
                &format!("{}/base/runner:1", reg.host),
                "--tag",
                "m",
                "--layout",
            ])
            .arg(&layout)
            .args(["--push", "--to", &format!("{}/guildhall/app", reg.host)]),
    );
    let mounted = report["pushed"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["how"] == "mounted")
        .count();
    assert_eq!(
        mounted, 2,
        "both base layers are mounted: {}",
        report["pushed"]
    );
}

#[test]
fn an_interrupted_push_completes_when_run_again_uploading_only_what_is_missing() {
    let reg = Registry::start(Mode::Anonymous);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    ok(bin(work.path())
        .args(["build", "--release"])
        .arg(release_dir(&["--big-mb", "50"]))
        .args(["--base", &base(), "--tag", "big", "--layout"])
        .arg(&layout));
    let target = format!("{}/guildhall/big", reg.host);
    // Small chunks and one upload at a time, killed once the registry has
    // accepted part of a blob.
    let mut child = bin(work.path())
        .args([
            "-q",
            "push",
            "--tag",
            "big",
            "--to",
            &target,
            "--chunk-size",
            "1MiB",
            "--concurrency",
            "1",
            "--layout",
        ])
        .arg(&layout)
        .spawn()
        .unwrap();
    // Killed once the registry holds at least one whole blob of the image.
    let layers_dir = reg
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/guildhall/big/_layers/sha256");
    let started = std::time::Instant::now();
    while !has_entries(&layers_dir) && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the first push was interrupted");
    let report = json(
        bin(work.path())
            .args([
                "--json", "push", "--tag", "big", "--to", &target, "--layout",
            ])
            .arg(&layout),
    );
    let existed = report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["how"] == "existed")
        .count();
    assert!(
        existed >= 1,
        "blobs confirmed before the interruption are not sent again: {report}"
    );
    // The registry has the whole image now.
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{target}:big"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[test]
fn push_failures_say_what_and_where_and_nothing_is_reported_pushed() {
    let reg = Registry::start(Mode::Token);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    ok(bin(work.path())
        .args(["build", "--release"])
        .arg(release_dir(&[]))
        .args(["--base", &base(), "--tag", "v1", "--layout"])
        .arg(&layout));
    let target = format!("{}/guildhall/app", reg.host);
    let closed = free_port();
    let wrong_secret = "not-the-password-123";
    // (what, push args, env, exit code, a text the error names)
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, i32, String);
    let cases: Vec<Case> = vec![
        (
            "unknown tag",
            vec!["--tag".into(), "nope".into(), "--to".into(), target.clone()],
            vec![],
            3,
            "nope".into(),
        ),
        (
            "missing layout",
            vec![
                "--tag".into(),
                "v1".into(),
                "--to".into(),
                target.clone(),
                "--layout".into(),
                "/nonexistent/layout".into(),
            ],
            vec![],
            3,
            "/nonexistent/layout".into(),
        ),
        (
            "wrong credentials",
            vec!["--tag".into(), "v1".into(), "--to".into(), target.clone()],
            vec![
                ("GUILDHALL_IMAGE_USERNAME", USER),
                ("GUILDHALL_IMAGE_PASSWORD", wrong_secret),
            ],
            6,
            reg.host.clone(),
        ),
        (
            "unreachable host",
            vec![
                "--tag".into(),
                "v1".into(),
                "--to".into(),
                format!("127.0.0.1:{closed}/x/y"),
            ],
            vec![],
            5,
            format!("127.0.0.1:{closed}"),
        ),
        (
            "unknown target",
            vec!["--tag".into(), "v1".into(), "--to".into(), "nowhere".into()],
            vec![],
            2,
            "nowhere".into(),
        ),
    ];
    for (what, args, env, code, needle) in cases {
        let mut cmd = bin(work.path());
        cmd.arg("-v").arg("push").args(&args);
        if !args.iter().any(|a| a == "--layout") {
            cmd.arg("--layout").arg(&layout);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = std::time::Instant::now();
        let out = run(&mut cmd);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        assert!(
            stdout.trim().is_empty(),
            "{what}: nothing reported pushed: {stdout}"
        );
        assert!(
            stderr.contains(&needle),
            "{what}: `{needle}` not in {stderr}"
        );
        assert!(!stderr.contains(wrong_secret), "{what}: the secret leaked");
        assert!(
            started.elapsed().as_secs() < 30,
            "{what} took {:?}",
            started.elapsed()
        );
    }
}
