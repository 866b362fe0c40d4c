//! Pushing to Forgejo as it really behaves, against the DOUBLE
//! `ForgejoRegistry` (written from Forgejo 9.x's container handlers), with
//! Cloudflare in front where the fault needs it: a 60 MB image goes through
//! each fault, and an unchanged push afterwards uploads nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guildhall_image::credentials::{Chain, CredentialSource, ForHost, Secret};
use guildhall_image::error::ExitCode;
use guildhall_image::image::RegistryRef;
use guildhall_image::layout::{Layout, TaggedImage};
use guildhall_image::progress::Progress;
use guildhall_image::registry::{
    BlobHow, Client, ClientOptions, FORGEJO_CHUNK, PushOptions, PushReport, RegistryError,
};

use crate::support::forgejo_registry::{Account, Cdn, Faults, ForgejoOptions, ForgejoRegistry};
use crate::support::*;

const REPO: &str = "tking/guildhall";
const SECRET: &str = "pat-tking-write";

fn creds(reg: &ForgejoRegistry, user: &str, secret: &str) -> Arc<dyn CredentialSource> {
    Arc::new(Chain::new().with(ForHost::new(
        &reg.host(),
        user.into(),
        Secret::new(secret),
        "test",
    )))
}

/// The built-in Forgejo target's settings, fast retries.
fn forgejo_options() -> ClientOptions {
    ClientOptions {
        chunk_size: FORGEJO_CHUNK,
        monolithic_max: FORGEJO_CHUNK,
        ..fast_options()
    }
}

/// A 65 MB image: layers of 40, 17 and 5 MiB (two chunked, one in a
/// single PUT) and a config.
fn image_60mb(dir: &std::path::Path, seed: u64) -> (Layout, TaggedImage) {
    make_image(dir, "v1", &[40 * MIB, 17 * MIB, 5 * MIB], seed)
}

async fn push_to(
    c: &Client,
    reg: &ForgejoRegistry,
    layout: &Layout,
    img: &TaggedImage,
    repo: &str,
    tags: &[&str],
    progress: &Progress,
) -> Result<PushReport, RegistryError> {
    let target = RegistryRef::parse_repository(&format!("{}/{repo}", reg.host())).unwrap();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    within(
        120,
        "the push",
        push_image(
            c,
            layout,
            img,
            &target,
            &tags,
            &PushOptions::default(),
            progress,
        ),
    )
    .await
}

/// Every blob of the report is stored byte for byte, the manifest under
/// the tag; then a new client pushes the same image again and uploads
/// nothing.
async fn check_stored_and_repush(
    reg: &ForgejoRegistry,
    layout: &Layout,
    img: &TaggedImage,
    report: &PushReport,
) {
    assert_eq!(report.digest, img.digest);
    let size: u64 = report.blobs.iter().map(|b| b.size).sum();
    assert!(size >= 60_000_000, "the image is {size} bytes");
    for b in &report.blobs {
        let stored = reg
            .blob(REPO, &b.digest.to_string())
            .unwrap_or_else(|| panic!("blob {} is not stored", b.digest));
        assert!(
            stored == std::fs::read(layout.blob_path(&b.digest)).unwrap(),
            "blob {} differs",
            b.digest
        );
    }
    let (_, manifest) = reg.manifest(REPO, "v1").expect("the manifest under v1");
    assert_eq!(guildhall_image::image::Digest::of(&manifest), img.digest);
    assert_eq!(reg.open_sessions(), 0, "no session left open");

    reg.set_faults(Faults::default());
    reg.clear_log();
    let c = client(creds(reg, "tking", SECRET), forgejo_options());
    let again = push_to(&c, reg, layout, img, REPO, &["v1"], &Progress::hidden())
        .await
        .expect("the unchanged push succeeds");
    assert_eq!(again.uploaded(), 0, "{:?}", again.blobs);
    assert!(
        again.blobs.iter().all(|b| b.how == BlobHow::Existed),
        "{:?}",
        again.blobs
    );
    let posts = reg.log().iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 0, "an unchanged push opens no upload session");
}

