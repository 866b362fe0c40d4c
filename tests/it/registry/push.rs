//! Pushing to a real registry: Basic and Bearer auth, read back by skopeo;
//! nothing uploaded twice; cross-repository mounts; wrong credentials;
//! tokens dying mid-push; a body-capping proxy; a registry killed mid-push.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guildhall_image::error::ExitCode;
use guildhall_image::image::RegistryRef;
use guildhall_image::layout::{Layout, TaggedImage};
use guildhall_image::progress::Progress;
use guildhall_image::registry::{
    BlobHow, ChunkHook, Client, ClientOptions, PushOptions, PushReport, RegistryError,
};

use crate::support::*;

async fn push(
    c: &Client,
    layout: &Layout,
    img: &TaggedImage,
    target: &str,
    tags: &[&str],
    opts: &PushOptions,
) -> Result<PushReport, RegistryError> {
    let target = RegistryRef::parse_repository(target).unwrap();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    within(
        60,
        "the push",
        push_image(c, layout, img, &target, &tags, opts, &Progress::hidden()),
    )
    .await
}

/// skopeo sees the manifest under each tag, and copying it back gives the
/// same digest.
fn read_back(reg: &Registry, repo: &str, tags: &[&str], report: &PushReport) {
    let tmp = tempfile::tempdir().unwrap();
    let creds = reg.skopeo_creds("--creds");
    for tag in tags {
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        args.extend(creds.iter().map(String::as_str));
        let src = format!("docker://{}/{repo}:{tag}", reg.host);
        args.push(&src);
        let raw = skopeo(&args);
        assert_eq!(
            guildhall_image::image::Digest::of(&raw.stdout),
            report.digest,
            "{tag}"
        );
    }
    let src_creds = reg.skopeo_creds("--src-creds");
    let mut args = vec![
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
    ];
    args.extend(src_creds.iter().map(String::as_str));
    let src = format!("docker://{}/{repo}:{}", reg.host, tags[0]);
    let dst = format!("oci:{}:back", tmp.path().join("back").display());
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
    assert_eq!(
        layout_digest(&tmp.path().join("back"), "back"),
        report.digest
    );
}

