//! Debian packages into layers, against Debian's real archive (cached by
//! hash between runs, see `tests/support/debian-archive.sh`), the
//! debootstrapped base, apt's own results, syft, and a lying mirror double.

// Errors carry their context (URLs, hashes, packages) as fields; they are
// rare and not on a hot path, so their size does not matter.
#![allow(clippy::result_large_err)]
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::support::debian::*;
use crate::support::mirror_double::{MirrorDouble, Tamper, asked, get_bytes};
use crate::support::{base_layout, root};
use guildhall_image::debian::{
    self, Archive, BaseFacts, Cache, DebianError, Fetch, LayerRequest, Lock, LockMode,
    PrepareOptions, Prepared, Request, Sources, release::Release,
};
use guildhall_image::layer::LayerOptions;

fn requests(names: &[&str]) -> Vec<Request> {
    names.iter().map(|n| Request::parse(n).unwrap()).collect()
}

fn bare_base() -> BaseFacts {
    BaseFacts::from_dir(&rootfs("bare")).expect("the debootstrapped base reads")
}

/// Resolve (or reuse `lock`) and fetch.
#[allow(clippy::too_many_arguments)]
fn prepare(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    reqs: &[Request],
    exclude: &[String],
    base: &BaseFacts,
    base_id: &str,
    lock: Option<&Lock>,
    mode: LockMode,
) -> Result<Prepared, DebianError> {
    debian::prepare(
        fetch,
        &PrepareOptions {
            sources,
            requests: reqs,
            exclude,
            base,
            base_id,
            lock,
            lock_path: Path::new("guildhall-image.lock"),
            mode,
            cache,
            now: SystemTime::now(),
        },
    )
}

fn layer(
    p: &Prepared,
    base: &BaseFacts,
    cache: &Cache,
    standalone: bool,
    slim: bool,
) -> (Vec<u8>, debian::LayerReport) {
    let (_, bytes, report) = debian::write_layer(
        &LayerRequest {
            debs: &p.debs,
            base,
            standalone,
            slim,
            architecture: "amd64",
            cache,
            options: &LayerOptions::default(),
            progress: None,
        },
        Vec::new(),
    )
    .expect("the layer is written");
    (bytes, report)
}

fn sha256_hex(b: &[u8]) -> String {
    debian::Sha256::of(b).hex()
}

#[test]
fn bookworms_real_inrelease_verifies_with_the_built_in_keys_and_the_security_pocket_has_a_valid_until()
 {
    let f = http();
    let now = SystemTime::now();
    let keys = debian::Keyring::debian();
    let url = "http://deb.debian.org/debian/dists/bookworm/InRelease";
    let r = Release::verify(&get_bytes(&f, url), url, "bookworm", &keys, now).expect("it verifies");
    assert_eq!(r.codename, "bookworm");
    assert!(r.file("main/binary-amd64/Packages.xz").is_some());
    assert!(
        r.signatures
            .iter()
            .any(|s| s.user_id.contains("(12/bookworm)")),
        "{:?}",
        r.signatures
    );
    let url = "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease";
    let s = Release::verify(&get_bytes(&f, url), url, "bookworm-security", &keys, now)
        .expect("it verifies");
    assert!(s.valid_until.is_some_and(|v| v > s.date));
    // The same file is not the InRelease of another suite.
    let e = Release::verify(&get_bytes(&f, url), url, "bookworm", &keys, now).unwrap_err();
    assert!(e.to_string().contains("not of \"bookworm\""), "{e}");
}

#[test]
fn the_ca_store_is_byte_for_byte_what_apt_and_update_ca_certificates_leave() {
    // apt installed these exact versions into the runner root fs.
    let runner = rootfs("runner");
    let status = runner.join("var/lib/dpkg/status");
    let pins: Vec<String> = ["libssl3", "openssl", "ca-certificates"]
        .iter()
        .map(|p| format!("{p}={}", status_version(&status, p)))
        .collect();
    let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
    let cache = cache();
    let f = http();
    let base = bare_base();
    let sources = Sources::debian("bookworm", "amd64");
    let p = prepare(
        &f,
        &cache,
        &sources,
        &requests(&pins),
        &[],
        &base,
        "bare",
        None,
        LockMode::Update,
    )
    .expect("the pinned versions resolve");
    let (gz, report) = layer(&p, &base, &cache, false, false);
    let entries = read_layer(&gz, &|p| p.starts_with("etc/"));
    let get = |p: &str| {
        entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} not in the layer"))
    };
    let apt_bundle = std::fs::read(runner.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert_eq!(
        get("etc/ssl/certs/ca-certificates.crt").data,
        apt_bundle,
        "the bundle differs from apt's"
    );
    assert_eq!(
        get("etc/ca-certificates.conf").data,
        std::fs::read(runner.join("etc/ca-certificates.conf")).unwrap()
    );
    let ours: BTreeMap<String, String> = entries
        .iter()
        .filter_map(|e| {
            let name = e.path.strip_prefix("etc/ssl/certs/")?;
            (!name.is_empty()).then(|| {
                let what = match &e.link {
                    Some(l) if e.kind == tar::EntryType::Symlink => format!("-> {l}"),
                    _ => "file".to_owned(),
                };
                (name.trim_end_matches('/').to_owned(), what)
            })
        })
        .collect();
    let apt = dir_listing(&runner.join("etc/ssl/certs"));
    assert_eq!(
        ours, apt,
        "the certificate links differ from update-ca-certificates'"
    );
    assert!(
        report
            .scripts
            .done
            .iter()
            .any(|d| d.starts_with("ca-certificates:"))
    );
}

