//! Tests of unpacking: hostile entries, links, modes, sparse files, bounds.

use super::*;

use crate::tree::Tree;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs;
use std::io::Write;
use std::sync::Arc;

/// Unpack `tb` with these limits into a spool in a scratch directory
/// next to it; the tree and the path its entries are named under.
fn unpack_with(tb: &Path, limits: ExtractLimits) -> Result<(Tree, PathBuf), ReleaseError> {
    let scratch = tb.with_extension("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let spool = extract(tb, &scratch, limits)?;
    // Nothing of the tarball is on disk: the spool file is unlinked.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
    let root = spool.root().to_owned();
    Ok((Tree::Spool(Arc::new(spool)), root))
}

fn unpack(tb: &Path) -> Result<(Tree, PathBuf), ReleaseError> {
    unpack_with(tb, ExtractLimits::default())
}

fn tarball(dir: &Path, build: impl FnOnce(&mut tar::Builder<GzEncoder<File>>)) -> PathBuf {
    let path = dir.join("r.tar.gz");
    let f = File::create(&path).unwrap();
    let mut b = tar::Builder::new(GzEncoder::new(f, Compression::fast()));
    build(&mut b);
    b.into_inner().unwrap().finish().unwrap();
    path
}

fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(EntryType::Regular);
    h
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let n = &mut h.as_old_mut().name;
    n.fill(0);
    n[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
}

#[test]
fn files_symlinks_hard_links_and_modes_are_extracted_as_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tarball(tmp.path(), |b| {
        let mut h = file_header(3, 0o755);
        b.append_data(&mut h, "bin/run", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin/alias", "run").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "bin/hard", "bin/run").unwrap();
    });
    let (tree, out) = unpack(&tb).unwrap();
    let m = tree.symlink_metadata(&out.join("bin/run")).unwrap();
    assert_eq!(m.mode, 0o755);
    assert_eq!(tree.read(&out.join("bin/run")).unwrap(), b"abc");
    assert_eq!(
        tree.read_link(&out.join("bin/alias")).unwrap(),
        Path::new("run")
    );
    let hard = tree.symlink_metadata(&out.join("bin/hard")).unwrap();
    assert_eq!((hard.id, hard.nlink), (m.id, 2));
    assert_eq!(tree.read(&out.join("bin/hard")).unwrap(), b"abc");
    // The parent made for the entries, and the listing.
    assert!(tree.symlink_metadata(&out.join("bin")).unwrap().is_dir());
    let mut names = tree.read_dir(&out.join("bin")).unwrap();
    names.sort();
    assert_eq!(names, ["alias", "hard", "run"]);
    // Nothing is reached outside the spool's root, or through a file.
    assert!(tree.symlink_metadata(Path::new("/etc/passwd")).is_err());
    assert!(tree.read_dir(&out.join("bin/run")).is_err());
}

#[test]
fn a_later_entry_replaces_an_earlier_one_but_never_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tarball(tmp.path(), |b| {
        let mut h = file_header(3, 0o644);
        b.append_data(&mut h, "etc/x", &b"old"[..]).unwrap();
        let mut h = file_header(3, 0o600);
        b.append_data(&mut h, "etc/x", &b"new"[..]).unwrap();
    });
    let (tree, out) = unpack(&tb).unwrap();
    assert_eq!(tree.read(&out.join("etc/x")).unwrap(), b"new");
    assert_eq!(
        tree.symlink_metadata(&out.join("etc/x")).unwrap().mode,
        0o600
    );
    assert_eq!(tree.read_dir(&out.join("etc")).unwrap().len(), 1);

    let tmp = tempfile::tempdir().unwrap();
    let tb = tarball(tmp.path(), |b| {
        let mut h = file_header(1, 0o644);
        b.append_data(&mut h, "etc/x/y", &b"a"[..]).unwrap();
        let mut h = file_header(1, 0o644);
        b.append_data(&mut h, "etc/x", &b"b"[..]).unwrap();
    });
    let err = unpack(&tb).unwrap_err();
    assert!(err.to_string().contains("replace a directory"), "{err}");
}