/// Push the 60 MB image to a fresh double with these faults; check it
/// arrived whole and that an unchanged push uploads nothing. Returns the
/// double (for its log), the report and what was said during the push.
async fn push_60mb_through(
    faults: Faults,
    opts: ClientOptions,
    seed: u64,
) -> (ForgejoRegistry, PushReport, Vec<String>, Duration) {
    let reg = ForgejoRegistry::start(ForgejoOptions {
        faults,
        ..ForgejoOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = image_60mb(&tmp.path().join("l"), seed);
    let c = client(creds(&reg, "tking", SECRET), opts);
    let (progress, said) = Progress::recording();
    let started = Instant::now();
    let report = push_to(&c, &reg, &layout, &img, REPO, &["v1"], &progress)
        .await
        .unwrap_or_else(|e| panic!("the push fails: {e}\n{:#?}", reg.log()));
    let took = started.elapsed();
    let log_before_repush = reg.log();
    check_stored_and_repush(&reg, &layout, &img, &report).await;
    reg.clear_log();
    let said = said.lock().unwrap().clone();
    // Put the push's log back for the caller to inspect.
    restore_log(&reg, log_before_repush);
    (reg, report, said, took)
}

fn restore_log(reg: &ForgejoRegistry, log: Vec<crate::support::forgejo_registry::Logged>) {
    reg.replace_log(log);
}

fn patches(reg: &ForgejoRegistry) -> Vec<crate::support::forgejo_registry::Logged> {
    reg.log()
        .into_iter()
        .filter(|l| l.method == "PATCH")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60mb_image_goes_to_forgejo_in_16mib_chunks_and_an_unchanged_push_uploads_nothing() {
    let (reg, report, _, took) = push_60mb_through(Faults::default(), forgejo_options(), 1).await;
    assert_eq!(report.uploaded(), 4);
    let p = patches(&reg);
    assert!(
        p.iter().all(|l| l.content_length <= FORGEJO_CHUNK),
        "{p:#?}"
    );
    assert_eq!(p.len(), 3 + 2, "40 MiB in 3 chunks, 17 MiB in 2: {p:#?}");
    assert!(
        reg.tokens_issued() >= 1,
        "Forgejo's tokens carry no expires_in"
    );
    eprintln!("figure: 65 MB to the Forgejo double, no faults: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_524_after_forgejo_stored_a_chunk_resumes_at_the_byte_count_it_reports() {
    let (reg, _, said, took) = push_60mb_through(
        Faults {
            cdn: Some(Cdn {
                timeout_on_patches: vec![1, 3],
                timeout_on_puts: vec![0],
                ..Cdn::default()
            }),
            ..Faults::default()
        },
        forgejo_options(),
        2,
    )
    .await;
    let log = reg.log();
    let timeouts = log.iter().filter(|l| l.status == 524).count();
    assert_eq!(timeouts, 3, "{log:#?}");
    // Each 524'd PATCH is followed by the status request and a PATCH
    // starting exactly at the byte count the status gave: no 416.
    assert!(
        log.iter().all(|l| l.status != 416),
        "resumed one byte too far: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.method == "GET" && l.path.contains("/blobs/uploads/")),
        "the upload's status was asked: {log:#?}"
    );
    assert!(said.iter().any(|s| s.contains("524")), "{said:?}");
    eprintln!("figure: 65 MB through three 524s: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_a_patch_resumes_from_forgejos_count() {
    let (reg, report, _, took) = push_60mb_through(
        Faults {
            drop_answer_on_patches: vec![0, 2],
            ..Faults::default()
        },
        forgejo_options(),
        3,
    )
    .await;
    let log = reg.log();
    assert_eq!(log.iter().filter(|l| l.status == 0).count(), 2, "{log:#?}");
    assert!(log.iter().all(|l| l.status != 416), "{log:#?}");
    // Nothing was sent twice but the chunks whose answers were lost... and
    // not even those: the status said they were stored.
    let sent: u64 = report
        .blobs
        .iter()
        .map(|b| match b.how {
            BlobHow::Uploaded { bytes, .. } => bytes,
            _ => 0,
        })
        .sum();
    let size: u64 = report.blobs.iter().map(|b| b.size).sum();
    assert_eq!(sent, size, "every byte sent once");
    eprintln!("figure: 65 MB through two lost answers: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_body_cap_answered_with_an_html_413_is_learnt_once_for_every_blob() {
    let (reg, _, said, took) = push_60mb_through(
        Faults {
            cdn: Some(Cdn {
                body_cap: Some(10_000_000),
                ..Cdn::default()
            }),
            ..Faults::default()
        },
        forgejo_options(),
        4,
    )
    .await;
    let log = reg.log();
    let refused: Vec<_> = log.iter().filter(|l| l.status == 413).collect();
    // The 40 and 17 MiB layers' first chunks are refused together; the
    // 5 MiB layer fits; what one refusal taught, the other blob uses.
    assert!(
        !refused.is_empty() && refused.len() <= 2,
        "one 413 per blob in flight at most: {refused:#?}"
    );
    let notices: Vec<_> = said.iter().filter(|s| s.contains("refused a")).collect();
    assert_eq!(notices.len(), 1, "said once: {said:#?}");
    assert!(
        notices[0].contains("HTML page") || notices[0].contains("413"),
        "{notices:?}"
    );
    let accepted: Vec<u64> = log
        .iter()
        .filter(|l| l.method == "PATCH" && l.status == 202)
        .map(|l| l.content_length)
        .collect();
    assert!(accepted.iter().all(|n| *n <= 10_000_000), "{accepted:?}");
    eprintln!(
        "figure: 65 MB through a 10 MB body cap: {took:?}, {} 413s",
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_push_gets_a_plain_401_and_is_renewed() {
    let (reg, _, _, took) = push_60mb_through(
        Faults {
            expire_tokens_after_patch: Some(1),
            ..Faults::default()
        },
        forgejo_options(),
        5,
    )
    .await;
    let log = reg.log();
    let refused = log
        .iter()
        .filter(|l| l.status == 401 && l.auth == "bearer")
        .count();
    assert!(
        refused >= 1,
        "no request met the dead token; the test proves nothing"
    );
    let token_requests = log.iter().filter(|l| l.path == "/v2/token").count();
    assert!(token_requests >= 2, "{token_requests} token request(s)");
    eprintln!("figure: 65 MB through an expired token: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_mid_transfer_poisons_forgejos_session_and_the_blob_starts_over_in_a_new_one()
{
    let (reg, _, said, took) = push_60mb_through(
        Faults {
            break_patch_body: Some((1, 3 * MIB)),
            ..Faults::default()
        },
        forgejo_options(),
        6,
    )
    .await;
    let log = reg.log();
    assert!(
        log.iter().any(|l| l.note == "broken"),
        "the body was never broken: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.status == 500),
        "the poisoned session never answered 500: {log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.method == "DELETE" && l.path.contains("/blobs/uploads/")),
        "the poisoned session was not cancelled: {log:#?}"
    );
    let posts = log.iter().filter(|l| l.method == "POST").count();
    assert_eq!(posts, 4 + 1, "one new session: {log:#?}");
    assert!(said.iter().any(|s| s.contains("new session")), "{said:?}");
    eprintln!("figure: 65 MB through a poisoned session: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_is_waited_for_longer_than_the_idle_bound_allows_a_silent_sender() {
    // Each PATCH and final PUT takes 2 s to answer; sending may idle 1 s.
    let (reg, _, _, took) = push_60mb_through(
        Faults {
            cdn: Some(Cdn::default()),
            origin_delay: Duration::from_secs(2),
            ..Faults::default()
        },
        ClientOptions {
            read_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            ..forgejo_options()
        },
        7,
    )
    .await;
    let log = reg.log();
    assert!(
        log.iter()
            .all(|l| !(l.method == "GET" && l.path.contains("/blobs/uploads/"))),
        "a request was abandoned while the origin worked: {log:#?}"
    );
    eprintln!("figure: 65 MB to a 2 s-per-request origin: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghcrs_416_chunk_limit_is_treated_like_a_413() {
    let (reg, _, said, took) = push_60mb_through(
        Faults {
            ghcr_request_limit: Some(4 * MIB),
            ..Faults::default()
        },
        forgejo_options(),
        8,
    )
    .await;
    let log = reg.log();
    let limited = log.iter().filter(|l| l.status == 416).count();
    assert!((1..=3).contains(&limited), "{limited} 416s: {log:#?}");
    let notices: Vec<_> = said.iter().filter(|s| s.contains("refused a")).collect();
    assert_eq!(notices.len(), 1, "{said:#?}");
    assert!(
        notices[0].contains("4.0 MiB") || notices[0].contains("4.2 MB"),
        "{notices:?}"
    );
    let accepted: Vec<u64> = log
        .iter()
        .filter(|l| l.method == "PATCH" && l.status == 202)
        .map(|l| l.content_length)
        .collect();
    assert!(accepted.iter().all(|n| *n <= 4 * MIB), "{accepted:?}");
    eprintln!("figure: 65 MB through ghcr's 4 MiB limit: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_no_permission_and_no_credentials_are_three_different_errors() {
    let reg = ForgejoRegistry::start(ForgejoOptions {
        accounts: vec![
            Account {
                user: "tking".into(),
                secret: SECRET.into(),
                write_package: true,
            },
            Account {
                user: "reader".into(),
                secret: "pat-reader-readonly".into(),
                write_package: false,
            },
        ],
        ..ForgejoOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3000, 4000], 9);

    // Wrong: the token request itself is refused (a plain 401).
    let c = client(creds(&reg, "tking", "not-the-token-7c1e"), fast_options());
    let e = push_to(&c, &reg, &layout, &img, REPO, &["v1"], &Progress::hidden())
        .await
        .unwrap_err();
    assert_eq!(e.auth_kind(), Some("wrong_credentials"), "{e}");
    assert_eq!(e.exit_code(), ExitCode::Auth);
    assert!(!e.to_string().contains("not-the-token-7c1e"), "{e}");

    // Valid, without `write:package`: the token is issued, the write refused.
    let c = client(creds(&reg, "reader", "pat-reader-readonly"), fast_options());
    let e = push_to(
        &c,
        &reg,
        &layout,
        &img,
        "reader/app",
        &["v1"],
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.auth_kind(), Some("no_permission"), "{e}");
    assert_eq!(e.exit_code(), ExitCode::Auth);
    let msg = e.to_string();
    assert!(
        msg.contains("valid") && msg.contains("write:package") && msg.contains("reader/app"),
        "{msg}"
    );
    assert!(!msg.contains("rejected the credentials"), "{msg}");

    // Valid, someone else's owner.
    let c = client(creds(&reg, "tking", SECRET), fast_options());
    let e = push_to(
        &c,
        &reg,
        &layout,
        &img,
        "someone/app",
        &["v1"],
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.auth_kind(), Some("no_permission"), "{e}");
    assert!(e.to_string().contains("`someone`"), "{e}");

    // Anonymous: Forgejo hands out a ghost token, which may not write.
    let c = client(anonymous(), fast_options());
    let e = push_to(&c, &reg, &layout, &img, REPO, &["v1"], &Progress::hidden())
        .await
        .unwrap_err();
    assert_eq!(e.auth_kind(), Some("no_credentials"), "{e}");
    assert_eq!(e.exit_code(), ExitCode::Auth);
    assert!(reg.manifest(REPO, "v1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_that_differ_only_by_case_are_refused_before_anything_is_uploaded_to_forgejo() {
    let reg = ForgejoRegistry::start(ForgejoOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3000], 10);
    let c = client(creds(&reg, "tking", SECRET), fast_options());
    let e = push_to(
        &c,
        &reg,
        &layout,
        &img,
        REPO,
        &["Runner", "runner"],
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Usage, "{e}");
    assert!(e.to_string().contains("lower-cased"), "{e}");
    assert!(
        reg.log()
            .iter()
            .all(|l| l.method != "POST" && l.method != "PUT"),
        "{:#?}",
        reg.log()
    );

    let (progress, said) = Progress::recording();
    push_to(&c, &reg, &layout, &img, REPO, &["Runner"], &progress)
        .await
        .expect("one upper-case tag is pushed");
    assert_eq!(reg.tags(REPO), ["runner"]);
    let said = said.lock().unwrap().clone();
    assert!(
        said.iter().any(|s| s.contains("`Runner` will be `runner`")),
        "{said:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgejo_mounts_from_the_lower_cased_repository_and_never_answers_404_to_a_mount() {
    let reg = ForgejoRegistry::start(ForgejoOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[MIB, 3000], 11);
    let c = client(creds(&reg, "tking", SECRET), fast_options());
    push_to(
        &c,
        &reg,
        &layout,
        &img,
        "tking/base",
        &["1"],
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let target = RegistryRef::parse_repository(&format!("{}/{REPO}", reg.host())).unwrap();
    let opts = PushOptions {
        mount_from: vec!["tking/base".into()],
        ..PushOptions::default()
    };
    let report = push_v1(&c, &layout, &img, &target, &opts).await.unwrap();
    assert!(
        report
            .blobs
            .iter()
            .all(|b| matches!(&b.how, BlobHow::Mounted { from } if from == "tking/base")),
        "{:?}",
        report.blobs
    );
    // A source that does not hold the blobs: a session opens (202), the
    // blobs are uploaded through it.
    let (layout2, img2) = make_image(&tmp.path().join("l2"), "v1", &[5000], 12);
    let opts = PushOptions {
        mount_from: vec!["tking/nothing-here".into()],
        ..PushOptions::default()
    };
    reg.clear_log();
    let report = within(
        120,
        "the push",
        push_image(
            &c,
            &layout2,
            &img2,
            &target,
            &["v2".into()],
            &opts,
            &Progress::hidden(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.uploaded(), 2);
    let mounts: Vec<u16> = reg
        .log()
        .iter()
        .filter(|l| l.method == "POST")
        .map(|l| l.status)
        .collect();
    assert!(mounts.iter().all(|s| *s == 202), "{mounts:?}");
}

#[test]
fn push_json_tells_wrong_credentials_from_no_permission_and_both_exit_6() {
    let reg = ForgejoRegistry::start(ForgejoOptions {
        accounts: vec![
            Account {
                user: "tking".into(),
                secret: SECRET.into(),
                write_package: true,
            },
            Account {
                user: "reader".into(),
                secret: "pat-reader-readonly".into(),
                write_package: false,
            },
        ],
        ..ForgejoOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (_layout, _img) = make_image(&tmp.path().join("l"), "v1", &[3000], 13);
    for (user, secret, repo, kind) in [
        (
            "tking",
            "wrong-secret-5d2b",
            "tking/guildhall",
            "wrong_credentials",
        ),
        (
            "reader",
            "pat-reader-readonly",
            "reader/app",
            "no_permission",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_guildhall-image"))
            .args(["--json", "push", "--tag", "v1", "--layout"])
            .arg(tmp.path().join("l"))
            .args(["--to", &format!("{}/{repo}", reg.host())])
            .env("GUILDHALL_IMAGE_USERNAME", user)
            .env("GUILDHALL_IMAGE_PASSWORD", secret)
            .env("GUILDHALL_IMAGE_KEYRING", "none")
            .env("DOCKER_CONFIG", tmp.path().join("no-docker"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(6), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
        assert_eq!(v["error"]["kind"], kind, "{v}");
        assert_eq!(v["error"]["exit_code"], 6, "{v}");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn messages_during_a_push_on_a_terminal_leave_one_clean_bar_per_blob() {
    // A real terminal: tmux, 100 columns, three blobs at once, each refused
    // by the CDN's body cap first (the notice is printed while bars show).
    require("tmux", "tmux");
    let reg = ForgejoRegistry::start(ForgejoOptions {
        faults: Faults {
            cdn: Some(Cdn {
                body_cap: Some(3_000_000),
                ..Cdn::default()
            }),
            ..Faults::default()
        },
        ..ForgejoOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(
        &tmp.path().join("l"),
        "v1",
        &[8 * MIB, 6 * MIB, 5 * MIB],
        31,
    );
    let socket = tmp.path().join("tmux.sock");
    let done = tmp.path().join("done");
    let script = tmp.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv -u CI GUILDHALL_IMAGE_USERNAME=tking GUILDHALL_IMAGE_PASSWORD={SECRET} GUILDHALL_IMAGE_KEYRING=none DOCKER_CONFIG={} {} push --tag v1 --layout {} --to {}/{REPO} --concurrency 3\necho $? > {}.tmp && mv {}.tmp {}\nsleep 600\n",
            tmp.path().join("no-docker").display(),
            env!("CARGO_BIN_EXE_guildhall-image"),
            layout.root().display(),
            reg.host(),
            done.display(),
            done.display(),
            done.display(),
        ),
    )
    .unwrap();
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux")
    };
    let out = tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "40",
        "sh",
        &script.display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let started = Instant::now();
    while !done.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the push in tmux did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The bars' last redraw is on screen once the process has exited.
    std::thread::sleep(Duration::from_millis(300));
    let screen = tmux(&["capture-pane", "-p", "-S", "-100"]);
    let _ = tmux(&["kill-server"]);
    let screen = String::from_utf8_lossy(&screen.stdout).to_string();
    let code = std::fs::read_to_string(&done).unwrap();
    assert_eq!(code.trim(), "0", "{screen}");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    // Each lowering of the chunk size is said once, whole, above the bars.
    let notices: Vec<&&str> = lines.iter().filter(|l| l.contains("refused a")).collect();
    assert!(!notices.is_empty(), "no 413 notice:\n{screen}");
    let mut distinct = notices.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), notices.len(), "a notice twice:\n{screen}");
    let first_bar = lines.iter().position(|l| l.contains("push ")).unwrap();
    let last_notice = lines.iter().rposition(|l| l.contains("refused a")).unwrap();
    assert!(
        last_notice < first_bar,
        "a notice among the bars:\n{screen}"
    );
    let digests = layout.reachable().unwrap();
    let mut bars = 0;
    for d in digests.iter().filter(|d| **d != img.digest) {
        let prefix = format!("push {}", d.short());
        let n = lines.iter().filter(|l| l.contains(&prefix)).count();
        assert_eq!(n, 1, "one bar for {prefix}:\n{screen}");
        bars += 1;
    }
    assert_eq!(bars, 4, "{screen}");
    assert!(
        !lines.iter().any(|l| l.contains(" 0 B/")),
        "a stale bar at 0 B:\n{screen}"
    );
    let joined: String = screen.lines().map(str::trim_end).collect();
    assert!(
        joined.contains(&format!("{}/{REPO}@{}", reg.host(), img.digest)),
        "the reference is printed:\n{screen}"
    );
}
