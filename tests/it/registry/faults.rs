//! Faults a real registry cannot produce on cue, against the in-process
//! FAKE (lying) registry `FaultyRegistry`.

use std::time::{Duration, Instant};

use guildhall_image::error::ExitCode;
use guildhall_image::image::RegistryRef;
use guildhall_image::progress::Progress;
use guildhall_image::registry::{BlobHow, ClientOptions, PushOptions, RegistryError};

use crate::support::faulty_registry::{Faults, FaultyRegistry};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_then_the_push_goes_on() {
    let fake = FaultyRegistry::start(Faults {
        throttle_heads: 2,
        retry_after: "1".into(),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[5000], 1);
    let c = client(anonymous(), fast_options());
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let started = Instant::now();
    let report = push_v1(&c, &layout, &img, &target, &PushOptions::default())
        .await
        .expect("the push succeeds after the 429s");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(report.uploaded(), 2);
    let heads: Vec<u16> = fake
        .log()
        .iter()
        .filter(|l| l.method == "HEAD")
        .map(|l| l.status)
        .collect();
    assert_eq!(heads.iter().filter(|s| **s == 429).count(), 2, "{heads:?}");
    assert_eq!(heads.len(), 4, "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_patch_resumes_from_the_range_the_server_reports() {
    let keep = MIB as usize + 12_345;
    let fake = FaultyRegistry::start(Faults {
        drop_patch: Some((1, keep)),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[6 * MIB], 2);
    let c = client(
        anonymous(),
        ClientOptions {
            chunk_size: 2 * MIB,
            monolithic_max: 2 * MIB,
            ..fast_options()
        },
    );
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let report = push_v1(&c, &layout, &img, &target, &PushOptions::default())
        .await
        .expect("the push resumes and succeeds");
    let log = fake.log();
    let dropped = log
        .iter()
        .position(|l| l.method == "PATCH" && l.status == 0)
        .expect("a dropped PATCH");
    let after = &log[dropped + 1..];
    assert_eq!(
        after[0].method, "GET",
        "the upload status is asked: {after:#?}"
    );
    let resumed_at = 2 * MIB as usize + keep;
    assert_eq!(
        after[1].content_range.as_deref(),
        Some(format!("{resumed_at}-{}", resumed_at + 2 * MIB as usize - 1).as_str()),
        "{after:#?}"
    );
    let layer = report.blobs.iter().find(|b| b.size > 6 * MIB).unwrap();
    let BlobHow::Uploaded { bytes, .. } = layer.how else {
        panic!("{:?}", layer.how)
    };
    assert!(bytes < layer.size + 2 * MIB, "sent {bytes}");
    let stored = fake
        .blob("team/app", &layer.digest)
        .expect("the blob is stored");
    assert_eq!(
        stored,
        std::fs::read(layout.blob_path(&layer.digest)).unwrap()
    );
    assert!(fake.manifest("team/app", "v1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_answer_to_a_mount_uploads_through_the_session_it_opened() {
    let fake = FaultyRegistry::start(Faults {
        mount_202: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3000, 4000], 3);
    let c = client(anonymous(), fast_options());
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let opts = PushOptions {
        mount_from: vec!["base/runner".into()],
        ..PushOptions::default()
    };
    let report = push_v1(&c, &layout, &img, &target, &opts)
        .await
        .expect("a 202 on mount is not an error");
    assert_eq!(report.uploaded(), 3);
    let posts: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|l| l.method == "POST")
        .collect();
    assert_eq!(posts.len(), 3, "one POST per blob: {posts:#?}");
    assert!(
        posts
            .iter()
            .all(|p| p.query.contains("mount=") && p.query.contains("from=base%2Frunner"))
    );
    for b in &report.blobs {
        assert!(fake.blob("team/app", &b.digest).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_or_garbage_from_the_server_is_a_protocol_error_naming_the_url() {
    let fake = FaultyRegistry::start(Faults {
        garbage_manifests: true,
        ..Faults::default()
    });
    let c = client(anonymous(), fast_options());
    let r: RegistryRef = format!("{}/team/app:v1", fake.host()).parse().unwrap();
    let e = within(60, "the fetch", c.fetch_manifest(&r))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Protocol { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("http://{}/v2/team/app/manifests/v1", fake.host())),
        "{msg}"
    );
    assert!(msg.contains("200") && msg.contains("not JSON"), "{msg}");

    let fake = FaultyRegistry::start(Faults {
        html_everywhere: Some(502),
        ..Faults::default()
    });
    let c = client(
        anonymous(),
        ClientOptions {
            max_attempts: 3,
            ..fast_options()
        },
    );
    let r: RegistryRef = format!("{}/team/app:v1", fake.host()).parse().unwrap();
    let e = within(60, "the fetch", c.fetch_manifest(&r))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("502") && msg.contains("HTML page") && msg.contains("3 attempt"),
        "{msg}"
    );
    assert_eq!(fake.log().len(), 3);
    assert_eq!(e.exit_code(), ExitCode::Registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_the_registry_rejects_shows_its_code_and_message() {
    let fake = FaultyRegistry::start(Faults {
        reject_manifests: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3000], 4);
    let c = client(anonymous(), fast_options());
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let e = push_v1(&c, &layout, &img, &target, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Rejected { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("MANIFEST_INVALID: manifest invalid"), "{msg}");
    assert!(
        msg.contains(&img.digest.to_string()) && msg.contains("team/app:v1"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), ExitCode::Registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_download_redirected_to_another_host_does_not_carry_the_credentials() {
    let storage = FaultyRegistry::start(Faults::default());
    let fake = FaultyRegistry::start(Faults {
        require_basic: true,
        redirect_blobs_to: Some(format!("http://{}", storage.host())),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[4000], 5);
    let manifest = layout.read_blob(&img.digest).unwrap();
    for d in layout.reachable().unwrap() {
        if d != img.digest {
            storage.put_blob("anything", &layout.read_blob(&d).unwrap());
        }
    }
    fake.put_manifest("team/app", "v1", &img.media_type, &manifest);
    let creds: std::sync::Arc<dyn guildhall_image::credentials::CredentialSource> =
        std::sync::Arc::new(guildhall_image::credentials::Chain::new().with(
            guildhall_image::credentials::ForHost::new(
                &fake.host(),
                "u".into(),
                guildhall_image::credentials::Secret::new("p"),
                "test",
            ),
        ));
    let c = client(creds, fast_options());
    let r: RegistryRef = format!("{}/team/app:v1", fake.host()).parse().unwrap();
    let cache = guildhall_image::layout::Layout::create_or_open(tmp.path().join("cache")).unwrap();
    let pulled = within(
        60,
        "the pull",
        c.pull(
            &r,
            &guildhall_image::image::Platform::linux("amd64"),
            &cache,
            &Progress::hidden(),
        ),
    )
    .await
    .expect("the pull follows the redirects");
    assert_eq!(pulled.digest, img.digest);
    assert_eq!(pulled.blobs_fetched, 2);
    let redirected: Vec<_> = fake.log().into_iter().filter(|l| l.status == 307).collect();
    assert_eq!(redirected.len(), 2);
    assert!(
        redirected.iter().all(|l| l.authorization),
        "{redirected:#?}"
    );
    let at_storage = storage.log();
    assert_eq!(at_storage.len(), 2, "{at_storage:#?}");
    assert!(
        at_storage.iter().all(|l| !l.authorization),
        "{at_storage:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_given_up_on_after_the_idle_timeout() {
    // Connections land in the backlog and nobody ever reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let c = client(
        anonymous(),
        ClientOptions {
            read_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            max_attempts: 2,
            ..fast_options()
        },
    );
    let r: RegistryRef = format!("{host}/team/app:v1").parse().unwrap();
    let started = Instant::now();
    let e = within(60, "the fetch", c.fetch_manifest(&r))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(e, RegistryError::Stalled { attempts: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains(&host), "{e}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_bytes_do_not_match_its_digest_is_refused_and_not_stored() {
    use guildhall_image::image::{Descriptor, Digest, Platform, media, mutate};
    use guildhall_image::layout::Layout;
    let fake = FaultyRegistry::start(Faults {
        corrupt_blobs: true,
        ..Faults::default()
    });
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = vec![7u8; 4096];
    fake.put_blob("team/base", config);
    fake.put_blob("team/base", &layer);
    let manifest = mutate::manifest(
        Descriptor::of(media::OCI_CONFIG, config),
        &[Descriptor::of(media::OCI_LAYER_GZIP, &layer)],
    )
    .to_bytes();
    fake.put_manifest("team/base", "v1", media::OCI_MANIFEST, &manifest);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create_or_open(dir.path()).unwrap();
    let c = client(anonymous(), fast_options());
    let r: RegistryRef = format!("{}/team/base:v1", fake.host()).parse().unwrap();
    let e = within(
        60,
        "the pull",
        c.pull(&r, &Platform::linux("amd64"), &layout, &Progress::hidden()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Input, "{e}");
    assert!(e.to_string().contains("mismatch"), "{e}");
    assert!(
        !layout.has_blob(&Digest::of(&layer)) && !layout.has_blob(&Digest::of(config)),
        "nothing unverified is stored"
    );
    assert!(layout.fsck(true).unwrap().problems.is_empty());
}

fn push_opts() -> PushOptions {
    PushOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_an_upload_location_to_another_host_and_port() {
    let fake = FaultyRegistry::start(Faults {
        require_basic: true,
        upload_alias: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3 * MIB, 4000], 21);
    let creds: std::sync::Arc<dyn guildhall_image::credentials::CredentialSource> =
        std::sync::Arc::new(guildhall_image::credentials::Chain::new().with(
            guildhall_image::credentials::ForHost::new(
                &fake.host(),
                "u".into(),
                guildhall_image::credentials::Secret::new("p"),
                "test",
            ),
        ));
    let c = client(
        creds,
        ClientOptions {
            chunk_size: MIB,
            monolithic_max: MIB,
            ..fast_options()
        },
    );
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let report = push_v1(&c, &layout, &img, &target, &push_opts())
        .await
        .expect("the upload goes on at the other port, without credentials");
    assert_eq!(report.uploaded(), 3);
    let log = fake.log();
    let elsewhere: Vec<_> = log.iter().filter(|l| l.on_alias).collect();
    assert!(!elsewhere.is_empty(), "nothing went to the other port");
    assert!(
        elsewhere.iter().all(|l| !l.authorization),
        "credentials went to another host:port: {elsewhere:#?}"
    );
    assert!(
        log.iter()
            .filter(|l| !l.on_alias && l.status != 401)
            .all(|l| l.authorization),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_token_and_error_bodies_that_stall_after_the_headers_end_in_bounded_time() {
    let quick = ClientOptions {
        read_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_secs(2),
        max_attempts: 2,
        ..fast_options()
    };
    for (what, faults) in [
        (
            "manifest",
            Faults {
                stall_manifest_body: true,
                ..Faults::default()
            },
        ),
        (
            "error",
            Faults {
                stall_error_body: true,
                ..Faults::default()
            },
        ),
        (
            "token",
            Faults {
                token_response: Some(r#"{"token":"t0k3n","expires_in":300}"#.into()),
                stall_token_body: true,
                ..Faults::default()
            },
        ),
    ] {
        let fake = FaultyRegistry::start(faults);
        fake.put_manifest("team/app", "v1", "application/vnd.oci.image.manifest.v1+json", br#"{"schemaVersion":2,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#);
        let reference = if what == "error" { "missing" } else { "v1" };
        let c = client(anonymous(), quick.clone());
        let r: RegistryRef = format!("{}/team/app:{reference}", fake.host())
            .parse()
            .unwrap();
        let started = Instant::now();
        let e = within(60, "the fetch", c.fetch_manifest(&r))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{what}: {took:?}");
        let msg = e.to_string();
        match what {
            "manifest" => assert!(msg.contains("body"), "{what}: {msg}"),
            "error" => assert!(
                msg.contains("not found") && msg.contains("could not be read"),
                "{what}: {msg}"
            ),
            _ => assert!(msg.contains("token"), "{what}: {msg}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_range_never_advances_fails_after_a_bounded_number_of_requests() {
    let fake = FaultyRegistry::start(Faults {
        stuck_patches: true,
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3 * MIB], 22);
    let c = client(
        anonymous(),
        ClientOptions {
            chunk_size: MIB,
            monolithic_max: MIB,
            ..fast_options()
        },
    );
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let e = push_v1(&c, &layout, &img, &target, &push_opts())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::BlobUpload { .. }), "{e:?}");
    assert!(e.to_string().contains("no progress"), "{e}");
    let patches = fake.log().iter().filter(|l| l.method == "PATCH").count();
    assert!(patches <= 5, "{patches} PATCHes");
    assert!(fake.manifest("team/app", "v1").is_none());
}

#[test]
fn chunk_sizes_below_one_mebibyte_are_refused_by_the_client() {
    let e = guildhall_image::registry::Client::new(
        anonymous(),
        ClientOptions {
            chunk_size: 1,
            ..fast_options()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("1 MiB"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_or_absurd_expires_in_is_saturated_not_a_panic() {
    for token in [
        r#"{"token":"t0k3n","expires_in":18446744073709551615}"#,
        r#"{"token":"t0k3n","expires_in":1e300}"#,
        r#"{"token":"t0k3n","expires_in":-5}"#,
        r#"{"token":"t0k3n","expires_in":"soon"}"#,
    ] {
        let fake = FaultyRegistry::start(Faults {
            token_response: Some(token.into()),
            ..Faults::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[3000], 23);
        let c = client(anonymous(), fast_options());
        let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
        let pushed = tokio::spawn(async move {
            push_v1(&c, &layout, &img, &target, &PushOptions::default())
                .await
                .map(|r| r.digest)
        });
        let r = within(60, "the push", pushed).await;
        assert!(r.is_ok(), "{token}: the client panicked: {r:?}");
        r.unwrap().unwrap_or_else(|e| panic!("{token}: {e}"));
        assert!(fake.manifest("team/app", "v1").is_some(), "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_status_that_counts_bytes_is_read_the_other_way_after_one_416() {
    let fake = FaultyRegistry::start(Faults {
        status_range_counts: true,
        drop_patch: Some((1, MIB as usize + 777)),
        ..Faults::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[6 * MIB], 24);
    let c = client(
        anonymous(),
        ClientOptions {
            chunk_size: 2 * MIB,
            monolithic_max: 2 * MIB,
            ..fast_options()
        },
    );
    let target = RegistryRef::parse_repository(&format!("{}/team/app", fake.host())).unwrap();
    let report = push_v1(&c, &layout, &img, &target, &push_opts())
        .await
        .expect("the push resumes at the count");
    let log = fake.log();
    let refused = log.iter().filter(|l| l.status == 416).count();
    assert_eq!(refused, 1, "one 416, then the other reading: {log:#?}");
    let layer = report.blobs.iter().find(|b| b.size > 6 * MIB).unwrap();
    assert_eq!(
        fake.blob("team/app", &layer.digest).unwrap(),
        std::fs::read(layout.blob_path(&layer.digest)).unwrap()
    );
}
