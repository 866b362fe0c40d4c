//! Hostile input and concurrent use, through the binary: releases that point
//! outside themselves, references with passwords in them, children that
//! must not see the push password, `gc` racing builds, a corrupted cached
//! base, killed builds, setuid files, a closed stdout. Real components
//! throughout (the fixture mix release, a real registry, GNU tar).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const SECRET: &str = "S3cr3t-never-printed";

/// A copy of the fixture release directory that the test may change.
fn release_copy(into: &Path) -> PathBuf {
    let dst = into.join("rel/guildhall");
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(release_dir(&[]))
            .arg(&dst)
            .status()
            .unwrap()
            .success()
    );
    dst
}

fn base_ref() -> String {
    format!("oci:{}:runner", base_layout().display())
}

fn build(work: &Path, release: &Path, layout: &Path, tag: &str) -> Command {
    let mut c = bin(work);
    c.args(["build", "--release"])
        .arg(release)
        .args(["--base", &base_ref(), "--tag", tag, "--layout"])
        .arg(layout);
    c
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_release_whose_application_version_climbs_out_copies_nothing_from_the_host() {
    let work = tempfile::tempdir().unwrap();
    let release = release_copy(work.path());
    // A host directory next to the release, with a secret in it.
    let host = work.path().join("host-etc");
    fs::create_dir_all(host.join("ebin")).unwrap();
    fs::write(host.join("shadow"), SECRET).unwrap();
    let rel = fs::read_dir(release.join("releases/0.1.0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "rel"))
        .unwrap();
    let text = fs::read_to_string(&rel).unwrap();
    // lib/kernel-X/../../../../host-etc is the host directory.
    let kernel_vsn = text
        .split("{kernel,\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let climb = "1/../../../../host-etc";
    fs::create_dir_all(release.join("lib/kernel-1")).unwrap();
    fs::write(
        &rel,
        text.replace(
            &format!("{{kernel,\"{kernel_vsn}\""),
            &format!("{{kernel,\"{climb}\""),
        ),
    )
    .unwrap();
    let layout = work.path().join("image");
    let out = run(&mut build(work.path(), &release, &layout, "v1"));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not a plain name"), "{err}");
    assert!(!err.contains(SECRET));
    if layout.exists() {
        fsck_ok(&layout);
        let l = guildhall_image::layout::Layout::open(&layout).unwrap();
        assert!(l.images().unwrap().is_empty(), "nothing was tagged");
    }
}

#[test]
fn a_tarball_whose_start_erl_data_links_to_a_host_file_never_quotes_it() {
    let work = tempfile::tempdir().unwrap();
    let release = release_copy(work.path());
    let secret = work.path().join("shadow");
    fs::write(&secret, format!("root:{SECRET}:19000:0:99999:7:::\n")).unwrap();
    fs::remove_file(release.join("releases/start_erl.data")).unwrap();
    std::os::unix::fs::symlink(&secret, release.join("releases/start_erl.data")).unwrap();
    let tb = work.path().join("guildhall-0.1.0.tar.gz");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(&release)
            .arg("-czf")
            .arg(&tb)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let out = run(&mut build(
        work.path(),
        &tb,
        &work.path().join("image"),
        "v1",
    ));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert!(err.contains("symlink"), "{err}");
}

#[test]
fn a_password_in_a_reference_is_refused_without_being_repeated() {
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(&[]);
    for args in [
        vec![
            "push".to_owned(),
            "--tag".into(),
            "v1".into(),
            "--to".into(),
            format!("bob:{SECRET}@reg.example/x/y"),
        ],
        vec![
            "build".into(),
            "--release".into(),
            release.display().to_string(),
            "--base".into(),
            format!("bob:{SECRET}@reg.example/base:1"),
        ],
        vec!["inspect".into(), format!("bob:{SECRET}@reg.example/x/y:1")],
    ] {
        let out = run(bin(work.path()).args(&args));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains(SECRET), "{args:?}: {err}");
        assert!(err.contains("credentials"), "{err}");
    }
}

/// A directory on PATH with executables that record their environment.
fn env_spies(dir: &Path, names: &[&str], body: &str) -> PathBuf {
    let bin_dir = dir.join("spy-bin");
    fs::create_dir_all(&bin_dir).unwrap();
    for n in names {
        let p = bin_dir.join(n);
        fs::write(
            &p,
            format!("#!/bin/sh\nenv > \"{}/{n}.env\"\n{body}\n", dir.display()),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin_dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn mix_and_credential_helpers_never_see_the_push_password() {
    let work = tempfile::tempdir().unwrap();
    // `build --mix --push`: mix runs the project's code.
    let project = work.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let spies = env_spies(work.path(), &["mix"], "exit 1");
    let out = run(bin(work.path())
        .env("PATH", path_with(&spies))
        .env("GUILDHALL_IMAGE_USERNAME", "pusher")
        .env("GUILDHALL_IMAGE_PASSWORD", SECRET)
        .args([
            "build",
            "--mix",
            "--push",
            "--to",
            "127.0.0.1:9/x/y",
            "--project",
        ])
        .arg(&project));
    assert!(!out.status.success());
    let seen = fs::read_to_string(work.path().join("mix.env")).expect("mix ran");
    assert!(seen.contains("MIX_ENV=prod"), "{seen}");
    assert!(
        !seen.contains(SECRET) && !seen.contains("GUILDHALL_IMAGE_USERNAME"),
        "{seen}"
    );

    // A docker credential helper asked for another registry (the base's).
    let reg = Registry::start(Mode::Basic);
    let spies = env_spies(
        work.path(),
        &["docker-credential-spy"],
        r#"echo '{"Username":"testuser","Secret":"testpass"}'"#,
    );
    let cfg = work.path().join("docker");
    fs::create_dir_all(&cfg).unwrap();
    fs::write(
        cfg.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"spy"}}}}"#, reg.host),
    )
    .unwrap();
    let _ = run(bin(work.path())
        .env("PATH", path_with(&spies))
        .env("DOCKER_CONFIG", &cfg)
        .env("GUILDHALL_IMAGE_KEYRING", "none")
        .env("GUILDHALL_IMAGE_USERNAME", "pusher")
        .env("GUILDHALL_IMAGE_PASSWORD", SECRET)
        .args(["inspect", &format!("{}/base/none:1", reg.host)]));
    let seen = fs::read_to_string(work.path().join("docker-credential-spy.env"))
        .expect("the credential helper ran");
    assert!(
        !seen.contains(SECRET) && !seen.contains("GUILDHALL_IMAGE_USERNAME"),
        "{seen}"
    );
}

#[test]
fn gc_racing_builds_never_leaves_a_tag_on_missing_blobs() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("image");
    // Two releases, so builds alternate between images and gc has
    // something unreferenced to remove each time.
    let a = release_dir(&[]);
    let b = release_dir(&["--greeting", "gc race"]);
    ok(&mut build(work.path(), &a, &layout, "warm"));
    for i in 0..12 {
        let rel = if i % 2 == 0 { &b } else { &a };
        // A fresh scratch cache each time, so the build copies base blobs
        // (unreferenced until it tags) while gc runs.
        let mut builder = build(&work.path().join(format!("c{i}")), rel, &layout, "t");
        builder.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = builder.spawn().unwrap();
        // gc again and again for as long as the build runs.
        while child.try_wait().unwrap().is_none() {
            let gc = run(bin(work.path()).args(["gc", "--layout"]).arg(&layout));
            assert!(gc.status.success(), "{}", stderr_of(&gc));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        fsck_ok(&layout);
    }
}

fn flip_last_byte(p: &Path) {
    let mut bytes = fs::read(p).unwrap();
    let n = bytes.len() - 1;
    bytes[n] ^= 0x55;
    // The blob may be read-only or hard-linked elsewhere: replace it.
    fs::remove_file(p).unwrap();
    fs::write(p, bytes).unwrap();
}

fn biggest_blob(layout: &Path) -> PathBuf {
    fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path()
}

#[test]
fn a_flipped_byte_in_a_cached_base_blob_is_caught_and_the_base_pulled_again() {
    let reg = Registry::start(Mode::Anonymous);
    reg.seed(&base_ref(), "base/runner:bookworm");
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(&[]);
    let base = format!("{}/base/runner:bookworm", reg.host);
    let cache = work.path().join("cache");
    let build_into = |layout: &Path, extra: &[&str]| {
        run(bin(&cache)
            .args(["build", "--release"])
            .arg(&release)
            .args(["--base", &base, "--tag", "v1", "--layout"])
            .arg(layout)
            .args(extra))
    };
    let first = build_into(&work.path().join("one"), &[]);
    assert!(first.status.success(), "{}", stderr_of(&first));

    let victim = biggest_blob(&cache.join("bases"));
    flip_last_byte(&victim);
    let online = build_into(&work.path().join("two"), &[]);
    let err = stderr_of(&online);
    assert!(online.status.success(), "{err}");
    assert!(err.contains("corrupt") && err.contains("pulling"), "{err}");
    fsck_ok(&work.path().join("two"));
    fsck_ok(&work.path().join("one"));

    flip_last_byte(&victim);
    let offline = build_into(&work.path().join("three"), &["--offline"]);
    let err = stderr_of(&offline);
    assert_eq!(offline.status.code(), Some(3), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    fsck_ok(&work.path().join("three"));
}

#[test]
fn a_flipped_byte_in_an_oci_base_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(base_layout())
            .arg(&base)
            .status()
            .unwrap()
            .success()
    );
    flip_last_byte(&biggest_blob(&base));
    let layout = work.path().join("image");
    let out = run(bin(work.path())
        .args(["build", "--release"])
        .arg(release_dir(&[]))
        .arg("--base")
        .arg(format!("oci:{}:runner", base.display()))
        .args(["--tag", "v1", "--layout"])
        .arg(&layout));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");
    fsck_ok(&layout);
}

fn scratch_entries(layout: &Path) -> Vec<String> {
    fs::read_dir(layout.join(".guildhall-tmp"))
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn scratch_of_a_killed_build_is_removed_by_the_next_one() {
    let work = tempfile::tempdir().unwrap();
    let fixture = fixture_release(&["--big-mb", "300"]);
    let tb = fixture.join("_build/prod/guildhall-0.1.0.tar.gz");
    let layout = work.path().join("image");
    let mut child = build(work.path(), &tb, &layout, "v1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it unpacks the tarball: its spool is open, already
    // unlinked (no name in the work directory), and growing.
    let deadline = Instant::now() + Duration::from_secs(120);
    let fds = PathBuf::from(format!("/proc/{}/fd", child.id()));
    loop {
        let spool = fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .find(|fd| {
                fs::read_link(fd.path()).is_ok_and(|t| {
                    let t = t.to_string_lossy().into_owned();
                    t.contains(".guildhall-tmp/work-") && t.ends_with("(deleted)")
                }) && fs::metadata(fd.path()).is_ok_and(|m| m.len() > 8 << 20)
            });
        if spool.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build never started unpacking into an unlinked spool"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = scratch_entries(&layout);
    assert!(
        left.iter().any(|n| n.starts_with("work-")),
        "the killed build's work directory: {left:?}"
    );
    // Nothing of the tarball is left on disk (the spool died with the
    // process): the work directory holds its lock file alone.
    for n in left.iter().filter(|n| n.starts_with("work-")) {
        let names: Vec<_> = fs::read_dir(layout.join(".guildhall-tmp").join(n))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [".lock"], "{n}");
    }

    ok(&mut build(work.path(), &release_dir(&[]), &layout, "v2"));
    let left = scratch_entries(&layout);
    assert!(
        left.iter()
            .all(|n| !n.starts_with("work-") && !n.starts_with("release-")),
        "{left:?}"
    );
    fsck_ok(&layout);
}

#[test]
fn a_setuid_file_of_a_tarball_keeps_its_bits_in_the_image() {
    let work = tempfile::tempdir().unwrap();
    let release = release_copy(work.path());
    let tool = release.join("bin/suid-tool");
    fs::write(&tool, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    let tb = work.path().join("guildhall-0.1.0.tar.gz");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(release.parent().unwrap())
            .arg("-czf")
            .arg(&tb)
            .arg("guildhall")
            .status()
            .unwrap()
            .success()
    );
    let layout = work.path().join("image");
    let v = json(build(work.path(), &tb, &layout, "v1").arg("--json"));
    let app = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "app")
        .unwrap();
    let blob = layout.join("blobs/sha256").join(
        app["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&blob)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = listing
        .lines()
        .find(|l| l.ends_with("app/bin/suid-tool"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.starts_with("-rwsr-xr-x"), "{line}");
}

#[test]
fn a_reader_that_closes_stdout_early_ends_the_command_quietly() {
    let work = tempfile::tempdir().unwrap();
    let mut child = bin(work.path())
        .args(["inspect", &base_ref()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr_of(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_release_of_300_000_files_builds_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let release = release_copy(work.path());
    // 300 directories of 1,000 small BEAM-like files in the own app.
    let many = release.join("lib/guildhall-0.1.0/ebin/generated");
    for d in 0..300 {
        let dir = many.join(format!("Elixir.Generated.Namespace{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::write(
                dir.join(format!(
                    "Elixir.Generated.Namespace{d:03}.Module{f:04}.beam"
                )),
                b"FOR1\0\0\0\x10BEAMAtU8",
            )
            .unwrap();
        }
    }
    // The directory, and its tarball (read into a spool: its index must be
    // bounded too): the same image, each in bounded memory.
    let tarball = work.path().join("rel.tar.gz");
    assert!(
        Command::new("tar")
            .arg("-C")
            .arg(release.parent().unwrap())
            .arg("-czf")
            .arg(&tarball)
            .arg("guildhall")
            .status()
            .unwrap()
            .success()
    );
    let mut digests = Vec::new();
    for (input, name) in [(&release, "image"), (&tarball, "image-from-tarball")] {
        let layout = work.path().join(name);
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "peak-rss-kib=%M"])
            .arg(env!("CARGO_BIN_EXE_guildhall-image"))
            .env("GUILDHALL_IMAGE_CACHE", work.path().join("cache"))
            .args(["-q", "build", "--json", "--release"])
            .arg(input)
            .args(["--base", &base_ref(), "--tag", "v1", "--layout"])
            .arg(&layout);
        let out = run(&mut cmd);
        let err = stderr_of(&out);
        assert!(out.status.success(), "{err}");
        let kib: u64 = err
            .lines()
            .find_map(|l| l.strip_prefix("peak-rss-kib="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS in {err}"));
        assert!(
            kib < 100 * 1024,
            "peak RSS {kib} KiB for 300,000 files from {}",
            input.display()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        digests.push(v["digest"].as_str().unwrap().to_owned());
        fsck_ok(&layout);
    }
    assert_eq!(
        digests[0], digests[1],
        "directory and tarball give one image"
    );
}
