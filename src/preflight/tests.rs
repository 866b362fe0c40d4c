//! Tests of preflight: hand-made ELF files and base file trees, and the real fixture release on the real bases.

#[allow(unused_imports)]
use super::*;
use std::fs::{self, File};

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use crate::release::tests::fake_release;

enum E<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        h.set_mode(0o755);
        match e {
            E::Dir(p) => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).unwrap();
            }
            E::File(p, data) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            E::Symlink(p, t) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::HardLink(p, t) => {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// gzip in two members, as some registries' layers are.
fn two_member_gzip(tar: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (a, b) = tar.split_at(tar.len() / 2);
    for part in [a, b] {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(part).unwrap();
        out.extend(gz.finish().unwrap());
    }
    out
}

fn rootfs(layers: &[Vec<u8>]) -> BaseRootfs {
    BaseRootfs::from_layers(layers.iter().map(|l| (l.as_slice(), false))).unwrap()
}

fn host_triplet() -> &'static str {
    triplet(&Platform::host()).unwrap()
}

fn glob_one(dir: &str, prefix: &str, rest: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().join(rest))
        .filter(|p| p.is_file())
        .collect();
    hits.sort();
    hits.pop()
}

/// The host's real ERTS emulator and crypto NIF.
fn host_erlang() -> Option<(PathBuf, PathBuf)> {
    let beam = glob_one("/usr/lib/erlang", "erts-", "bin/beam.smp")?;
    let crypto = glob_one("/usr/lib/erlang/lib", "crypto-", "priv/lib/crypto.so")?;
    Some((beam, crypto))
}

/// A release with the host's real beam.smp and crypto.so in it.
fn release_with_real_elfs(dir: &Path, crypto_bytes: Option<Vec<u8>>) -> Option<Release> {
    let Some((beam, crypto)) = host_erlang() else {
        eprintln!("no Erlang in /usr/lib/erlang: skipping");
        return None;
    };
    let root = fake_release(dir, &[("kernel", "8.5.3"), ("crypto", "5.1.2")]);
    fs::copy(&beam, root.join("erts-13.1.5/bin/beam.smp")).unwrap();
    let nif = root.join("lib/crypto-5.1.2/priv/lib/crypto.so");
    fs::create_dir_all(nif.parent().unwrap()).unwrap();
    match crypto_bytes {
        Some(b) => fs::write(&nif, b).unwrap(),
        None => {
            fs::copy(&crypto, &nif).unwrap();
        }
    }
    fs::write(root.join("lib/crypto-5.1.2/priv/lib/readme.txt"), "not ELF").unwrap();
    Some(Release::open(&root, &dir.join("scratch"), Default::default()).unwrap())
}

fn interpreter_of(path: &Path) -> String {
    let bytes = fs::read(path).unwrap();
    Elf::parse(&bytes).unwrap().interpreter.unwrap().to_owned()
}

/// A merged-/usr Debian-like base from the host's real libraries.
fn debian_like_base(with_libcrypto: bool) -> Vec<u8> {
    let t = host_triplet();
    let host_lib = |name: &str| fs::read(format!("/lib/{t}/{name}")).ok();
    let libdir = format!("usr/lib/{t}");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [
        "libc.so.6",
        "libm.so.6",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libtinfo.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libsystemd.so.0",
    ] {
        if let Some(bytes) = host_lib(name) {
            files.push((format!("{libdir}/{name}"), bytes));
        }
    }
    files.push((
        format!("{libdir}/libz.so.1.2.13"),
        host_lib("libz.so.1").unwrap(),
    ));
    if with_libcrypto {
        files.push((
            format!("{libdir}/libcrypto.so.3"),
            host_lib("libcrypto.so.3").unwrap(),
        ));
    }
    let (beam, _) = host_erlang().unwrap();
    // /lib64/ld-linux-x86-64.so.2 → usr/lib64/… (lib64 is a symlink).
    let loader = format!("usr{}", interpreter_of(&beam));
    let mut entries = vec![
        E::Dir("./"),
        E::Symlink("lib", "usr/lib"),
        E::Symlink("lib64", "usr/lib64"),
        E::Dir("usr/"),
        E::Dir("usr/lib/"),
        E::Dir("usr/lib64/"),
        E::File(&loader, b"loader".to_vec()),
        E::Symlink("usr/lib/libz-chain.so", "x/../libz.so.1"),
    ];
    let zlink = format!("{libdir}/libz.so.1");
    entries.push(E::Symlink(&zlink, "libz.so.1.2.13"));
    for (p, b) in &files {
        entries.push(E::File(p, b.clone()));
    }
    layer_tar(&entries)
}