#[test]
fn libssl3_and_ca_certificates_resolve_verify_and_unpack_onto_the_debootstrapped_base_keeping_merged_usr()
 {
    let cache = cache();
    let f = http();
    let base = bare_base();
    let sources = Sources::debian("bookworm", "amd64");
    let p = prepare(
        &f,
        &cache,
        &sources,
        &requests(&["libssl3", "ca-certificates"]),
        &[],
        &base,
        "bare",
        None,
        LockMode::Reuse,
    )
    .expect("libssl3 and ca-certificates resolve");
    // The same choice apt's tools make: the highest version across pockets.
    let apt = &warm()["PACKAGE_bookworm_libssl3"];
    let ours = p
        .lock
        .packages
        .iter()
        .find(|k| k.name == "libssl3")
        .expect("libssl3 locked");
    assert_eq!(
        format!("{} {} {}", ours.version, ours.sha256, ours.pocket),
        *apt
    );
    // The base's libc6 satisfies libssl3's Depends: not added again.
    assert!(
        !p.lock.packages.iter().any(|k| k.name == "libc6"),
        "{:?}",
        p.lock.packages
    );
    assert!(
        p.in_base
            .iter()
            .any(|b| b.satisfied_by.starts_with("libc6 "))
    );
    let (gz, report) = layer(&p, &base, &cache, false, false);
    assert!(report.packages.iter().any(|p| p.starts_with("libssl3 ")));
    let entries = read_layer(&gz, &|p| {
        p == "etc/ssl/certs/ca-certificates.crt" || p == "var/lib/dpkg/status"
    });
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    for link in [
        "bin", "bin/", "lib", "lib/", "lib64", "lib64/", "sbin", "sbin/",
    ] {
        assert!(
            !paths.contains(&link),
            "the layer would replace the base's {link} symlink"
        );
    }
    assert!(paths.contains(&"usr/lib/x86_64-linux-gnu/libcrypto.so.3"));
    let bundle = &entries
        .iter()
        .find(|e| e.path == "etc/ssl/certs/ca-certificates.crt")
        .unwrap()
        .data;
    let roots = String::from_utf8_lossy(bundle)
        .matches("-----BEGIN CERTIFICATE-----")
        .count();
    assert!(roots > 100, "{roots} certificates");
    // ISRG Root X1 (Let's Encrypt), under the hash OpenSSL gives it.
    let isrg = entries
        .iter()
        .find(|e| e.path == "etc/ssl/certs/4042bcee.0")
        .expect("ISRG's hash link");
    assert_eq!(isrg.link.as_deref(), Some("ISRG_Root_X1.pem"));
    assert!(entries.iter().all(|e| e.mtime == 1));
    // Owned by root as dpkg leaves them, modes as the packages ship them.
    assert!(
        entries.iter().all(|e| (e.uid, e.gid) == (0, 0)),
        "non-root owner"
    );
    let lib = entries
        .iter()
        .find(|e| e.path == "usr/lib/x86_64-linux-gnu/libcrypto.so.3")
        .unwrap();
    assert_eq!(lib.mode & 0o7777, 0o644);
    let status = String::from_utf8_lossy(
        &entries
            .iter()
            .find(|e| e.path == "var/lib/dpkg/status")
            .unwrap()
            .data,
    )
    .into_owned();
    assert!(
        status.contains("Package: libssl3\nStatus: install ok installed\n"),
        "status lacks libssl3"
    );
    assert!(
        status.contains("Package: libc6\n"),
        "the base's packages stay in status"
    );

    // Applied onto a copy of the base with a real tar: the symlinks survive,
    // openssl runs against the new libssl3, dpkg lists the packages.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    run_ok(Command::new("cp").arg("-a").arg(rootfs("bare")).arg(&root));
    let layer_file = tmp.path().join("layer.tar.gz");
    std::fs::write(&layer_file, &gz).unwrap();
    run_ok(
        Command::new("tar")
            .args(["-xzpf"])
            .arg(&layer_file)
            .arg("-C")
            .arg(&root),
    );
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new(target),
            "/{link}"
        );
    }
    let v = run_ok(
        Command::new("chroot")
            .arg(&root)
            .args(["/usr/bin/openssl", "version"]),
    );
    assert!(v.starts_with("OpenSSL 3.0."), "{v}");
    let l = run_ok(Command::new("chroot").arg(&root).args([
        "dpkg-query",
        "-W",
        "-f",
        "${Package} ${Version} ${Status}\n",
        "libssl3",
        "ca-certificates",
    ]));
    assert!(
        l.contains(&format!("libssl3 {} install ok installed", ours.version)),
        "{l}"
    );
    let files = run_ok(
        Command::new("chroot")
            .arg(&root)
            .args(["dpkg", "-L", "libssl3"]),
    );
    assert!(
        files.contains("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
        "{files}"
    );
}

