//! Credentials end to end, against the real things: a Secret Service
//! (gnome-keyring-daemon on a private D-Bus session), the kernel's keyutils
//! user keyring, docker configs with a real `docker-credential-*` helper,
//! and real registries (basic and token auth) whose logs show who sent
//! what. Every test also checks that no command printed a secret, at `-v`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::keyring::{Env, KeyutilsKey, SecretService, script};
use crate::support::{Mode, Registry, RegistryOpts, tiny_layout};
use base64::Engine as _;

/// `login HOST -u USER --password-stdin` at -v.
fn login(env: &Env, host: &str, user: &str, password: &str) -> crate::support::keyring::Run {
    env.run(
        &["-v", "login", host, "-u", user, "--password-stdin"],
        Some(&format!("{password}\n")),
    )
}

/// Push the tiny layout under `dir` to `host/test/app:t1` at -v.
fn push(env: &Env, dir: &Path, host: &str) -> crate::support::keyring::Run {
    let layout = dir.join("layout");
    if !layout.exists() {
        tiny_layout(dir, "t1", "hello from the credential tests\n");
    }
    env.run(
        &[
            "-v",
            "push",
            "--tag",
            "t1",
            "--layout",
            layout.to_str().unwrap(),
            "--to",
            &format!("{host}/test/app"),
        ],
        None,
    )
}

#[test]
fn login_stores_in_the_secret_service_a_push_then_needs_no_env_and_logout_removes_it() {
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let mut env = Env::new();
    let ss = SecretService::start(&env.home.path().join("ss"), true);
    env.with_secret_service(&ss);
    let work = tempfile::tempdir().unwrap();

    // Wrong password first: refused, exit 6, nothing stored.
    let wrong = login(&env, &reg.host, &reg.user, "not-the-password");
    assert_eq!(wrong.code, 6, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("nothing was stored"),
        "{}",
        wrong.stderr
    );
    assert_eq!(ss.lookup(&reg.host), None);

    let ok = login(&env, &reg.host, &reg.user, &reg.password).ok();
    assert!(ok.stdout.contains("secret-service"), "{}", ok.stdout);
    let stored = ss.lookup(&reg.host).expect("secret-tool finds the entry");
    let v: serde_json::Value = serde_json::from_str(&stored).expect("JSON payload");
    assert_eq!(v["username"], reg.user.as_str());
    assert_eq!(v["secret"], reg.password.as_str());
    // Nothing in keyutils for this host.
    assert_eq!(KeyutilsKey::for_host(&reg.host).read(), None);

    let listed = env.run(&["--json", "credentials"], None).ok();
    let l: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let entry = l["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["host"] == reg.host.as_str())
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("{} not listed: {}", reg.host, listed.stdout));
    assert_eq!(
        (entry["store"].as_str(), entry["username"].as_str()),
        (Some("secret-service"), Some(reg.user.as_str()))
    );

    let which = env.run(&["credentials", "--host", &reg.host], None).ok();
    assert!(
        which.stdout.contains("keyring (secret-service)"),
        "{}",
        which.stdout
    );

    // A push with no env and no docker config: the keyring answers.
    let p = push(&env, work.path(), &reg.host).ok();
    assert!(
        p.stderr.contains("keyring (secret-service)"),
        "-v names the source:\n{}",
        p.stderr
    );
    assert!(reg.manifest_digest("test/app", "t1").is_some());

    // Without the session bus the entry cannot be reached: logout says so
    // (rather than "not logged in") and keeps it.
    env.unset("DBUS_SESSION_BUS_ADDRESS");
    let cut_off = env.run(&["logout", &reg.host], None);
    assert_ne!(cut_off.code, 0, "{}", cut_off.all());
    assert!(
        cut_off.stderr.contains("cannot be reached"),
        "{}",
        cut_off.stderr
    );
    assert!(ss.lookup(&reg.host).is_some());
    env.with_secret_service(&ss);

    let out = env.run(&["logout", &reg.host], None).ok();
    assert!(out.stdout.contains("Logged out"), "{}", out.stdout);
    assert_eq!(ss.lookup(&reg.host), None);
    let again = env.run(&["logout", &reg.host], None).ok();
    assert!(again.stdout.contains("Not logged in"), "{}", again.stdout);

    env.assert_never_printed(&reg.password);
}