#[test]
fn the_real_beam_and_crypto_nif_pass_on_a_base_with_their_libraries() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(release) = release_with_real_elfs(tmp.path(), None) else {
        return;
    };
    let base = rootfs(&[debian_like_base(true)]);
    let report = check(&release, &base, &Platform::host());
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.files_checked, 2,
        "beam.smp and crypto.so; the text file skipped"
    );
    assert!(report.into_result("base").is_ok());
}

#[test]
fn without_libcrypto_the_crypto_nif_is_named_with_the_libssl3_package() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(release) = release_with_real_elfs(tmp.path(), None) else {
        return;
    };
    let base = rootfs(&[debian_like_base(false)]);
    let report = check(&release, &base, &Platform::host());
    assert_eq!(
        report.problems,
        [Problem {
            file: PathBuf::from("lib/crypto-5.1.2/priv/lib/crypto.so"),
            kind: ProblemKind::MissingLibrary {
                library: "libcrypto.so.3".into(),
                package: Some("libssl3"),
            },
        }]
    );
    assert_eq!(report.packages(), ["libssl3"]);
    let text = report.to_string();
    assert!(
            text.contains(
                "lib/crypto-5.1.2/priv/lib/crypto.so: needs libcrypto.so.3 (Debian package libssl3), not found in the base image"
            ),
            "{text}"
        );
    assert!(text.contains("apt-get install -y --no-install-recommends libssl3"));
    let err = report.into_result("debian:bookworm-slim").unwrap_err();
    assert!(matches!(err, PreflightError::Failed(_)));
    assert_eq!(err.exit_code(), crate::error::ExitCode::Preflight);
}

#[test]
fn a_whiteout_in_an_upper_gzip_layer_removes_a_library_of_a_lower_one() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(release) = release_with_real_elfs(tmp.path(), None) else {
        return;
    };
    let wh = format!("usr/lib/{}/.wh.libcrypto.so.3", host_triplet());
    let upper = layer_tar(&[E::File(&wh, Vec::new())]);
    let layers = [
        (two_member_gzip(&debian_like_base(true)), true),
        (two_member_gzip(&upper), true),
    ];
    let base = BaseRootfs::from_layers(layers.iter().map(|(l, gz)| (l.as_slice(), *gz))).unwrap();
    let report = check(&release, &base, &Platform::host());
    assert_eq!(report.packages(), ["libssl3"], "{report}");
}

#[test]
fn an_opaque_directory_hides_only_what_lower_layers_put_in_it() {
    let lower = layer_tar(&[
        E::File("usr/lib/a.so", vec![]),
        E::File("usr/lib/sub/b.so", vec![]),
        E::File("usr/keep", vec![]),
    ]);
    // The new file comes before the marker: order within a layer must not matter.
    let upper = layer_tar(&[
        E::File("usr/lib/c.so", vec![]),
        E::File("usr/lib/.wh..wh..opq", vec![]),
    ]);
    let fs = rootfs(&[lower, upper]);
    assert!(!fs.exists(Path::new("/usr/lib/a.so")));
    assert!(!fs.exists(Path::new("/usr/lib/sub/b.so")));
    assert!(fs.exists(Path::new("/usr/lib/c.so")));
    assert!(fs.exists(Path::new("/usr/lib")));
    assert!(fs.exists(Path::new("/usr/keep")));
}

#[test]
fn whiteouts_remove_whole_directories_and_files_replace_directories() {
    let lower = layer_tar(&[
        E::File("opt/tool/bin/x", vec![]),
        E::File("srv/data/y", vec![]),
    ]);
    let upper = layer_tar(&[E::File("opt/.wh.tool", vec![]), E::File("srv/data", vec![])]);
    let fs = rootfs(&[lower, upper]);
    assert!(!fs.exists(Path::new("/opt/tool")));
    assert!(!fs.exists(Path::new("/opt/tool/bin/x")));
    assert!(fs.resolve_file(Path::new("/srv/data")).is_some());
    assert!(!fs.exists(Path::new("/srv/data/y")));
}