#[test]
fn entries_escaping_the_directory_are_refused() {
    for bad in ["../evil", "/etc/evil", "a/../../evil"] {
        let tmp = tempfile::tempdir().unwrap();
        let tb = tarball(tmp.path(), |b| {
            let mut h = file_header(1, 0o644);
            raw_name(&mut h, bad);
            b.append(&h, &b"x"[..]).unwrap();
        });
        let err = unpack(&tb).unwrap_err();
        assert!(
            matches!(err, ReleaseError::UnsafeTarball { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    let tb = tarball(tmp.path(), |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "lib", &victim).unwrap();
        let mut h = file_header(1, 0o644);
        b.append_data(&mut h, "lib/evil", &b"x"[..]).unwrap();
    });
    let err = unpack(&tb).unwrap_err();
    assert!(matches!(err, ReleaseError::UnsafeTarball { .. }), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!victim.join("evil").exists());
}

#[test]
fn a_truncated_tarball_is_reported_as_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tarball(tmp.path(), |b| {
        let data = vec![7u8; 100_000];
        let mut h = file_header(data.len() as u64, 0o644);
        b.append_data(&mut h, "big", &data[..]).unwrap();
    });
    let bytes = fs::read(&tb).unwrap();
    fs::write(&tb, &bytes[..bytes.len() - 10]).unwrap();
    let err = unpack(&tb).unwrap_err();
    assert!(matches!(err, ReleaseError::CorruptTarball { .. }), "{err}");
}

/// A sparse file made by GNU tar in the given format (`gnu` for old-GNU
/// sparse entries, `posix` with `--sparse-version`), 8 MiB with 3 bytes
/// of data at 1 MiB and 2 bytes at the end.
fn gnu_tar_sparse(dir: &Path, format: &str, version: Option<&str>) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("rel")).unwrap();
    let f = src.join("rel/holes.bin");
    let mut file = File::create(&f).unwrap();
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(1 << 20)).unwrap();
    file.write_all(b"abc").unwrap();
    file.seek(SeekFrom::Start((8 << 20) - 2)).unwrap();
    file.write_all(b"yz").unwrap();
    drop(file);
    let tb = dir.join(format!("sparse-{format}-{}.tar.gz", version.unwrap_or("x")));
    let mut cmd = crate::process::command("tar");
    cmd.arg("-C")
        .arg(&src)
        .arg("--sparse")
        .arg(format!("--format={format}"));
    if let Some(v) = version {
        cmd.arg(format!("--sparse-version={v}"));
    }
    let st = cmd.arg("-czf").arg(&tb).arg("rel").status().unwrap();
    assert!(st.success(), "GNU tar is needed for this test");
    tb
}

fn expect_holes_file(tree: &Tree, out: &Path) {
    let bytes = tree.read(&out.join("rel/holes.bin")).unwrap();
    assert_eq!(bytes.len(), 8 << 20);
    assert_eq!(&bytes[1 << 20..(1 << 20) + 3], b"abc");
    assert_eq!(&bytes[(8 << 20) - 2..], b"yz");
    assert!(bytes[..1 << 20].iter().all(|&b| b == 0));
    assert!(!tree.exists(&out.join("rel/GNUSparseFile.0")));
}

#[test]
fn sparse_entries_of_gnu_tar_are_expanded_not_dropped() {
    for (format, version) in [
        ("gnu", None),
        ("posix", Some("0.1")),
        ("posix", Some("1.0")),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let tb = gnu_tar_sparse(tmp.path(), format, version);
        let (tree, out) = unpack(&tb).unwrap_or_else(|e| panic!("{format} {version:?}: {e}"));
        expect_holes_file(&tree, &out);
    }
}

#[test]
fn the_oldest_pax_sparse_format_is_refused_rather_than_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = gnu_tar_sparse(tmp.path(), "posix", Some("0.0"));
    let err = unpack(&tb).unwrap_err();
    assert!(err.to_string().contains("sparse"), "{err}");
}