#[test]
fn the_same_lock_gives_the_same_layer_bytes_and_with_a_warm_cache_no_network_at_all() {
    let cache = cache();
    let base = bare_base();
    let sources = Sources::debian("bookworm", "amd64");
    let reqs = requests(&["libssl3", "ca-certificates"]);
    let first = prepare(
        &http(),
        &cache,
        &sources,
        &reqs,
        &[],
        &base,
        "bare",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    let lock = Lock::parse(&first.lock.to_toml(), Path::new("l")).expect("the lock round-trips");
    let (a, _) = layer(&first, &base, &cache, false, false);

    let offline = NoNetwork::default();
    let start = Instant::now();
    let again = prepare(
        &offline,
        &cache,
        &sources,
        &reqs,
        &[],
        &base,
        "bare",
        Some(&lock),
        LockMode::Locked,
    )
    .expect("a locked build with a warm cache needs nothing from the network");
    let (b, _) = layer(&again, &base, &cache, false, false);
    let elapsed = start.elapsed();
    assert_eq!(offline.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(!again.resolved && !again.lock_changed);
    assert_eq!(
        sha256_hex(&a),
        sha256_hex(&b),
        "the layer changed between two builds of one lock"
    );
    eprintln!(
        "locked, warm cache: packages layer ({} bytes) in {elapsed:?}",
        b.len()
    );
    // What a build remembers the layer under: equal for equal inputs, not
    // for another base.
    let req = |p: &Prepared, base: &BaseFacts| {
        let opts = LayerOptions::default();
        debian::layer_fingerprint(&LayerRequest {
            debs: &p.debs,
            base,
            standalone: false,
            slim: false,
            architecture: "amd64",
            cache: &cache,
            options: &opts,
            progress: None,
        })
    };
    let start = Instant::now();
    assert_eq!(req(&first, &base), req(&again, &base));
    eprintln!("layer fingerprint in {:?}", start.elapsed());
    assert_ne!(req(&first, &base), req(&first, &BaseFacts::empty()));

    // Unpacked data.tars dropped: decompressed again, same bytes.
    let fresh = tempfile::tempdir().unwrap();
    let cold = private_cache(fresh.path());
    let again = prepare(
        &offline,
        &cold,
        &sources,
        &reqs,
        &[],
        &base,
        "bare",
        Some(&lock),
        LockMode::Locked,
    )
    .unwrap();
    let (c, _) = layer(&again, &base, &cold, false, false);
    assert_eq!(sha256_hex(&a), sha256_hex(&c));
}

#[test]
fn locked_mode_refuses_a_changed_request_and_a_package_gone_from_the_mirror_names_the_snapshot() {
    let cache = cache();
    let base = bare_base();
    let sources = Sources::debian("bookworm", "amd64");
    let p = prepare(
        &http(),
        &cache,
        &sources,
        &requests(&["libssl3"]),
        &[],
        &base,
        "bare",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    let e = prepare(
        &NoNetwork::default(),
        &cache,
        &sources,
        &requests(&["libssl3", "tzdata"]),
        &[],
        &base,
        "bare",
        Some(&p.lock),
        LockMode::Locked,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is out of date") && e.contains("tzdata"), "{e}");
    let e = prepare(
        &NoNetwork::default(),
        &cache,
        &sources,
        &requests(&["libssl3"]),
        &[],
        &base,
        "other-base",
        Some(&p.lock),
        LockMode::Locked,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("the base changed"), "{e}");

    let mut gone = p.lock.clone();
    let k = &mut gone.packages[0];
    k.filename = format!("pool/main/o/openssl/{}_0.0-gone_amd64.deb", k.name);
    k.sha256 = "ab".repeat(32);
    let fresh = tempfile::tempdir().unwrap();
    let e = prepare(
        &http(),
        &Cache::new(fresh.path()),
        &sources,
        &requests(&["libssl3"]),
        &[],
        &base,
        "bare",
        Some(&gone),
        LockMode::Locked,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DebianError::Gone { .. }), "{msg}");
    assert!(
        msg.contains("--debian-mirror https://snapshot.debian.org/archive/debian"),
        "{msg}"
    );
    assert!(
        msg.contains("https://snapshot.debian.org/binary/libssl3/"),
        "{msg}"
    );
}

fn through(double: &MirrorDouble) -> Sources {
    Sources {
        mirror: double.mirror.clone(),
        security_mirror: double.security_mirror.clone(),
        ..Sources::debian("bookworm", "amd64")
    }
}

#[test]
fn a_faithful_mirror_double_serves_a_verifiable_archive() {
    let double = MirrorDouble::start(Tamper::Nothing, Arc::new(http()));
    let tmp = tempfile::tempdir().unwrap();
    let a = Archive::open(
        &http(),
        &private_cache(tmp.path()),
        &through(&double),
        SystemTime::now(),
    )
    .expect("it verifies");
    assert!(!a.named("libssl3").is_empty());
    assert!(asked(
        &double.requests,
        "/debian-security/dists/bookworm-security/InRelease"
    ));
}

#[test]
fn an_inrelease_whose_signed_text_was_altered_is_refused() {
    let double = MirrorDouble::start(Tamper::BreakSignature, Arc::new(http()));
    let tmp = tempfile::tempdir().unwrap();
    let e = Archive::open(
        &http(),
        &private_cache(tmp.path()),
        &through(&double),
        SystemTime::now(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DebianError::Signature { .. }), "{msg}");
    assert!(
        msg.contains("does not verify") && msg.contains("127.0.0.1"),
        "{msg}"
    );
}

#[test]
fn an_inrelease_without_its_signature_is_refused() {
    let double = MirrorDouble::start(Tamper::StripSignature, Arc::new(http()));
    let tmp = tempfile::tempdir().unwrap();
    let e = Archive::open(
        &http(),
        &private_cache(tmp.path()),
        &through(&double),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("it is not signed"), "{e}");
}

#[test]
fn a_replayed_security_inrelease_past_its_valid_until_or_before_its_date_is_refused() {
    let f = http();
    let url = "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease";
    let bytes = get_bytes(&f, url);
    let r = Release::verify(
        &bytes,
        url,
        "bookworm-security",
        &debian::Keyring::debian(),
        SystemTime::now(),
    )
    .unwrap();
    let double = MirrorDouble::start(
        Tamper::Replay {
            pocket: "bookworm-security".into(),
            bytes,
        },
        Arc::new(http()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let cache = private_cache(tmp.path());
    let after = SystemTime::UNIX_EPOCH + Duration::from_secs(r.valid_until.unwrap() + 3600);
    let e = Archive::open(&f, &cache, &through(&double), after).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DebianError::Expired { .. }), "{msg}");
    assert!(
        msg.contains("bookworm-security/InRelease") && msg.contains("expired at"),
        "{msg}"
    );
    let before = SystemTime::UNIX_EPOCH + Duration::from_secs(r.date - 86_400);
    let e = Archive::open(&f, &cache, &through(&double), before).unwrap_err();
    assert!(matches!(e, DebianError::NotYetValid { .. }), "{e}");
}

#[test]
fn a_deb_with_one_byte_flipped_is_refused_naming_the_package_and_where_it_came_from() {
    let base = bare_base();
    let sources = Sources::debian("bookworm", "amd64");
    let p = prepare(
        &http(),
        &cache(),
        &sources,
        &requests(&["netbase"]),
        &[],
        &base,
        "bare",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    let double = MirrorDouble::start(Tamper::FlipDebByte, Arc::new(http()));
    let tmp = tempfile::tempdir().unwrap();
    let cold = Cache::new(tmp.path());
    let e = debian::download(&http(), &cold, &through(&double), &p.lock).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DebianError::HashMismatch { .. }), "{msg}");
    let netbase = &p.lock.packages[0];
    assert!(
        msg.contains(&format!("refusing netbase {}", netbase.version)),
        "{msg}"
    );
    assert!(
        msg.contains("127.0.0.1") && msg.contains(&netbase.filename),
        "{msg}"
    );
    assert!(msg.contains(&netbase.sha256), "{msg}");
    assert!(
        std::fs::read_dir(tmp.path().join("sha256")).map_or(true, |mut d| d.next().is_none()),
        "nothing cached"
    );
}

#[test]
fn trixie_resolves_libssl3t64_also_when_asked_for_libssl3_and_contents_names_the_package_of_libcrypto()
 {
    let cache = cache();
    let f = http();
    let now = SystemTime::now();
    let trixie = Sources::debian("trixie", "amd64");
    let a = Archive::open(&f, &cache, &trixie, now).expect("trixie verifies");
    let opts = |reqs: &[Request]| {
        debian::resolve::resolve(
            &a,
            debian::resolve::ResolveOptions {
                requests: reqs,
                base: &BaseFacts::empty(),
                exclude: &[],
            },
        )
    };
    let r = opts(&requests(&["libssl3t64"])).unwrap();
    let names: Vec<&str> = r.packages.iter().map(|c| c.candidate.name()).collect();
    assert!(
        names.contains(&"libssl3t64") && names.contains(&"libc6"),
        "{names:?}"
    );
    let apt = &warm()["PACKAGE_trixie_libssl3t64"];
    let ours = r
        .packages
        .iter()
        .find(|c| c.candidate.name() == "libssl3t64")
        .unwrap();
    assert!(
        apt.starts_with(&format!("{} ", ours.candidate.version)),
        "{apt}"
    );
    // The old name is a virtual package there (Provides: libssl3 (= …)).
    let r = opts(&requests(&["libssl3"])).unwrap();
    assert!(
        r.packages
            .iter()
            .any(|c| c.candidate.name() == "libssl3t64")
    );

    let lib = "usr/lib/x86_64-linux-gnu/libcrypto.so.3";
    let bookworm = debian::find_files(
        &f,
        &cache,
        &Sources::debian("bookworm", "amd64"),
        now,
        &[lib, "libcrypto.so.3"],
    )
    .unwrap();
    assert_eq!(bookworm[lib][0].packages, ["libssl3"]);
    assert!(bookworm["libcrypto.so.3"].iter().any(|m| m.path == lib));
    // A trixie base from packages: its base-files ships the merged-/usr
    // links the tool also starts from; no clash, one symlink.
    let (reqs, exclude) = debian::runner_requests(&["libssl3t64".to_owned()]);
    let p = prepare(
        &f,
        &cache,
        &trixie,
        &reqs,
        &exclude,
        &BaseFacts::empty(),
        "deb:trixie",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    assert!(p.lock.packages.iter().any(|k| k.name == "libssl3t64"));
    let (gz, report) = layer(&p, &BaseFacts::empty(), &cache, true, true);
    assert!(report.clashes.is_empty(), "{:?}", report.clashes);
    let entries = read_layer(&gz, &|_| false);
    let bin = entries.iter().find(|e| e.path == "bin").expect("/bin");
    assert_eq!(
        (bin.kind, bin.link.as_deref()),
        (tar::EntryType::Symlink, Some("usr/bin"))
    );
    assert!(entries.iter().any(|e| e.path == "usr/bin/dash"));

    match debian::find_files(&f, &cache, &trixie, now, &[lib]) {
        Ok(t) => assert_eq!(t[lib][0].packages, ["libssl3t64"]),
        // deb.debian.org sometimes serves a trixie Contents that is not the
        // signed one (mid-sync): refusing it is the right answer.
        Err(e @ DebianError::HashMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("Contents-amd64.gz of trixie") && msg.contains("InRelease"),
                "{msg}"
            );
            eprintln!("trixie's Contents refused: {msg}");
        }
        Err(e) => panic!("{e}"),
    }
}

/// The packages of the shared libraries the fixture release's ELF files
/// need, found the way preflight finds them: the `Contents` index.
fn fixture_library_packages(cache: &Cache, suite: &str) -> Vec<String> {
    let sonames = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libtinfo.so.6",
        "libz.so.1",
        "libcrypto.so.3",
    ];
    let found = debian::find_files(
        &http(),
        cache,
        &Sources::debian(suite, "amd64"),
        SystemTime::now(),
        &sonames,
    )
    .unwrap();
    let mut pkgs: Vec<String> = sonames
        .iter()
        .map(|s| {
            debian::library_package(&found[*s], "amd64")
                .unwrap_or_else(|| panic!("no package ships {s}"))
                .to_owned()
        })
        .collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

/// An OCI layout holding `layers` (gzip bytes and diff IDs) on top of
/// the base image `base` of the test base layout (or nothing), tagged `t`.
fn oci_layout(
    dir: &Path,
    base: Option<&str>,
    layers: &[(Vec<u8>, guildhall_image::image::Digest)],
) {
    use guildhall_image::image::config::ConfigFile;
    use guildhall_image::image::manifest::{Descriptor, Manifest};
    use guildhall_image::image::media;
    use guildhall_image::image::mutate::{self, AppendedLayer, ConfigSpec};
    use guildhall_image::layout::Layout;
    let out = Layout::create_or_open(dir).unwrap();
    let (mut blobs, base_config) = match base {
        Some(tag) => {
            let b = Layout::open(base_layout()).unwrap();
            let img = b.resolve(Some(tag)).unwrap();
            let m = Manifest::parse("base", &b.read_blob(&img.digest).unwrap()).unwrap();
            let mut blobs = Vec::new();
            for l in &m.layers {
                out.copy_blob_from(&b, &l.digest).unwrap();
                blobs.push(Descriptor::new(
                    media::OCI_LAYER_GZIP,
                    l.digest.clone(),
                    l.size,
                ));
            }
            let config = b.read_blob(&m.config.digest).unwrap();
            (blobs, ConfigFile::parse("base config", &config).unwrap())
        }
        None => (
            Vec::new(),
            ConfigFile::parse("config", br#"{"architecture":"amd64","os":"linux"}"#).unwrap(),
        ),
    };
    let mut spec = ConfigSpec::default();
    for (gz, diff_id) in layers {
        let (d, size) = out.write_blob(gz).unwrap();
        blobs.push(Descriptor::new(media::OCI_LAYER_GZIP, d, size));
        spec.layers.push(AppendedLayer {
            diff_id: diff_id.clone(),
            created_by: "guildhall-image: Debian packages".into(),
            comment: None,
        });
    }
    spec.user = Some("65534:65534".into());
    let config = mutate::append(&base_config, &spec).to_bytes();
    let (cd, cs) = out.write_blob(&config).unwrap();
    let manifest = mutate::manifest(Descriptor::new(media::OCI_CONFIG, cd, cs), &blobs).to_bytes();
    let (md, _) = out.write_blob(&manifest).unwrap();
    out.set_tags(media::OCI_MANIFEST, &md, &["t".to_owned()])
        .unwrap();
}

fn diff_id_of(gz: &[u8]) -> guildhall_image::image::Digest {
    use std::io::Read;
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    guildhall_image::image::Digest::of(&tar)
}

/// `name -> version` of the deb packages syft finds in `oci-dir:LAYOUT`.
fn syft_packages(layout: &Path) -> BTreeMap<String, String> {
    let out = run_ok(
        Command::new("syft")
            .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
            .args(["scan", "-q", "-o", "json"])
            .arg(format!("oci-dir:{}", layout.display())),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("syft's JSON");
    v["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .filter(|a| a["type"] == "deb")
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_deb_bookworm_base_runs_the_fixture_release_as_nobody_in_under_25_mb_and_syft_lists_its_packages()
 {
    let cache = cache();
    let libs = fixture_library_packages(&cache, "bookworm");
    assert!(
        libs.contains(&"libssl3".to_owned()) && libs.contains(&"libtinfo6".to_owned()),
        "{libs:?}"
    );
    let (reqs, exclude) = debian::runner_requests(&libs);
    let base = BaseFacts::empty();
    let sources = Sources::debian("bookworm", "amd64");
    let start = Instant::now();
    let p = prepare(
        &http(),
        &cache,
        &sources,
        &reqs,
        &exclude,
        &base,
        "deb:bookworm",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    let names: Vec<&str> = p.lock.packages.iter().map(|k| k.name.as_str()).collect();
    for never in ["apt", "dpkg", "perl-base", "debconf", "openssl", "bash"] {
        assert!(
            !names.contains(&never),
            "{never} in the deb: base: {names:?}"
        );
    }
    assert!(
        p.dropped.iter().any(|d| d.relation.starts_with("dpkg")),
        "{:?}",
        p.dropped
    );
    let (gz, report) = layer(&p, &base, &cache, true, true);
    // The same bytes however the blocks are spread over threads (a reused
    // compressor once carried state between the blocks a worker took: on
    // this very layer one and eight threads gave one digest, two another).
    for threads in [1, 2, 3] {
        let (_, bytes, _) = debian::write_layer(
            &LayerRequest {
                debs: &p.debs,
                base: &base,
                standalone: true,
                slim: true,
                architecture: "amd64",
                cache: &cache,
                options: &LayerOptions {
                    threads,
                    ..LayerOptions::default()
                },
                progress: None,
            },
            Vec::new(),
        )
        .unwrap();
        assert!(bytes == gz, "{threads} threads gave other bytes");
    }
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    eprintln!(
        "deb:bookworm for the fixture: {} packages, {:.1} MB compressed, in {:?} (peak memory of the test process so far: {hwm})",
        names.len(),
        gz.len() as f64 / 1e6,
        start.elapsed()
    );
    assert!(gz.len() <= 25_000_000, "{} bytes", gz.len());
    assert!(
        report
            .scripts
            .done
            .iter()
            .any(|d| d.contains("/etc/passwd"))
    );
    assert!(
        report
            .scripts
            .done
            .iter()
            .any(|d| d.contains("alternative /usr/bin/awk")),
        "{:?}",
        report.scripts.done
    );

    // Unpacked, with the release in /app owned by nobody, as the image has it.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let file = tmp.path().join("layer.tar.gz");
    std::fs::write(&file, &gz).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzpf")
            .arg(&file)
            .arg("-C")
            .arg(&root),
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let release = root_release();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(&release)
            .arg(root.join("app")),
    );
    run_ok(
        Command::new("chown")
            .args(["-R", "65534:0"])
            .arg(root.join("app")),
    );
    // What a container runtime gives the process: /dev and /proc.
    let _mounts = Mounts::new(&root);
    let out = run_ok(Command::new("env")
        .args(["-i", "HOME=/app", "LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"])
        .arg("/usr/sbin/chroot")
        .arg("--userspec=65534:65534")
        .arg(&root)
        .args(["/app/bin/guildhall", "eval", "IO.puts(Base.encode16(:crypto.hash(:sha256, \"guildhall\"), case: :lower)); IO.puts(System.cmd(\"id\", [\"-un\"]) |> elem(0))"]));
    assert!(out.starts_with(&sha256_hex(b"guildhall")), "{out}");
    assert!(out.contains("nobody"), "{out}");

    // syft reads the distroless-style database.
    let layout = tmp.path().join("layout");
    oci_layout(&layout, None, &[(gz.clone(), diff_id_of(&gz))]);
    let found = syft_packages(&layout);
    for k in &p.lock.packages {
        assert_eq!(found.get(&k.name), Some(&k.version), "syft: {found:?}");
    }
}

#[test]
fn syft_lists_the_packages_added_onto_the_debootstrapped_base() {
    let cache = cache();
    let tmp = tempfile::tempdir().unwrap();
    // The base as an image layer: read the way a build reads it.
    let layout = base_layout();
    let l = guildhall_image::layout::Layout::open(&layout).unwrap();
    let img = l.resolve(Some("bare")).unwrap();
    let m = guildhall_image::image::manifest::Manifest::parse(
        "bare",
        &l.read_blob(&img.digest).unwrap(),
    )
    .unwrap();
    let base = BaseFacts::from_layers(
        m.layers
            .iter()
            .map(|b| (std::fs::File::open(l.blob_path(&b.digest)).unwrap(), true)),
    )
    .unwrap();
    assert!(base.installed.contains_key("libc6") && base.symlinks.contains_key(Path::new("bin")));
    let sources = Sources::debian("bookworm", "amd64");
    let p = prepare(
        &http(),
        &cache,
        &sources,
        &requests(&["libssl3", "ca-certificates"]),
        &[],
        &base,
        "bare",
        None,
        LockMode::Reuse,
    )
    .unwrap();
    let (gz, _) = layer(&p, &base, &cache, false, true);
    let out = tmp.path().join("layout");
    oci_layout(&out, Some("bare"), &[(gz.clone(), diff_id_of(&gz))]);
    let found = syft_packages(&out);
    for k in &p.lock.packages {
        assert_eq!(
            found.get(&k.name),
            Some(&k.version),
            "{} missing from syft's list",
            k.name
        );
    }
    assert!(
        found.contains_key("libc6"),
        "the base's packages are still listed"
    );
}

#[test]
fn deb_auto_picks_the_oldest_suite_whose_glibc_and_openssl_have_the_symbol_versions() {
    let cache = cache();
    let template = Sources::debian("unused", "amd64");
    let now = SystemTime::now();
    let suites = debian::runner::SUITES;
    let c = debian::choose_suite(
        &http(),
        &cache,
        &template,
        suites,
        &["GLIBC_2.34".into(), "OPENSSL_3.0.0".into()],
        now,
    )
    .unwrap();
    assert_eq!(c.suite, "bookworm");
    // What a release built on trixie (OTP 27.3) needs.
    let c = debian::choose_suite(
        &http(),
        &cache,
        &template,
        suites,
        &["GLIBC_2.38".into(), "OPENSSL_3.4.0".into()],
        now,
    )
    .unwrap();
    assert_eq!(c.suite, "trixie");
    assert!(
        c.reasons[0].starts_with("bookworm: libc6 2.36 lacks GLIBC_2.38"),
        "{:?}",
        c.reasons
    );
    let e = debian::choose_suite(
        &http(),
        &cache,
        &template,
        suites,
        &["GLIBC_9.99".into()],
        now,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no suite has"), "{e}");
}

/// `/dev` (bound) and `/proc` mounted in a root, unmounted on drop.
struct Mounts(Vec<std::path::PathBuf>);

impl Mounts {
    fn new(root: &Path) -> Mounts {
        let dev = root.join("dev");
        let proc = root.join("proc");
        run_ok(Command::new("mount").args(["--bind", "/dev"]).arg(&dev));
        let m = Mounts(vec![dev]);
        run_ok(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&proc),
        );
        let mut m = m;
        m.0.push(proc);
        m
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

/// The fixture release directory (`_build/prod/rel/guildhall`).
fn root_release() -> std::path::PathBuf {
    let out = run_ok(Command::new("bash").arg(root().join("fixtures/build-release.sh")));
    Path::new(out.lines().last().unwrap().trim()).join("_build/prod/rel/guildhall")
}

// ---------------------------------------------------------------------------
// Through the binary: `build --package`, `--base deb:SUITE`, the lock file.

/// A private tool cache whose `debian/` is the shared, warmed one (so the
/// tool fetches only what the archive changed since).
fn tool_cache(dir: &Path) -> std::path::PathBuf {
    let c = dir.join("cache");
    std::fs::create_dir_all(&c).unwrap();
    std::os::unix::fs::symlink(cache().root(), c.join("debian")).unwrap();
    c
}

fn build_cmd(cache: &Path, project: &Path, layout: &Path, base: &str) -> Command {
    let mut c = crate::support::bin(cache);
    c.args(["--json", "build", "--project"])
        .arg(project)
        .arg("--release")
        .arg(crate::support::release_dir(&[]))
        .arg("--layout")
        .arg(layout)
        .args(["--base", base, "-t", "v1"]);
    c
}

fn layer_names(v: &serde_json::Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn build_package_libssl3_and_ca_certificates_onto_the_bare_base_passes_preflight_runs_and_answers_health()
 {
    let work = tempfile::tempdir().unwrap();
    let cache = tool_cache(work.path());
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let bare = format!("oci:{}:bare", base_layout().display());

    // The bare debootstrapped base lacks libcrypto: preflight says which
    // package of bookworm ships it, by Debian's Contents index.
    let out = crate::support::run(&mut build_cmd(
        &cache,
        &project,
        &work.path().join("refused"),
        &bare,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("libcrypto.so.3"), "{err}");
    assert!(
        err.contains("Contents index") && err.contains("--package libssl3"),
        "{err}"
    );

    let layout = work.path().join("image");
    let v = crate::support::json(build_cmd(&cache, &project, &layout, &bare).args([
        "--package",
        "libssl3",
        "--package",
        "ca-certificates",
    ]));
    assert_eq!(layer_names(&v), ["base", "packages", "erts", "app"]);
    crate::support::fsck_ok(&layout);
    let lock = std::fs::read_to_string(project.join("guildhall-image.lock")).unwrap();
    let parsed = Lock::parse(&lock, Path::new("guildhall-image.lock")).unwrap();
    let names: Vec<&str> = parsed.packages.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"libssl3") && names.contains(&"ca-certificates"),
        "{names:?}"
    );
    assert!(!names.contains(&"libc6"), "the base has libc6: {names:?}");

    // inspect shows what the packages layer holds.
    let shown = crate::support::ok(
        crate::support::bin(&cache)
            .arg("inspect")
            .arg(format!("oci:{}:v1", layout.display())),
    );
    assert!(
        shown.contains("Debian packages") && shown.contains("libssl3"),
        "{shown}"
    );

    // The same lock, from a fresh layout and with --locked: the same image.
    let again = work.path().join("again");
    let w = crate::support::json(build_cmd(&cache, &project, &again, &bare).args([
        "--package",
        "libssl3",
        "--package",
        "ca-certificates",
        "--locked",
    ]));
    assert_eq!(w["digest"], v["digest"], "same lock, same image");
    // A changed request under --locked is refused, and nothing is tagged.
    let out = crate::support::run(
        build_cmd(&cache, &project, &work.path().join("locked"), &bare).args([
            "--package",
            "libssl3",
            "--package",
            "ca-certificates",
            "--package",
            "netbase",
            "--locked",
        ]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("out of date") && err.contains("netbase"),
        "{err}"
    );
    let tagged = guildhall_image::layout::Layout::open(work.path().join("locked"))
        .is_ok_and(|l| l.resolve(Some("v1")).is_ok());
    assert!(!tagged, "nothing is tagged");
    assert_eq!(
        std::fs::read_to_string(project.join("guildhall-image.lock")).unwrap(),
        lock,
        "--locked never rewrites the lock"
    );

    // It runs as a restricted Pod would, and /health uses :crypto.
    let port = crate::support::free_port();
    let running =
        crate::support::Running::start_restricted(&layout, "v1", &format!("gi-deb-{port}"), port);
    let (status, body) = crate::support::http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "body: {body}");
}

#[test]
fn a_deb_bookworm_base_made_by_build_runs_restricted_and_is_smaller_than_debian_slim() {
    let work = tempfile::tempdir().unwrap();
    let cache = tool_cache(work.path());
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let layout = work.path().join("image");
    let v = crate::support::json(&mut build_cmd(&cache, &project, &layout, "deb:bookworm"));
    assert_eq!(layer_names(&v), ["packages", "erts", "app"]);
    let packages = &v["layers"][0];
    let size = packages["size"].as_u64().unwrap();
    // debian:bookworm-slim is ~28 MB compressed before any package is added.
    assert!(size < 25_000_000, "{size} bytes");
    eprintln!(
        "deb:bookworm base for the fixture: {:.1} MB compressed",
        size as f64 / 1e6
    );
    let lock = std::fs::read_to_string(project.join("guildhall-image.lock")).unwrap();
    for never in ["\"apt\"", "\"dpkg\"", "\"perl-base\"", "\"bash\""] {
        assert!(
            !lock.contains(&format!("name = {never}")),
            "{never} in the deb: base"
        );
    }
    for want in ["libssl3", "libtinfo6", "ca-certificates", "tzdata", "dash"] {
        assert!(
            lock.contains(&format!("name = \"{want}\"")),
            "{want} missing"
        );
    }
    // No label points at a base no registry knows.
    let info = crate::support::json(
        crate::support::bin(&cache)
            .args(["inspect", "--json"])
            .arg(format!("oci:{}:v1", layout.display())),
    );
    let labels = info["labels"].as_object().unwrap();
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("org.opencontainers.image.base.")),
        "{labels:?}"
    );
    let port = crate::support::free_port();
    let running =
        crate::support::Running::start_restricted(&layout, "v1", &format!("gi-debb-{port}"), port);
    let (status, body) = crate::support::http_get(&format!("{}/health", running.url));
    assert_eq!(status, 200, "body: {body}");

    // Rebuilt with the lock and a warm cache, and no network at all: the
    // packages layer is reused.
    let again =
        crate::support::json(build_cmd(&cache, &project, &layout, "deb:bookworm").arg("--offline"));
    assert_eq!(again["digest"], v["digest"]);
    assert_eq!(again["layers"][0]["reused"], true);
}

#[test]
fn a_mirror_that_flips_a_byte_of_a_deb_fails_the_build_and_tags_nothing() {
    let work = tempfile::tempdir().unwrap();
    // A cold cache: the .debs must come through the lying mirror.
    let cache = work.path().join("cache");
    let project = work.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let double = MirrorDouble::start(Tamper::FlipDebByte, Arc::new(http()));
    let layout = work.path().join("image");
    let out = crate::support::run(
        build_cmd(
            &cache,
            &project,
            &layout,
            &format!("oci:{}:bare", base_layout().display()),
        )
        .args(["--package", "netbase", "--debian-mirror"])
        .arg(double.mirror.as_str())
        .arg("--debian-security-mirror")
        .arg(double.security_mirror.as_str()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("refusing netbase") && err.contains("sha256"),
        "{err}"
    );
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap_or_default();
    assert!(!index.contains("\"v1\""), "nothing is tagged: {index}");
}