#[test]
fn symlink_chains_resolve_absolutely_and_relatively_and_loops_end() {
    let fs = rootfs(&[layer_tar(&[
        E::Symlink("lib", "usr/lib"),
        E::File("usr/lib/t/libz.so.1.2.13", vec![]),
        E::Symlink("usr/lib/t/libz.so.1", "libz.so.1.2.13"),
        E::Symlink("usr/lib/abs.so", "/lib/t/libz.so.1"),
        E::Symlink("usr/lib/up.so", "../lib/t/./libz.so.1"),
        E::HardLink("usr/lib/hard.so", "usr/lib/t/libz.so.1.2.13"),
        E::Symlink("loop/a", "b"),
        E::Symlink("loop/b", "a"),
        E::Symlink("dangling", "/nowhere"),
    ])]);
    let target = Some(PathBuf::from("/usr/lib/t/libz.so.1.2.13"));
    assert_eq!(fs.resolve_file(Path::new("/lib/t/libz.so.1")), target);
    assert_eq!(fs.resolve_file(Path::new("/usr/lib/abs.so")), target);
    assert_eq!(fs.resolve_file(Path::new("/lib/up.so")), target);
    assert_eq!(
        fs.resolve_file(Path::new("/lib/hard.so")),
        Some(PathBuf::from("/usr/lib/hard.so"))
    );
    assert_eq!(fs.resolve_file(Path::new("/loop/a")), None);
    assert_eq!(fs.resolve_file(Path::new("/dangling")), None);
    assert_eq!(fs.resolve_file(Path::new("/lib/t/libz.so.1/x")), None);
    assert_eq!(fs.resolve_file(Path::new("/lib")), None, "a directory");
}

/// `bytes` with every NUL-delimited `from` replaced by `to` (same length).
fn patch_string(bytes: &mut [u8], from: &str, to: &str) -> usize {
    assert_eq!(from.len(), to.len());
    let needle = [b"\0", from.as_bytes(), b"\0"].concat();
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if bytes[i..i + needle.len()] == needle[..] {
            bytes[i + 1..i + 1 + to.len()].copy_from_slice(to.as_bytes());
            n += 1;
        }
        i += 1;
    }
    n
}

#[test]
fn a_glibc_version_the_base_does_not_define_is_a_problem() {
    let Some((_, crypto)) = host_erlang() else {
        return;
    };
    let mut bytes = fs::read(&crypto).unwrap();
    let info = ElfInfo::parse(PathBuf::new(), &bytes).unwrap().unwrap();
    let wanted = info
        .verneed
        .iter()
        .find(|(lib, _)| lib == "libc.so.6")
        .and_then(|(_, v)| v.iter().find(|v| v.starts_with("GLIBC_2.")))
        .unwrap()
        .clone();
    // GLIBC_2.14 → GLIBC_2.99: same length, so the ELF stays valid.
    let future: String = wanted
        .chars()
        .enumerate()
        .map(|(i, c)| if i > 8 && c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_ne!(future, wanted);
    assert!(patch_string(&mut bytes, &wanted, &future) > 0);

    let tmp = tempfile::tempdir().unwrap();
    let release = release_with_real_elfs(tmp.path(), Some(bytes)).unwrap();
    let base = rootfs(&[debian_like_base(true)]);
    let report = check(&release, &base, &Platform::host());
    let [problem] = report.problems.as_slice() else {
        panic!("{report}");
    };
    let ProblemKind::MissingVersion {
        library,
        version,
        newest,
        package,
    } = &problem.kind
    else {
        panic!("{problem}");
    };
    assert_eq!(
        (library.as_str(), version, *package),
        ("libc.so.6", &future, Some("libc6"))
    );
    assert!(
        newest.as_deref().is_some_and(|n| n.starts_with("GLIBC_2.")),
        "{newest:?}"
    );
    assert!(
        problem
            .to_string()
            .contains(&format!("needs {future} from libc.so.6"))
    );
}

#[test]
fn a_nif_built_for_another_machine_is_named() {
    let Some((_, crypto)) = host_erlang() else {
        return;
    };
    let mut bytes = fs::read(&crypto).unwrap();
    let other: u16 = if Platform::host().architecture == "arm64" {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let release = release_with_real_elfs(tmp.path(), Some(bytes)).unwrap();
    let report = check(
        &release,
        &rootfs(&[debian_like_base(true)]),
        &Platform::host(),
    );
    assert!(
        matches!(
            report.problems.as_slice(),
            [Problem {
                kind: ProblemKind::WrongArchitecture { .. },
                ..
            }]
        ),
        "{report}"
    );
}

#[test]
fn an_erts_for_another_platform_than_the_base_is_a_platform_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(release) = release_with_real_elfs(tmp.path(), None) else {
        return;
    };
    let other = Platform::linux(if Platform::host().architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    });
    let report = check(&release, &rootfs(&[debian_like_base(true)]), &other);
    assert_eq!(report.problems.len(), 1, "{report}");
    let err = report.into_result("debian").unwrap_err();
    assert!(
        matches!(err, PreflightError::PlatformMismatch { .. }),
        "{err}"
    );
}