#[test]
fn without_a_session_bus_login_uses_the_keyutils_user_keyring() {
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let key = KeyutilsKey::for_host(&reg.host);
    let env = Env::new(); // no DBUS_SESSION_BUS_ADDRESS
    let work = tempfile::tempdir().unwrap();

    let wrong = login(&env, &reg.host, &reg.user, "wrong-password");
    assert_eq!(wrong.code, 6, "{}", wrong.all());
    assert_eq!(key.read(), None, "a refused login stores nothing");

    let ok = login(&env, &reg.host, &reg.user, &reg.password).ok();
    assert!(ok.stdout.contains("keyutils"), "{}", ok.stdout);
    assert!(
        ok.stderr.contains("OS keyring unavailable"),
        "one debug line for the Secret Service:\n{}",
        ok.stderr
    );
    let payload = key.read().expect("keyctl finds the key in @u");
    let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(v["username"], reg.user.as_str());

    let p = push(&env, work.path(), &reg.host).ok();
    assert!(p.stderr.contains("keyring (keyutils)"), "{}", p.stderr);
    // Trace level too: still no secret (checked at the end for every run).
    let layout = work.path().join("layout");
    env.run(
        &[
            "-vv",
            "push",
            "--tag",
            "t1",
            "--layout",
            layout.to_str().unwrap(),
            "--to",
            &format!("{}/test/vv", reg.host),
        ],
        None,
    )
    .ok();
    assert_eq!(
        p.stderr.matches("OS keyring unavailable").count(),
        1,
        "an unavailable store is mentioned once:\n{}",
        p.stderr
    );

    env.run(&["logout", &reg.host], None).ok();
    assert_eq!(key.read(), None);
    env.assert_never_printed(&reg.password);
}

#[test]
fn a_secret_service_without_an_unlocked_collection_is_skipped_for_keyutils() {
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let key = KeyutilsKey::for_host(&reg.host);
    let mut env = Env::new();
    let ss = SecretService::start(&env.home.path().join("ss"), false);
    env.with_secret_service(&ss);

    let t = Instant::now();
    let ok = login(&env, &reg.host, &reg.user, &reg.password).ok();
    assert!(ok.stdout.contains("keyutils"), "{}", ok.stdout);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(key.read().is_some());
    assert_eq!(ss.lookup(&reg.host), None);
    env.run(&["logout", &reg.host], None).ok();
    env.assert_never_printed(&reg.password);
}

