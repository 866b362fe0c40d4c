//! The daemonless build, end to end against real components: a real mix
//! release of the fixture project, a debootstrapped base served by a real
//! registry that requires auth, runc running the result, skopeo and umoci
//! reading the layout.

use std::path::Path;
use std::process::Command;

use crate::support::*;
use serde_json::Value;

const USER: &str = "testuser";
const PASS: &str = "testpass";

fn build_args(layout: &Path, release: &Path, base: &str, tag: &str) -> Vec<String> {
    vec![
        "build".into(),
        "--release".into(),
        release.display().to_string(),
        "--base".into(),
        base.into(),
        "--tag".into(),
        tag.into(),
        "--layout".into(),
        layout.display().to_string(),
        "--json".into(),
    ]
}

fn layer_digests(v: &Value) -> Vec<(String, String)> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_image_built_from_a_registry_base_with_basic_auth_runs_and_answers_health() {
    let reg = Registry::start(Mode::Basic);
    let base = base_layout();
    reg.seed(
        &format!("oci:{}:runner", base.display()),
        "base/runner:bookworm",
    );
    let release = release_dir(&[]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("image");
    let creds = docker_config(&reg.host, USER, PASS);
    let v = json(
        bin(work.path())
            .env("DOCKER_CONFIG", creds.path())
            .args(build_args(
                &layout,
                &release,
                &format!("{}/base/runner:bookworm", reg.host),
                "v1",
            )),
    );
    let names: Vec<String> = layer_digests(&v).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["base", "base", "erts", "app"],
        "base layers then release layers, stablest first"
    );
    fsck_ok(&layout);

    // Other OCI tools read the layout.
    let out = Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:v1", layout.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"].as_str(), v["digest"].as_str());
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.title"],
        "guildhall"
    );
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.version"],
        "0.1.0"
    );
    assert_eq!(
        inspected["Labels"]["org.opencontainers.image.base.name"],
        format!("{}/base/runner:bookworm", reg.host)
    );

    // The config is what a Phoenix release image needs.
    let info =
        json(bin(work.path()).args(["inspect", "--json", &format!("oci:{}:v1", layout.display())]));
    assert_eq!(info["cmd"], serde_json::json!(["/app/bin/server"]));
    assert_eq!(info["user"], "65534:65534");
    assert_eq!(info["working_dir"], "/app");
    assert_eq!(info["exposed_ports"], serde_json::json!(["4000/tcp"]));
    let env: Vec<&str> = info["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for want in ["LANG=C.UTF-8", "MIX_ENV=prod", "HOME=/app"] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "the base's PATH is kept: {env:?}"
    );

    // It starts as a restricted Pod runs it (its numeric non-root user,
    // read-only root, writable /tmp only, no capabilities), evaluating the
    // fixture's config/runtime.exs, and serves /health (which needs libcrypto).
    let port = free_port();
    let running = Running::start_restricted(&layout, "v1", &format!("gi-build-{port}"), port);
    let (status, body) = http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "body: {body}");
    assert!(body.starts_with("ok"), "{body}");

    // The layout unpacks with umoci, keeping the release's special files.
    let bundle = work.path().join("bundle");
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:v1", layout.display()),
            bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = bundle.join("rootfs/app");
    let static_dir = app.join("lib/guildhall-0.1.0/priv/static");
    assert_eq!(
        std::fs::read_link(static_dir.join("latest.txt")).unwrap(),
        Path::new("café-ünïcödé.txt")
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let script =
        std::fs::metadata(app.join("lib/guildhall-0.1.0/priv/bin/healthcheck.sh")).unwrap();
    assert_eq!(
        script.permissions().mode() & 0o111,
        0o111,
        "executables stay executable"
    );
    assert_eq!(
        (script.uid(), script.gid()),
        (65534, 0),
        "files belong to nobody:root"
    );
    let long = walk(&app).into_iter().find(|p| p.as_os_str().len() > 200);
    assert!(long.is_some(), "the fixture's long path survives");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn the_same_release_built_twice_from_another_directory_gives_the_same_digest() {
    let base = format!("oci:{}:runner", base_layout().display());
    let release = release_dir(&[]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // A copy of the release elsewhere, with other mtimes.
    let copy = b.path().join("rel/guildhall");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&release)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let one = json(
        bin(a.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(build_args(&a.path().join("img"), &release, &base, "t")),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = json(
        bin(b.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(build_args(&b.path().join("img"), &copy, &base, "t")),
    );
    assert_eq!(one["digest"], two["digest"]);
    let info = json(bin(a.path()).args([
        "inspect",
        "--json",
        &format!("oci:{}:t", a.path().join("img").display()),
    ]));
    assert_eq!(
        info["created"], "2023-11-14T22:13:20Z",
        "SOURCE_DATE_EPOCH sets created"
    );
}

#[test]
fn a_one_module_change_changes_only_the_app_layer() {
    let base = format!("oci:{}:runner", base_layout().display());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let first = json(bin(work.path()).args(build_args(&layout, &release_dir(&[]), &base, "one")));
    let second = json(bin(work.path()).args(build_args(
        &layout,
        &release_dir(&["--greeting", "Hello again"]),
        &base,
        "two",
    )));
    let (a, b) = (layer_digests(&first), layer_digests(&second));
    assert_eq!(a.len(), b.len());
    for ((name, da), (_, db)) in a.iter().zip(&b) {
        if name == "app" {
            assert_ne!(da, db, "the app layer changes");
        } else {
            assert_eq!(da, db, "the {name} layer keeps its digest");
        }
    }
    let reused: Vec<bool> = second["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(
        reused.iter().filter(|r| !**r).count(),
        1,
        "only one layer is compressed again: {reused:?}"
    );
    fsck_ok(&layout);
}

#[test]
fn a_crypto_release_on_a_bare_base_fails_preflight_naming_libcrypto_and_its_package() {
    let base = format!("oci:{}:bare", base_layout().display());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let out = run(bin(work.path()).args(build_args(&layout, &release_dir(&[]), &base, "x")));
    assert_eq!(
        out.status.code(),
        Some(4),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libcrypto.so.3") && err.contains("libssl3") && err.contains("crypto"),
        "{err}"
    );
    // Nothing is tagged; the layout is still valid.
    let l = guildhall_image::layout::Layout::open(&layout).unwrap();
    assert!(l.images().unwrap().is_empty());
    fsck_ok(&layout);
    // --skip-preflight builds anyway.
    let mut args = build_args(&layout, &release_dir(&[]), &base, "x");
    args.push("--skip-preflight".into());
    ok(bin(work.path()).args(args));
}

#[test]
fn a_release_tarball_builds_like_the_directory() {
    let base = format!("oci:{}:runner", base_layout().display());
    let work = tempfile::tempdir().unwrap();
    let tarball = fixture_release(&[]).join("_build/prod/guildhall-0.1.0.tar.gz");
    let v = json(bin(work.path()).args(build_args(&work.path().join("img"), &tarball, &base, "t")));
    assert_eq!(layer_digests(&v).len(), 4);
    fsck_ok(&work.path().join("img"));
}

/// Each bad input: non-zero exit with the documented code, one message naming
/// what and where, and an existing layout left valid with its tags.
#[test]
fn bad_inputs_get_one_clear_error_and_leave_the_layout_valid() {
    let base_dir = base_layout();
    let base = format!("oci:{}:runner", base_dir.display());
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let good = release_dir(&[]);
    ok(bin(work.path()).args(build_args(&layout, &good, &base, "good")));

    let truncated = work.path().join("truncated.tar.gz");
    let full =
        std::fs::read(fixture_release(&[]).join("_build/prod/guildhall-0.1.0.tar.gz")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let not_release = work.path().join("not-a-release");
    std::fs::create_dir_all(not_release.join("lib")).unwrap();
    let no_start_erl = work.path().join("no-start-erl");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&good)
            .arg(&no_start_erl)
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_file(no_start_erl.join("releases/start_erl.data")).unwrap();
    let closed = free_port();

    let cases: Vec<(&str, Vec<String>, i32, Vec<String>)> = vec![
        (
            "missing release",
            build_args(&layout, Path::new("/nonexistent/rel"), &base, "t"),
            3,
            vec!["/nonexistent/rel".into()],
        ),
        (
            "truncated tarball",
            build_args(&layout, &truncated, &base, "t"),
            3,
            vec![truncated.display().to_string()],
        ),
        (
            "not a release",
            build_args(&layout, &not_release, &base, "t"),
            3,
            vec!["bin".into()],
        ),
        (
            "no start_erl.data",
            build_args(&layout, &no_start_erl, &base, "t"),
            3,
            vec!["start_erl.data".into()],
        ),
        (
            "unknown base tag",
            build_args(
                &layout,
                &good,
                &format!("oci:{}:nope", base_dir.display()),
                "t",
            ),
            3,
            vec!["nope".into()],
        ),
        (
            "bad tag",
            build_args(&layout, &good, &base, "v1/x"),
            2,
            vec!["v1/x".into()],
        ),
        (
            "unreachable registry",
            build_args(
                &layout,
                &good,
                &format!("127.0.0.1:{closed}/base/runner:x"),
                "t",
            ),
            5,
            vec![format!("127.0.0.1:{closed}")],
        ),
    ];
    for (what, args, code, needles) in cases {
        let started = std::time::Instant::now();
        let out = run(bin(work.path()).args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        for n in needles {
            assert!(err.contains(&n), "{what}: `{n}` not in {err}");
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "{what} took {:?}",
            started.elapsed()
        );
        fsck_ok(&layout);
        let l = guildhall_image::layout::Layout::open(&layout).unwrap();
        assert!(
            l.resolve(Some("good")).is_ok(),
            "{what}: the existing tag survives"
        );
    }

    // A layout path that is a file: an unwritable layout.
    let file = work.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = run(bin(work.path()).args(build_args(&file, &good, &base, "t")));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&file.display().to_string()));
}

#[test]
fn a_registry_base_is_cached_so_the_next_build_works_offline() {
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(&[]);
    let reference;
    let first;
    {
        let reg = Registry::start(Mode::Anonymous);
        reg.seed(
            &format!("oci:{}:runner", base_layout().display()),
            "base/runner:1",
        );
        reference = format!("{}/base/runner:1", reg.host);
        first = json(bin(work.path()).args(build_args(
            &work.path().join("a"),
            &release,
            &reference,
            "t",
        )));
    } // the registry is gone
    let again = json(bin(work.path()).args(build_args(
        &work.path().join("b"),
        &release,
        &reference,
        "t",
    )));
    assert_eq!(
        first["digest"], again["digest"],
        "the cached base is used when the registry is unreachable"
    );
    let mut args = build_args(&work.path().join("c"), &release, &reference, "t");
    args.push("--offline".into());
    assert_eq!(json(bin(work.path()).args(args))["digest"], first["digest"]);
}

#[test]
fn build_mix_runs_the_release_in_the_project_and_picks_it_up() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("guildhall");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(root().join("fixtures/guildhall_fixture"))
            .arg(&project)
            .status()
            .unwrap()
            .success()
    );
    let _ = std::fs::remove_dir_all(project.join("_build"));
    let cache = test_cache();
    let out = run(bin(work.path())
        // Offline mix, as fixtures/build-release.sh runs it.
        .env("HOME", cache.join("home"))
        .env("MIX_HOME", cache.join("mix"))
        .env("HEX_HOME", cache.join("hex"))
        .env("HEX_OFFLINE", "1")
        .env("LC_ALL", "C.UTF-8")
        .args(["--json", "build", "--mix", "--project"])
        .arg(&project)
        .args(["--base", &format!("oci:{}:runner", base_layout().display())]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("_build/prod/rel/guildhall"),
        "says which release it picked: {stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["tags"],
        serde_json::json!(["0.1.0"]),
        "tagged with the release version by default"
    );
    assert!(
        project.join("_build/image/index.json").is_file(),
        "the default layout is PROJECT/_build/image"
    );
}

#[test]
fn a_full_disk_fails_the_build_cleanly_and_the_layout_stays_valid() {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mounting a small tmpfs (the tests run as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let layout = mnt.join("img");
    guildhall_image::layout::Layout::create_or_open(&layout).unwrap();
    let out = run(bin(work.path()).args(build_args(
        &layout,
        &release_dir(&[]),
        &format!("oci:{}:runner", base_layout().display()),
        "t",
    )));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains(&mnt.display().to_string()),
        "{err}"
    );
    fsck_ok(&layout);
    let l = guildhall_image::layout::Layout::open(&layout).unwrap();
    assert!(l.images().unwrap().is_empty(), "nothing tagged");
}

#[test]
fn the_projects_config_file_gives_defaults_that_flags_override() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("guildhall-image.toml"),
        format!(
            "[build]\nbase = \"oci:{}:runner\"\n\n[image]\nlabels = {{ team = \"guild\" }}\nports = [\"4000\", \"9568\"]\n",
            base_layout().display()
        ),
    )
    .unwrap();
    let v = json(
        bin(work.path())
            .args(["--json", "build", "--project"])
            .arg(&project)
            .arg("--release")
            .arg(release_dir(&[]))
            .args(["--port", "4000"]),
    );
    assert_eq!(v["tags"], serde_json::json!(["0.1.0"]));
    let info = json(bin(work.path()).args([
        "inspect",
        "--json",
        &format!("oci:{}:0.1.0", project.join("_build/image").display()),
    ]));
    assert_eq!(
        info["labels"]["team"], "guild",
        "labels from the config file"
    );
    assert_eq!(
        info["exposed_ports"],
        serde_json::json!(["4000/tcp"]),
        "--port overrides the file's ports"
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn labels_of(work: &Path, layout: &Path, tag: &str) -> serde_json::Map<String, Value> {
    let info = json(bin(work).args([
        "inspect",
        "--json",
        &format!("oci:{}:{tag}", layout.display()),
    ]));
    info["labels"].as_object().cloned().unwrap_or_default()
}

#[test]
fn a_local_path_remote_and_an_oci_base_put_no_host_path_in_any_label() {
    let work = tempfile::tempdir().unwrap();
    let checkout = work.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    git(&checkout, &["init", "-q"]);
    git(&checkout, &["commit", "-q", "--allow-empty", "-m", "x"]);
    git(
        &checkout,
        &["remote", "add", "origin", "/srv/git/guildhall.git"],
    );
    let layout = work.path().join("image");
    let base = base_layout();
    let build = |tag: &str| {
        let out = run(bin(work.path())
            .args(["-v", "build", "--project"])
            .arg(&checkout)
            .arg("--release")
            .arg(release_dir(&[]))
            .args([
                "--base",
                &format!("oci:{}:runner", base.display()),
                "--tag",
                tag,
                "--layout",
            ])
            .arg(&layout));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = build("local");
    let labels = labels_of(work.path(), &layout, "local");
    for (k, v) in &labels {
        let v = v.as_str().unwrap_or_default();
        assert!(
            !v.starts_with('/') && !v.starts_with("oci:") && !v.contains(&*base.to_string_lossy()),
            "{k}={v}"
        );
    }
    assert!(
        !labels.contains_key("org.opencontainers.image.source"),
        "{labels:?}"
    );
    assert!(
        !labels.contains_key("org.opencontainers.image.base.name"),
        "{labels:?}"
    );
    assert!(
        labels.contains_key("org.opencontainers.image.base.digest"),
        "{labels:?}"
    );
    assert!(
        said.contains("image.source left out") && said.contains("image.base.name left out"),
        "-v says why: {said}"
    );

    git(
        &checkout,
        &[
            "remote",
            "set-url",
            "origin",
            "git@git.guildhouse.dev:tking/guildhall.git",
        ],
    );
    build("ssh");
    assert_eq!(
        labels_of(work.path(), &layout, "ssh")["org.opencontainers.image.source"],
        "https://git.guildhouse.dev/tking/guildhall"
    );

    let out = run(bin(work.path())
        .args(["build", "--source", "/srv/git/guildhall", "--release"])
        .arg(release_dir(&[]))
        .args([
            "--base",
            &format!("oci:{}:runner", base.display()),
            "--layout",
        ])
        .arg(&layout));
    assert_eq!(out.status.code(), Some(2), "a path is no --source URL");
}

#[test]
fn the_image_user_is_numeric_and_a_user_name_is_warned_about() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("image");
    let release = release_dir(&[]);
    let base = format!("oci:{}:runner", base_layout().display());
    let out = run(bin(work.path())
        .args(["build", "--release"])
        .arg(&release)
        .args([
            "--base", &base, "--tag", "named", "--user", "nobody", "--layout",
        ])
        .arg(&layout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not numeric") && err.contains("runAsNonRoot"),
        "{err}"
    );
    // Run as the kubelet would: a name cannot be verified as non-root.
    let port = free_port().to_string();
    let refused = Command::new("bash")
        .arg(root().join("tests/support/run-image.sh"))
        .arg(&layout)
        .args(["named", "gi-named-user", &port])
        .env("RUN_IMAGE_RESTRICTED", "1")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("non-numeric user"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