#[test]
fn origin_in_search_paths_is_the_files_directory_in_the_image() {
    let origin = Path::new("/app/lib/x-1/priv");
    assert_eq!(
        expand_origin("$ORIGIN/../lib", origin),
        Path::new("/app/lib/x-1/priv/../lib")
    );
    assert_eq!(expand_origin("${ORIGIN}", origin), origin);
    assert_eq!(expand_origin("/opt/lib", origin), Path::new("/opt/lib"));
    assert_eq!(expand_origin("vendor", origin), Path::new("/app/vendor"));
}

#[test]
fn release_files_are_seen_at_app_with_their_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path();
    fs::create_dir_all(app.join("lib/x/priv")).unwrap();
    fs::write(app.join("lib/x/priv/libdep.so.1"), "").unwrap();
    std::os::unix::fs::symlink("libdep.so.1", app.join("lib/x/priv/libdep.so")).unwrap();
    let base = rootfs(&[layer_tar(&[E::Symlink(
        "opt/dep.so",
        "/app/lib/x/priv/libdep.so",
    )])]);
    let view = ImageView {
        base: &base,
        app: Some((&crate::tree::Tree::Disk, app)),
    };
    let want = Some(PathBuf::from("/app/lib/x/priv/libdep.so.1"));
    assert_eq!(
        view.resolve_file(Path::new("/app/lib/x/priv/libdep.so")),
        want
    );
    assert_eq!(view.resolve_file(Path::new("/opt/dep.so")), want);
    assert_eq!(
        view.resolve_file(Path::new("/app/lib/x/priv/../priv/libdep.so")),
        want
    );
}

#[test]
fn debian_packages_are_known_for_common_libraries() {
    assert_eq!(debian_package("libcrypto.so.3"), Some("libssl3"));
    assert_eq!(debian_package("libm.so.6"), Some("libc6"));
    assert_eq!(debian_package("/lib64/ld-linux-x86-64.so.2"), Some("libc6"));
    assert_eq!(
        debian_package("libwx_gtk3u_core-3.2.so.0"),
        Some("libwxgtk3.2-1")
    );
    assert_eq!(debian_package("libGLU.so.1"), Some("libgl1"));
    assert_eq!(debian_package("libfoo.so.1"), None);
}

// --- the real fixture release on the real debootstrapped bases -------

/// The layers of a tag of the fixture base layout (`bare`, `runner`),
/// `None` when it cannot be made here.
fn fixture_base(tag: &str) -> Option<Vec<(PathBuf, bool)>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/make-base-layout.sh");
    let out = crate::process::command(&script).output().ok()?;
    if !out.status.success() {
        eprintln!("{} failed: skipping", script.display());
        return None;
    }
    let layout = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim_end());
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag))?;
    let manifest = json(blob(manifest["digest"].as_str()?));
    manifest["layers"]
        .as_array()?
        .iter()
        .map(|l| {
            Some((
                blob(l["digest"].as_str()?),
                crate::image::media::is_gzip_layer(l["mediaType"].as_str()?),
            ))
        })
        .collect()
}

#[test]
fn the_fixture_release_needs_libssl3_on_the_bare_base_and_nothing_on_the_runner() {
    let Some(work) = crate::release::tests::fixture_release(&[]) else {
        return;
    };
    let (Some(bare), Some(runner)) = (fixture_base("bare"), fixture_base("runner")) else {
        return;
    };
    let release = Release::open(
        &work.join("_build/prod/rel/guildhall"),
        &std::env::temp_dir(),
        Default::default(),
    )
    .unwrap();
    let open = |layers: &[(PathBuf, bool)]| {
        BaseRootfs::from_layers(
            layers
                .iter()
                .map(|(p, gz)| (io::BufReader::new(File::open(p).unwrap()), *gz)),
        )
        .unwrap()
    };
    let report = check(&release, &open(&bare), &Platform::host());
    assert!(report.files_checked > 5, "{report}");
    assert_eq!(report.packages(), ["libssl3"], "{report}");
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.file.to_string_lossy().starts_with("lib/crypto-")),
        "{report}"
    );
    let report = check(&release, &open(&runner), &Platform::host());
    assert!(report.is_ok(), "{report}");
}
