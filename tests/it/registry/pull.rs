//! Pulling from a real registry.

use guildhall_image::error::ExitCode;
use guildhall_image::image::{Digest, Platform, RegistryRef};
use guildhall_image::layout::Layout;
use guildhall_image::progress::Progress;
use guildhall_image::registry::{PushOptions, RegistryError};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_pull_of_the_base_stores_every_blob_verified_and_a_second_pull_fetches_nothing()
 {
    let base = base_layout();
    let reg = Registry::start(Mode::Anonymous);
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:runner", base.display()),
        &format!("docker://{}/base/debian:runner", reg.host),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/base/debian:runner", reg.host),
    ]);
    let c = client(anonymous(), fast_options());
    let r: RegistryRef = format!("{}/base/debian:runner", reg.host).parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::create_or_open(tmp.path().join("cache")).unwrap();
    let pulled = within(
        60,
        "the pull",
        c.pull(&r, &Platform::host(), &layout, &Progress::hidden()),
    )
    .await
    .expect("the pull succeeds");
    assert_eq!(pulled.digest, Digest::of(&raw.stdout));
    assert_eq!(pulled.digest, layout_digest(&base, "runner"));
    assert_eq!(pulled.index_digest, None);
    assert_eq!(pulled.blobs_fetched, 3, "config and two layers");
    layout
        .set_tags(&pulled.media_type, &pulled.digest, &["runner".into()])
        .unwrap();
    let fsck = layout.fsck(true).unwrap();
    assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    assert_eq!(fsck.blobs_checked, 4);

    let again = within(
        30,
        "the second pull",
        c.pull(&r, &Platform::host(), &layout, &Progress::hidden()),
    )
    .await
    .unwrap();
    assert_eq!(again.digest, pulled.digest);
    assert_eq!(again.blobs_fetched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_or_a_missing_platform_is_bad_input_that_says_what_there_is() {
    let reg = Registry::start(Mode::Basic);
    let tmp = tempfile::tempdir().unwrap();
    let (layout, img) = make_image(&tmp.path().join("l"), "v1", &[1000], 1);
    let c = client(reg.creds(PASSWORD), fast_options());
    let target = RegistryRef::parse_repository(&format!("{}/team/app", reg.host)).unwrap();
    push_v1(&c, &layout, &img, &target, &PushOptions::default())
        .await
        .unwrap();

    let cache = Layout::create_or_open(tmp.path().join("cache")).unwrap();
    let missing: RegistryRef = format!("{}/team/app:nope", reg.host).parse().unwrap();
    let e = c
        .pull(&missing, &Platform::host(), &cache, &Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ManifestUnknown { .. }), "{e:?}");
    assert_eq!(e.exit_code(), ExitCode::Input);
    assert!(e.to_string().contains("team/app:nope"), "{e}");

    let v1: RegistryRef = format!("{}/team/app:v1", reg.host).parse().unwrap();
    let e = c
        .pull(
            &v1,
            &"linux/s390x".parse().unwrap(),
            &cache,
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::PlatformNotFound { .. }), "{e:?}");
    assert_eq!(e.exit_code(), ExitCode::Input);
    assert!(e.to_string().contains("linux/amd64"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_pushed_whole_and_pulled_for_one_platform() {
    let reg = Registry::start(Mode::Anonymous);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    let (layout, amd) = make_image(&dir, "amd", &[2000, 3000], 2);
    let (_, arm) = make_image_for(&dir, "arm", &[4000], 3, "arm64");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": guildhall_image::image::media::OCI_INDEX,
        "manifests": [
            {"mediaType": amd.media_type, "digest": amd.digest, "size": amd.size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": arm.media_type, "digest": arm.digest, "size": arm.size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    });
    let (idx, _) = layout
        .write_blob(&serde_json::to_vec(&index).unwrap())
        .unwrap();
    layout
        .set_tags(
            guildhall_image::image::media::OCI_INDEX,
            &idx,
            &["multi".into()],
        )
        .unwrap();
    let img = layout.resolve(Some("multi")).unwrap();
    let c = client(anonymous(), fast_options());
    let target = RegistryRef::parse_repository(&format!("{}/team/multi", reg.host)).unwrap();
    let report = within(
        30,
        "the push",
        push_image(
            &c,
            &layout,
            &img,
            &target,
            &["1.0".into()],
            &PushOptions::default(),
            &Progress::hidden(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.digest, idx);
    assert_eq!(report.blobs.len(), 5, "two configs, three layers");

    let r: RegistryRef = format!("{}/team/multi:1.0", reg.host).parse().unwrap();
    let cache = Layout::create_or_open(tmp.path().join("cache")).unwrap();
    let pulled = c
        .pull(
            &r,
            &"linux/arm64".parse().unwrap(),
            &cache,
            &Progress::hidden(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.digest, arm.digest);
    assert_eq!(pulled.index_digest, Some(idx));
    assert_eq!(pulled.blobs_fetched, 2);

    let e = c
        .pull(
            &r,
            &"linux/ppc64le".parse().unwrap(),
            &cache,
            &Progress::hidden(),
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("linux/amd64") && msg.contains("linux/arm64/v8"),
        "{msg}"
    );
}