#[test]
fn an_unreachable_keyring_never_stops_a_push() {
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let mut env = Env::new();
    env.set("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    std::fs::write(
        env.docker_dir().join("config.json"),
        serde_json::json!({"auths": {reg.host.as_str(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = push(&env, work.path(), &reg.host).ok();
    assert!(p.stderr.contains("docker-config (auths)"), "{}", p.stderr);
    assert_eq!(
        p.stderr.matches("OS keyring unavailable").count(),
        1,
        "{}",
        p.stderr
    );
    env.assert_never_printed(&reg.password);
    env.assert_never_printed(&auth);
}

#[test]
fn docker_config_auths_answer_when_the_keyring_has_nothing() {
    let reg = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let env = Env::new();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    // A Docker Hub style URL key for another host, and ours as a bare host.
    std::fs::write(
        env.docker_dir().join("config.json"),
        serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOmh1Yg=="},
            reg.host.as_str(): {"auth": auth},
        }})
        .to_string(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = push(&env, work.path(), &reg.host).ok();
    assert!(p.stderr.contains("docker-config (auths)"), "{}", p.stderr);
    assert!(reg.manifest_digest("test/app", "t1").is_some());
    assert!(
        reg.token_requests()
            .iter()
            .any(|l| l["user"] == reg.user.as_str()),
        "the token server saw our user: {:?}",
        reg.token_requests()
    );
    let hub = env
        .run(&["credentials", "--host", "registry-1.docker.io"], None)
        .ok();
    assert!(
        hub.stdout.contains("docker-config (auths), user hub"),
        "Docker Hub aliases are one host:\n{}",
        hub.stdout
    );
    env.assert_never_printed(&reg.password);
    env.assert_never_printed(&auth);
}

#[test]
fn a_docker_credential_helper_answers_for_its_host() {
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let env = Env::new();
    let asked = env.home.path().join("helper-asked");
    // A real helper program on PATH, speaking the docker-credential protocol.
    script(
        &env.bin_dir().join("docker-credential-gitest"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nhost=$(cat)\necho \"$host\" >> '{asked}'\n\
             if [ \"$host\" = '{host}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pw}\"}}' \"$host\"\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            asked = asked.display(),
            host = reg.host,
            user = reg.user,
            pw = reg.password
        ),
    );
    std::fs::write(
        env.docker_dir().join("config.json"),
        serde_json::json!({"credHelpers": {reg.host.as_str(): "gitest"}}).to_string(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let p = push(&env, work.path(), &reg.host).ok();
    assert!(p.stderr.contains("credHelpers: gitest"), "{}", p.stderr);
    assert!(reg.manifest_digest("test/app", "t1").is_some());
    assert!(
        std::fs::read_to_string(&asked)
            .unwrap()
            .lines()
            .any(|l| l == reg.host)
    );

    // The same helper as the credsStore: it answers for its host, and says
    // "not found" for others (anonymous then, not an error).
    std::fs::write(
        env.docker_dir().join("config.json"),
        r#"{"credsStore": "gitest"}"#,
    )
    .unwrap();
    let which = env.run(&["credentials", "--host", &reg.host], None).ok();
    assert!(
        which.stdout.contains("docker-config (credsStore: gitest)"),
        "{}",
        which.stdout
    );
    let other = env
        .run(&["credentials", "--host", "other.example:5000"], None)
        .ok();
    assert!(other.stdout.contains("no credentials"), "{}", other.stdout);

    // A credsStore that is not installed is skipped; auths still answer.
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    std::fs::write(
        env.docker_dir().join("config.json"),
        serde_json::json!({"credsStore": "not-installed-here", "auths": {reg.host.as_str(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let which = env.run(&["credentials", "--host", &reg.host], None).ok();
    assert!(
        which.stdout.contains("docker-config (auths)"),
        "{}",
        which.stdout
    );
    env.assert_never_printed(&reg.password);
}

#[test]
fn env_credentials_are_sent_to_the_push_target_only() {
    // `other` stands for a base image's registry: token auth, anonymous pulls
    // allowed, and a token log that records every Authorization header.
    let other = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            anonymous_pull: true,
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let target = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let mut env = Env::new();
    let work = tempfile::tempdir().unwrap();

    // Seed `other` with an image, pushing as its own user.
    env.set("GUILDHALL_IMAGE_USERNAME", &other.user)
        .set("GUILDHALL_IMAGE_PASSWORD", &other.password);
    push(&env, work.path(), &other.host).ok();
    let seen = other.token_requests().len();

    // Now the env holds the push target's credentials.
    env.set("GUILDHALL_IMAGE_USERNAME", &target.user)
        .set("GUILDHALL_IMAGE_PASSWORD", &target.password);
    let which = env
        .run(&["-v", "credentials", "--host", &target.host], None)
        .ok();
    assert!(
        which.stdout.contains("credentials from env"),
        "{}",
        which.stdout
    );
    // Reading from `other` (no push target): anonymous, never the env's.
    let i = env.run(
        &["-v", "inspect", &format!("{}/test/app:t1", other.host)],
        None,
    );
    assert_eq!(i.code, 0, "{}", i.all());
    let log = other.token_requests();
    assert!(log.len() > seen, "inspect asked the token server");
    for l in &log[seen..] {
        assert!(
            l["authorization"].is_null() && l["user"].is_null(),
            "credentials sent to a non-target registry: {l}"
        );
    }

    // And a build that pulls its base from `other` while pushing to `target`.
    let release = fixture_release_dir();
    let seen = other.token_requests().len();
    let layout = work.path().join("built");
    let b = env.run(
        &[
            "-v",
            "build",
            "--release",
            release.to_str().unwrap(),
            "--base",
            &format!("{}/test/app:t1", other.host),
            "--skip-preflight",
            "--layout",
            layout.to_str().unwrap(),
            "--tag",
            "envtest",
            "--push",
            "--to",
            &format!("{}/test/built", target.host),
        ],
        None,
    );
    assert_eq!(b.code, 0, "{}", b.all());
    assert!(target.manifest_digest("test/built", "envtest").is_some());
    let log = other.token_requests();
    assert!(
        log.len() > seen,
        "the build pulled the base through the token server"
    );
    for l in &log[seen..] {
        assert!(
            l["authorization"].is_null(),
            "credentials sent to the base's registry: {l}"
        );
    }
    env.assert_never_printed(&target.password);
    env.assert_never_printed(&other.password);
}

#[test]
fn login_without_a_terminal_needs_a_username_and_password_stdin() {
    let env = Env::new();
    let r = env.run(&["login", "127.0.0.1:9"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("-u USER"), "{}", r.stderr);
    let r = env.run(&["login", "127.0.0.1:9", "-u", "someone"], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--password-stdin"), "{}", r.stderr);
    let r = env.run(&["login", "127.0.0.1:9", "--password-stdin"], Some("pw\n"));
    assert!(r.stderr.contains("needs -u"), "{}", r.stderr);
}

#[test]
fn login_no_verify_stores_offline_and_credentials_lists_it() {
    // Never contacted (--no-verify); unique, as tests share the user keyring.
    let host = format!("offline-{:08x}.example:5000", rand::random::<u32>());
    let key = KeyutilsKey::for_host(&host);
    let mut env = Env::new();
    env.set("GUILDHALL_IMAGE_KEYRING", "keyutils");
    let r = env.run(
        &[
            "login",
            &host,
            "-u",
            "offline",
            "--password-stdin",
            "--no-verify",
        ],
        Some("s3cr3t-offline"),
    );
    let r = r.ok();
    assert!(r.stdout.contains("not checked"), "{}", r.stdout);
    assert!(key.read().is_some());
    let l = env.run(&["credentials"], None).ok();
    assert!(
        l.stdout
            .lines()
            .any(|x| x.starts_with(&host) && x.contains("offline") && x.contains("keyutils")),
        "{}",
        l.stdout
    );
    env.run(&["logout", &host], None).ok();
    let l = env.run(&["credentials"], None).ok();
    assert!(l.stdout.contains("No registry credentials"), "{}", l.stdout);
    env.assert_never_printed("s3cr3t-offline");
}

/// The fixture release (fixtures/build-release.sh, cached).
fn fixture_release_dir() -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .arg(crate::support::root().join("fixtures/build-release.sh"))
        .output()
        .expect("build-release.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    Path::new(&work).join("_build/prod/rel/guildhall")
}

#[test]
fn login_asks_on_a_terminal_for_the_user_and_the_password_without_echo() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let reg = Registry::start_with(
        Mode::Basic,
        RegistryOpts {
            random_credentials: true,
            ..RegistryOpts::default()
        },
    );
    let key = KeyutilsKey::for_host(&reg.host);
    let env = Env::new();
    // util-linux `script` gives the binary a real pseudo-terminal.
    let mut child = Command::new("script")
        .args([
            "-qefc",
            &format!(
                "{} login {}",
                crate::support::bin_path().display(),
                reg.host
            ),
            "/dev/null",
        ])
        .env_clear()
        .envs(env.vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |what: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !seen.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => panic!("no `{what}` on the terminal; got:\n{seen}"),
            }
        }
    };
    wait_for("Username for", &mut seen);
    stdin
        .write_all(format!("{}\n", reg.user).as_bytes())
        .unwrap();
    wait_for("Password or token for", &mut seen);
    // rpassword prints the prompt, then turns echo off: a person types after
    // that; a test must wait for it too.
    std::thread::sleep(Duration::from_millis(700));
    let before = seen.len();
    stdin
        .write_all(format!("{}\n", reg.password).as_bytes())
        .unwrap();
    wait_for("Logged in", &mut seen);
    drop(stdin);
    assert!(child.wait().unwrap().success(), "{seen}");
    assert!(
        !seen[before..].contains(&reg.password),
        "the password was echoed:\n{seen}"
    );
    assert!(key.read().is_some());
    env.run(&["logout", &reg.host], None).ok();
}