fn assert_all(report: &PushReport, want: impl Fn(&BlobHow) -> bool, what: &str) {
    for b in &report.blobs {
        assert!(
            want(&b.how),
            "blob {} was {:?}, expected {what}",
            b.digest,
            b.how
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_basic_auth_is_read_back_by_skopeo_and_pushing_again_uploads_nothing() {
    let reg = Registry::start(Mode::Basic);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3 * MIB, 100_000], 10);
    let c = client(reg.creds(PASSWORD), fast_options());
    let target = format!("{}/tking/guildhall", reg.host);
    let report = push(
        &c,
        &layout,
        &img,
        &target,
        &["v1", "latest"],
        &PushOptions::default(),
    )
    .await
    .expect("the push succeeds");
    assert_eq!(report.digest, img.digest);
    assert_eq!(
        report.reference,
        format!("{}/tking/guildhall@{}", reg.host, img.digest)
    );
    assert_eq!(report.tags, ["v1", "latest"]);
    assert_eq!(report.uploaded(), 3);
    read_back(&reg, "tking/guildhall", &["v1", "latest"], &report);

    // A new client (no cached state): only HEADs and manifest PUTs.
    let c = client(reg.creds(PASSWORD), fast_options());
    let started = Instant::now();
    let again = push(
        &c,
        &layout,
        &img,
        &target,
        &["v1", "v1.0"],
        &PushOptions::default(),
    )
    .await
    .unwrap();
    assert_all(&again, |h| *h == BlobHow::Existed, "existing");
    assert_eq!(again.digest, report.digest);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    read_back(&reg, "tking/guildhall", &["v1.0"], &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_bearer_tokens_asks_the_token_service_once_and_is_read_back() {
    let reg = Registry::start(Mode::Token);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[2 * MIB, 5000, 7000], 20);
    let c = client(reg.creds(PASSWORD), fast_options());
    let target = format!("{}/tking/guildhall", reg.host);
    let report = push(&c, &layout, &img, &target, &["v1"], &PushOptions::default())
        .await
        .expect("the push succeeds");
    assert_eq!(report.uploaded(), 4);
    let tokens = reg.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(
        tokens[0]["scopes"],
        serde_json::json!(["repository:tking/guildhall:pull,push"])
    );
    assert_eq!(tokens[0]["authorization"], "basic");

    let again = push(&c, &layout, &img, &target, &["v2"], &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(again.uploaded(), 0);
    assert_eq!(reg.token_requests().len(), 1, "the cached token is reused");
    read_back(&reg, "tking/guildhall", &["v1", "v2"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_in_another_repository_of_the_registry_are_mounted_not_uploaded() {
    let reg = Registry::start(Mode::Token);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[MIB, 3000], 30);
    let c = client(reg.creds(PASSWORD), fast_options());
    push(
        &c,
        &layout,
        &img,
        &format!("{}/base/runner", reg.host),
        &["1"],
        &PushOptions::default(),
    )
    .await
    .unwrap();
    let opts = PushOptions {
        mount_from: vec!["base/runner".into()],
        ..PushOptions::default()
    };
    let report = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &opts,
    )
    .await
    .unwrap();
    assert_all(
        &report,
        |h| matches!(h, BlobHow::Mounted { from } if from == "base/runner"),
        "mounted",
    );
    let last = reg.token_requests().pop().unwrap();
    assert_eq!(
        last["scopes"],
        serde_json::json!([
            "repository:base/runner:pull",
            "repository:tking/guildhall:pull,push"
        ])
    );
    read_back(&reg, "tking/guildhall", &["v1"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_clear_auth_error_without_retries_or_the_secret() {
    let secret = "not-the-password-9f3a";
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[1000, 2000, 3000], 40);

    let reg = Registry::start(Mode::Token);
    let c = client(reg.creds(secret), fast_options());
    let started = Instant::now();
    let e = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    assert_eq!(e.exit_code(), ExitCode::Auth);
    let msg = e.to_string();
    assert!(msg.contains(&reg.host) && msg.contains(USER), "{msg}");
    assert!(
        !msg.contains(secret) && !format!("{e:?}").contains(secret),
        "{msg}"
    );
    assert!(!format!("{c:?}").contains(secret));
    assert_eq!(
        reg.token_requests().len(),
        1,
        "one token request, no retry storm"
    );

    let reg = Registry::start(Mode::Basic);
    let c = client(reg.creds(secret), fast_options());
    let e = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&reg.host) && msg.contains(USER), "{msg}");
    assert!(!msg.contains(secret), "{msg}");
    let unauthorized = reg
        .log()
        .lines()
        .filter(|l| l.contains("\" 401 ") && l.contains("guildhall-image/"))
        .count();
    assert!(
        unauthorized <= 2,
        "{unauthorized} 401s: the ping and one try"
    );

    // Anonymous against a registry that needs credentials: same class.
    let c = client(anonymous(), fast_options());
    let e = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Auth, "{e}");
    assert!(e.to_string().contains("no credentials"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_dies_during_the_push_is_replaced_and_the_push_completes() {
    // Tokens say they last 4 s but the registry refuses them after 2 s: the
    // client, renewing at 80% of expires_in, meets 401s between 2 and 3.2 s.
    let reg = Registry::start_with(
        Mode::Token,
        RegistryOpts {
            ttl: Some(4),
            token_early_death: Some(2),
            ..RegistryOpts::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[12 * MIB], 50);
    let c = client(
        reg.creds(PASSWORD),
        ClientOptions {
            chunk_size: MIB,
            monolithic_max: MIB,
            ..fast_options()
        },
    );
    // Slow the push down: 0.4 s after each acknowledged chunk (~5 s in all).
    let slow: ChunkHook = Arc::new(|_, _| std::thread::sleep(Duration::from_millis(400)));
    let opts = PushOptions {
        on_chunk: Some(slow),
        ..PushOptions::default()
    };
    let report = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &opts,
    )
    .await
    .expect("the push survives the token's death");
    let tokens = reg.token_requests().len();
    assert!(tokens >= 2, "{tokens} token request(s)");
    let refused = reg
        .log()
        .lines()
        .filter(|l| {
            l.contains("\" 401 ")
                && (l.contains("\"PATCH ") || l.contains("\"PUT ") || l.contains("\"HEAD "))
        })
        .count();
    assert!(
        refused >= 1,
        "no request met a dead token; the test proves nothing"
    );
    read_back(&reg, "tking/guildhall", &["v1"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_8m_body_cap_a_20mb_layer_goes_in_4mib_chunks() {
    let reg = Registry::start(Mode::Anonymous);
    let proxy = Proxy::start(&reg.port, "8m");
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[20 * MIB, 1000], 60);
    let c = client(
        anonymous(),
        ClientOptions {
            chunk_size: 4 * MIB,
            monolithic_max: 4 * MIB,
            ..fast_options()
        },
    );
    let report = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", proxy.host),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .expect("the chunked push succeeds");
    let log = proxy.access_log();
    let patches: Vec<&String> = log.iter().filter(|l| l.starts_with("PATCH ")).collect();
    assert_eq!(
        patches.len(),
        6,
        "20 MiB in 4 MiB chunks (+ the tar headers): {log:#?}"
    );
    assert!(log.iter().all(|l| !l.contains(" 413 ")), "{log:#?}");
    read_back(&reg, "tking/guildhall", &["v1"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_from_the_proxy_halves_the_chunk_size_until_the_upload_fits() {
    let reg = Registry::start(Mode::Anonymous);
    let proxy = Proxy::start(&reg.port, "8m");
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[20 * MIB], 70);
    let c = client(
        anonymous(),
        ClientOptions {
            chunk_size: 32 * MIB,
            monolithic_max: 32 * MIB,
            ..fast_options()
        },
    );
    let report = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", proxy.host),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .expect("the push falls back to chunks and succeeds");
    let log = proxy.access_log();
    let refused = log.iter().filter(|l| l.contains(" 413 ")).count();
    assert!(refused >= 1, "{log:#?}");
    let patches = log
        .iter()
        .filter(|l| l.starts_with("PATCH ") && l.contains(" 202 "))
        .count();
    assert!(patches >= 4, "{log:#?}");
    read_back(&reg, "tking/guildhall", &["v1"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_killed_and_restarted_mid_push_lets_the_upload_resume_where_it_stopped() {
    let reg = Arc::new(Registry::start(Mode::Basic));
    let tmp = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[size], 80);
    let c = client(
        reg.creds(PASSWORD),
        ClientOptions {
            chunk_size: 2 * MIB,
            monolithic_max: 2 * MIB,
            max_attempts: 8,
            ..fast_options()
        },
    );
    // After the second chunk is acknowledged: kill the registry, and bring
    // it back 0.5 s later on the same port and data directory.
    let fired = Arc::new(AtomicBool::new(false));
    let restarter: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
    let hook: ChunkHook = {
        let (reg, fired, restarter) = (reg.clone(), fired.clone(), restarter.clone());
        Arc::new(move |_, offset| {
            if offset >= 4 * MIB && !fired.swap(true, Ordering::SeqCst) {
                reg.kill();
                let reg = reg.clone();
                *restarter.lock().unwrap() = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(500));
                    reg.restart();
                }));
            }
        })
    };
    let opts = PushOptions {
        on_chunk: Some(hook),
        ..PushOptions::default()
    };
    let report = push(
        &c,
        &layout,
        &img,
        &format!("{}/tking/guildhall", reg.host),
        &["v1"],
        &opts,
    )
    .await
    .expect("the push completes after the restart");
    assert!(
        fired.load(Ordering::SeqCst),
        "the registry was never killed"
    );
    if let Some(t) = restarter.lock().unwrap().take() {
        t.join().unwrap();
    }
    let layer = report.blobs.iter().find(|b| b.size > size).unwrap();
    let BlobHow::Uploaded { bytes, .. } = layer.how else {
        panic!("{:?}", layer.how)
    };
    // Resumed: at most one chunk sent twice, not the whole blob again.
    assert!(
        bytes <= layer.size + 2 * MIB,
        "sent {bytes} bytes for a {}-byte blob",
        layer.size
    );
    read_back(&reg, "tking/guildhall", &["v1"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_fails_in_bounded_time_as_unreachable() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[1000], 90);
    let c = client(anonymous(), fast_options());
    let started = Instant::now();
    let e = push(
        &c,
        &layout,
        &img,
        &format!("127.0.0.1:{port}/x/y"),
        &["v1"],
        &PushOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, RegistryError::Unreachable { .. }), "{e:?}");
    assert_eq!(e.exit_code(), ExitCode::Registry);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_credentials_with_basic_and_token_registries() {
    for mode in [Mode::Basic, Mode::Token] {
        let reg = Registry::start(mode);
        let c = client(reg.creds(PASSWORD), fast_options());
        within(
            60,
            "the check",
            c.check_credentials(&reg.host, Some("tking/guildhall")),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let c = client(reg.creds("wrong"), fast_options());
        let e = within(60, "the check", c.check_credentials(&reg.host, None))
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::Unauthorized { .. }),
            "{mode:?}: {e:?}"
        );
        assert_eq!(e.exit_code(), ExitCode::Auth);
    }
}
