//! zstd layers (`build --compression zstd`), end to end: the media type,
//! byte-identical digests from two builds, skopeo decoding every layer to
//! its diff ID, and the release starting under runc from skopeo's plain-tar
//! copy (Debian's umoci 0.4.7 does not unpack zstd layers).

use std::path::Path;
use std::process::Command;

use crate::support::*;
use serde_json::Value;

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn build(cache: &Path, layout: &Path, release: &Path, compression: &str) -> Value {
    json(
        bin(cache)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--release"])
            .arg(release)
            .arg("--base")
            .arg(format!("oci:{}:runner", base_layout().display()))
            .args(["--tag", "v1", "--compression", compression, "--layout"])
            .arg(layout)
            .arg("--json"),
    )
}

fn manifest_of(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn blob_size(layout: &Path, digest: &str) -> u64 {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::metadata(layout.join("blobs/sha256").join(hex))
        .unwrap()
        .len()
}

#[test]
fn a_zstd_image_is_deterministic_is_decoded_by_skopeo_and_the_release_starts_from_it() {
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(&[]);
    // A copy elsewhere, with other inodes and mtimes: same bytes expected.
    let copy = work.path().join("copy/guildhall");
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
    let one = work.path().join("one");
    let two = work.path().join("two");
    let a = build(&work.path().join("c1"), &one, &release, "zstd");
    let b = build(&work.path().join("c2"), &two, &copy, "zstd:3");
    assert_eq!(a["digest"], b["digest"], "same release, same zstd image");
    fsck_ok(&one);

    // The release's layers are zstd; the base's keep their gzip.
    let m = manifest_of(&one);
    let layers = m["layers"].as_array().unwrap();
    let base_layers = a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] == "base")
        .count();
    assert!(base_layers >= 1 && base_layers < layers.len());
    for (i, l) in layers.iter().enumerate() {
        let t = l["mediaType"].as_str().unwrap();
        if i < base_layers {
            assert!(t.ends_with("gzip"), "base layer {i}: {t}");
        } else {
            assert_eq!(t, ZSTD, "release layer {i}");
        }
    }

    // An image with zstd layers is a base like any other: its layers are
    // kept as they are, and preflight reads the base's files through them
    // (ERTS's libraries are checked against that tree).
    let stacked = work.path().join("stacked");
    let out = bin(&work.path().join("c1"))
        .args(["-v", "build", "--release"])
        .arg(&release)
        .arg("--base")
        .arg(format!("oci:{}:v1", one.display()))
        .args(["--tag", "v2", "--layout"])
        .arg(&stacked)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a zstd base: {err}");
    assert!(err.contains("preflight"), "preflight ran: {err}");
    let sm = manifest_of(&stacked);
    let stacked_layers = sm["layers"].as_array().unwrap();
    assert_eq!(&stacked_layers[..layers.len()], &layers[..]);
    fsck_ok(&stacked);

    // The same release gzip-compressed: zstd (level 3) is not bigger.
    let gz = work.path().join("gz");
    let g = build(&work.path().join("c3"), &gz, &release, "gzip");
    assert_ne!(g["digest"], a["digest"]);
    let gm = manifest_of(&gz);
    let total = |layout: &Path, m: &Value| -> u64 {
        m["layers"].as_array().unwrap()[base_layers..]
            .iter()
            .map(|l| blob_size(layout, l["digest"].as_str().unwrap()))
            .sum()
    };
    let (zs, gs) = (total(&one, &m), total(&gz, &gm));
    assert!(zs <= gs, "zstd {zs} bytes, gzip {gs} bytes");

    // skopeo (containers/image) decodes every layer; each decodes to the
    // diff ID the config names.
    let dir = work.path().join("skopeo-dir");
    let out = Command::new("skopeo")
        .args(["copy", "--dest-decompress"])
        .arg(format!("oci:{}:v1", one.display()))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(
        &std::fs::read(dir.join(config_digest.strip_prefix("sha256:").unwrap())).unwrap(),
    )
    .unwrap();
    for id in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let hex = id.as_str().unwrap().strip_prefix("sha256:").unwrap();
        let p = dir.join(hex);
        assert!(p.is_file(), "skopeo wrote the decompressed layer {hex}");
        let sum = Command::new("sha256sum").arg(&p).output().unwrap();
        assert!(String::from_utf8_lossy(&sum.stdout).starts_with(hex));
    }

    // Debian's umoci (0.4.7) refuses zstd layers ("blob is not correct
    // mediatype") and podman is not installed here: the layers skopeo
    // decoded become a plain-tar layout (same config), which umoci unpacks
    // and runc starts.
    let plain = plain_layout_from_skopeo_dir(&dir, work.path(), config_digest);
    let port = free_port();
    let running = Running::start_restricted(&plain, "v1", &format!("gi-zstd-{port}"), port);
    let (status, body) = http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "body: {body}");
    assert!(body.starts_with("ok"), "{body}");
}

/// An OCI layout of plain tar layers from `skopeo copy --dest-decompress`'s
/// `dir:` (its `manifest.json`, blobs named by hex digest).
fn plain_layout_from_skopeo_dir(
    dir: &Path,
    work: &Path,
    config_digest: &str,
) -> std::path::PathBuf {
    let out = work.join("plain");
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let copy = |digest: &str| -> u64 {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::copy(dir.join(hex), blobs.join(hex)).unwrap()
    };
    let config_size = copy(config_digest);
    let layers: Vec<Value> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            let size = copy(d);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers,
    }))
    .unwrap();
    let sum = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&manifest)?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)[..64].to_owned();
    std::fs::write(blobs.join(&hex), &manifest).unwrap();
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    out
}

#[test]
fn a_bad_compression_is_refused_before_anything_is_built() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let out = bin(work.path())
        .args(["build", "--release"])
        .arg(release_dir(&[]))
        .args(["--compression", "zstd:99", "--layout"])
        .arg(&layout)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--compression") && err.contains("zstd:1-22"),
        "{err}"
    );
    assert!(!layout.join("index.json").exists());
}