#[test]
fn extraction_stops_at_the_size_limit() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB of zeros: a ~64 KiB tarball.
    let tb = tarball(tmp.path(), |b| {
        let mut h = file_header(64 << 20, 0o644);
        b.append_data(&mut h, "zeros", io::repeat(0).take(64 << 20))
            .unwrap();
    });
    assert!(fs::metadata(&tb).unwrap().len() < 1 << 20);
    let err = unpack_with(
        &tb,
        ExtractLimits {
            max_bytes: 16 << 20,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, ReleaseError::TooLarge { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    let (tree, out) = unpack_with(
        &tb,
        ExtractLimits {
            max_bytes: 65 << 20,
        },
    )
    .unwrap();
    assert_eq!(
        tree.symlink_metadata(&out.join("zeros")).unwrap().len,
        64 << 20
    );
}

#[test]
fn setuid_bits_are_kept_and_never_reach_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let tb = tarball(tmp.path(), |b| {
        let mut h = file_header(2, 0o4755);
        b.append_data(&mut h, "bin/su", &b"#!"[..]).unwrap();
        let mut h = file_header(2, 0o2755);
        b.append_data(&mut h, "bin/sg", &b"#!"[..]).unwrap();
        let mut h = file_header(2, 0o755);
        b.append_data(&mut h, "bin/plain", &b"#!"[..]).unwrap();
    });
    let (tree, out) = unpack(&tb).unwrap();
    for (f, mode) in [("su", 0o4755), ("sg", 0o2755), ("plain", 0o755)] {
        let m = tree.symlink_metadata(&out.join("bin").join(f)).unwrap();
        assert_eq!(m.mode, mode, "{f}");
    }
}

/// The layer of a whole unpacked tarball, as a release plan makes one.
fn layer_of(tree: &Tree, root: &Path) -> crate::layer::PlannedLayer {
    let mut l =
        crate::layer::PlannedLayer::rooted("all", "everything", root, "app").in_tree(tree.clone());
    l.add_tree(root, Path::new("app"), &|_| false).unwrap();
    l
}

/// Tarball of `files` (name, bytes, mtime) in this order, `link` a hard
/// link (name, target) after them.
fn tarball_of(dir: &Path, files: &[(&str, &[u8], u64)], link: Option<(&str, &str)>) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    tarball(dir, |b| {
        for (name, bytes, mtime) in files {
            let mut h = file_header(bytes.len() as u64, 0o644);
            h.set_mtime(*mtime);
            b.append_data(&mut h, name, *bytes).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
    })
}

#[test]
fn a_spooled_layer_is_keyed_by_content_not_by_order_or_mtimes() {
    use crate::layer::{LayerOptions, diff_id, fingerprint};
    let tmp = tempfile::tempdir().unwrap();
    let opts = LayerOptions::default();
    let key = |tb: &Path| {
        let (tree, root) = unpack(tb).unwrap();
        let l = layer_of(&tree, &root);
        (fingerprint(&l, &opts).unwrap(), diff_id(&l, &opts).unwrap())
    };
    let a = tarball_of(
        &tmp.path().join("a"),
        &[("lib/x.beam", b"one", 10), ("lib/y.beam", b"two", 11)],
        Some(("lib/z.beam", "lib/x.beam")),
    );
    // Each file's sha256 is taken as it is spooled.
    let (tree, root) = unpack(&a).unwrap();
    let two: [u8; 32] = sha2::Sha256::digest(b"two").into();
    assert_eq!(
        tree.known_content(&root.join("lib/y.beam")).unwrap(),
        Some(two)
    );
    assert_eq!(tree.known_content(&root.join("lib")).unwrap(), None);
    // Another order and other mtimes: the same tar, the same key.
    let b = tarball_of(
        &tmp.path().join("b"),
        &[("lib/y.beam", b"two", 99), ("lib/x.beam", b"one", 98)],
        Some(("lib/z.beam", "lib/x.beam")),
    );
    let (ka, da) = key(&a);
    let (kb, db) = key(&b);
    assert!(ka.is_some());
    assert_eq!((&ka, &da), (&kb, &db));
    // One byte changed, or a hard link made a copy: another tar, another key.
    let c = tarball_of(
        &tmp.path().join("c"),
        &[("lib/x.beam", b"one", 10), ("lib/y.beam", b"twO", 11)],
        Some(("lib/z.beam", "lib/x.beam")),
    );
    let d = tarball_of(
        &tmp.path().join("d"),
        &[
            ("lib/x.beam", b"one", 10),
            ("lib/y.beam", b"two", 11),
            ("lib/z.beam", b"one", 10),
        ],
        None,
    );
    for other in [c, d] {
        let (k, dk) = key(&other);
        assert_ne!(dk, da, "{}", other.display());
        assert_ne!(k, ka, "{}", other.display());
    }
}

#[test]
fn a_layer_with_a_pax_sparse_file_has_no_content_key_but_still_a_diff_id() {
    // A PAX sparse file is written into the spool in pieces, not hashed as
    // it goes by: its layer is found unchanged by its diff ID alone.
    let tmp = tempfile::tempdir().unwrap();
    let tb = gnu_tar_sparse(tmp.path(), "posix", Some("1.0"));
    let (tree, root) = unpack(&tb).unwrap();
    assert_eq!(
        tree.known_content(&root.join("rel/holes.bin")).unwrap(),
        None
    );
    let l = layer_of(&tree, &root);
    assert_eq!(
        crate::layer::fingerprint(&l, &crate::layer::LayerOptions::default()).unwrap(),
        None
    );
    let st = crate::layer::diff_id(&l, &crate::layer::LayerOptions::default()).unwrap();
    assert_eq!(st.uncompressed_size, 3 * 512 + (8 << 20) + 1024);
}
