//! Tests of the tree: a spool answers like the directory `tar -x` would
//! have made, and keeps the rules of a careful extraction.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

/// The same entries, on disk and in a spool.
fn both() -> (tempfile::TempDir, PathBuf, Tree, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    let files: &[(&str, &[u8], u32)] = &[
        ("bin/server", b"#!/bin/sh\nexec x\n", 0o755),
        ("lib/a-1.0/ebin/a.beam", b"FOR1....BEAM", 0o644),
        ("lib/a-1.0/ebin/b.beam", b"", 0o600),
        (
            "lib/a-1.0/priv/x.so",
            &[0x7f, b'E', b'L', b'F', 1, 2, 3],
            0o755,
        ),
        ("lib/a-1.0.other", b"sorts between", 0o644),
    ];
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    for (p, data, mode) in files {
        let path = disk.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        let offset = b.offset();
        b.append(data).unwrap();
        b.add(
            p.as_bytes(),
            Entry::File {
                mode: *mode,
                offset,
                size: data.len() as u64,
                content: None,
            },
        )
        .unwrap();
    }
    symlink("server", disk.join("bin/start")).unwrap();
    b.add(b"bin/start", Entry::Symlink { target: b"server" })
        .unwrap();
    fs::hard_link(disk.join("bin/server"), disk.join("bin/again")).unwrap();
    b.add(
        b"bin/again",
        Entry::HardLink {
            target: b"bin/server",
        },
    )
    .unwrap();
    for d in [
        "bin",
        "lib",
        "lib/a-1.0",
        "lib/a-1.0/ebin",
        "lib/a-1.0/priv",
    ] {
        fs::set_permissions(disk.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("release.tar.gz");
    let spool = Tree::Spool(Arc::new(b.finish(root.clone()).unwrap()));
    (tmp, disk, spool, root)
}

#[test]
fn a_spool_answers_like_the_directory_tar_would_have_made() {
    let (_tmp, disk, spool, root) = both();
    let paths = [
        "",
        "bin",
        "bin/server",
        "bin/start",
        "bin/again",
        "lib",
        "lib/a-1.0",
        "lib/a-1.0/ebin",
        "lib/a-1.0/ebin/a.beam",
        "lib/a-1.0/ebin/b.beam",
        "lib/a-1.0/priv/x.so",
        "lib/a-1.0.other",
        "missing",
        "bin/server/below-a-file",
    ];
    for p in paths {
        let (d, s) = (disk.join(p), root.join(p));
        let dm = Tree::Disk.symlink_metadata(&d).ok();
        let sm = spool.symlink_metadata(&s).ok();
        // (A directory's link count is not kept: nothing reads it.)
        let facts = |m: Meta| (m.kind, m.mode, if m.is_file() { m.nlink } else { 0 });
        assert_eq!(dm.map(facts), sm.map(facts), "{p}");
        if dm.is_some_and(|m| m.is_file()) {
            assert_eq!(dm.unwrap().len, sm.unwrap().len, "{p}");
            assert_eq!(Tree::Disk.read(&d).unwrap(), spool.read(&s).unwrap(), "{p}");
        }
        let names = |t: &Tree, p: &Path| {
            t.read_dir(p).ok().map(|mut v| {
                v.sort();
                v
            })
        };
        assert_eq!(names(&Tree::Disk, &d), names(&spool, &s), "{p}");
        assert_eq!(
            Tree::Disk.read_link(&d).ok(),
            spool.read_link(&s).ok(),
            "{p}"
        );
        // Opening never follows a symlink.
        let d_loop = Tree::Disk.open(&d).err().and_then(|e| e.raw_os_error());
        let s_loop = spool.open(&s).err().and_then(|e| e.raw_os_error());
        assert_eq!(
            d_loop == Some(libc::ELOOP),
            s_loop == Some(libc::ELOOP),
            "{p}"
        );
    }
    // The names of one hard-linked file share an identity; others do not.
    let id = |p: &str| spool.symlink_metadata(&root.join(p)).unwrap().id;
    assert_eq!(id("bin/server"), id("bin/again"));
    assert_ne!(id("bin/server"), id("lib/a-1.0/ebin/a.beam"));
    // Paths outside the spool's root are not found (not read from disk).
    assert!(spool.symlink_metadata(&disk.join("bin/server")).is_err());
}

#[test]
fn entries_below_a_symlink_or_a_file_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    b.add(b"lib", Entry::Symlink { target: b"/etc" }).unwrap();
    let err = b
        .add(
            b"lib/x/passwd",
            Entry::File {
                mode: 0o644,
                offset: 0,
                size: 0,
                content: None,
            },
        )
        .unwrap_err();
    assert!(err.contains("symlink lib"), "{err}");
    b.add(
        b"f",
        Entry::File {
            mode: 0o644,
            offset: 0,
            size: 0,
            content: None,
        },
    )
    .unwrap();
    let err = b.add(b"f/g", Entry::Dir { mode: 0o755 }).unwrap_err();
    assert!(err.contains("file f"), "{err}");
    let err = b.add(b"lib", Entry::Dir { mode: 0o755 }).unwrap_err();
    assert!(err.contains("symlink"), "{err}");
    let err = b.add(b"h", Entry::HardLink { target: b"lib" }).unwrap_err();
    assert!(err.contains("not a file extracted before it"), "{err}");
}

#[test]
fn a_hard_link_keeps_the_bytes_of_a_file_replaced_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    let add_file = |b: &mut SpoolBuilder, p: &[u8], data: &[u8]| {
        let offset = b.offset();
        b.append(data).unwrap();
        b.add(
            p,
            Entry::File {
                mode: 0o644,
                offset,
                size: data.len() as u64,
                content: None,
            },
        )
        .unwrap();
    };
    add_file(&mut b, b"a", b"first");
    b.add(b"b", Entry::HardLink { target: b"a" }).unwrap();
    add_file(&mut b, b"a", b"second");
    let root = PathBuf::from("/r");
    let t = Tree::Spool(Arc::new(b.finish(root.clone()).unwrap()));
    assert_eq!(t.read(&root.join("a")).unwrap(), b"second");
    assert_eq!(t.read(&root.join("b")).unwrap(), b"first");
    // `a` is a new file now: `b` is the only name left of the old one.
    assert_eq!(t.symlink_metadata(&root.join("b")).unwrap().nlink, 1);
    assert_eq!(t.symlink_metadata(&root.join("a")).unwrap().nlink, 1);
}

#[test]
fn reserved_regions_read_as_zeros_where_nothing_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    b.append(b"head").unwrap();
    let start = b.reserve(1 << 20).unwrap();
    b.write_at(start + 10, b"xyz").unwrap();
    b.add(
        b"holes",
        Entry::File {
            mode: 0o644,
            offset: start,
            size: 1 << 20,
            content: None,
        },
    )
    .unwrap();
    let root = PathBuf::from("/r");
    let t = Tree::Spool(Arc::new(b.finish(root.clone()).unwrap()));
    let bytes = t.read(&root.join("holes")).unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(&bytes[10..13], b"xyz");
    assert!(bytes[..10].iter().chain(&bytes[13..]).all(|&b| b == 0));
}

#[test]
fn a_spool_entered_at_its_top_directory_names_entries_below_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    b.add(b"guildhall", Entry::Dir { mode: 0o750 }).unwrap();
    b.append(b"1 2").unwrap();
    b.add(
        b"guildhall/releases/start_erl.data",
        Entry::File {
            mode: 0o644,
            offset: 0,
            size: 3,
            content: None,
        },
    )
    .unwrap();
    let spool = b.finish(PathBuf::from("/t.tar.gz")).unwrap();
    let spool = spool.enter(std::ffi::OsStr::new("guildhall"));
    assert_eq!(spool.root(), Path::new("/t.tar.gz/guildhall"));
    let t = Tree::Spool(Arc::new(spool));
    let root = Path::new("/t.tar.gz/guildhall");
    assert_eq!(t.symlink_metadata(root).unwrap().mode, 0o750);
    assert_eq!(t.read_dir(root).unwrap(), ["releases"]);
    assert_eq!(
        t.read(&root.join("releases/start_erl.data")).unwrap(),
        b"1 2"
    );
}

#[test]
fn lookups_and_listings_hold_across_thousands_of_front_coded_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = SpoolBuilder::new(tmp.path()).unwrap();
    let mut files = Vec::new();
    // Names that share long prefixes, sort across `-` and `/`, and fill
    // many restart groups (in an order other than the sorted one).
    for d in (0..40).rev() {
        for f in 0..37 {
            files.push(format!("lib/app-{d}/ebin/Elixir.Mod{d}.Sub{f:03}.beam"));
        }
        files.push(format!("lib/app-{d}-extra"));
    }
    for (i, p) in files.iter().enumerate() {
        let data = p.as_bytes();
        let offset = b.offset();
        b.append(data).unwrap();
        b.add(
            p.as_bytes(),
            Entry::File {
                mode: 0o600 + (i as u32 % 2),
                offset,
                size: data.len() as u64,
                content: None,
            },
        )
        .unwrap();
    }
    b.add(b"lib/app-7/link", Entry::Symlink { target: b"ebin" })
        .unwrap();
    let root = PathBuf::from("/r");
    let t = Tree::Spool(Arc::new(b.finish(root.clone()).unwrap()));
    for (i, p) in files.iter().enumerate() {
        let m = t.symlink_metadata(&root.join(p)).unwrap();
        assert_eq!(
            (m.kind, m.mode),
            (Kind::File, 0o600 + (i as u32 % 2)),
            "{p}"
        );
        assert_eq!(t.read(&root.join(p)).unwrap(), p.as_bytes(), "{p}");
    }
    for missing in [
        "lib/app-0/ebin/Elixir.Mod0.Sub037.beam",
        "lib/app-40",
        "lib/app-1/ebin/Elixir.Mod1.Sub00",
        "a",
        "zzz",
    ] {
        assert!(
            t.symlink_metadata(&root.join(missing)).is_err(),
            "{missing}"
        );
    }
    let mut top = t.read_dir(&root.join("lib")).unwrap();
    top.sort();
    assert_eq!(top.len(), 80);
    for d in 0..40 {
        let mut names = t.read_dir(&root.join(format!("lib/app-{d}/ebin"))).unwrap();
        names.sort();
        let want: Vec<std::ffi::OsString> = (0..37)
            .map(|f| format!("Elixir.Mod{d}.Sub{f:03}.beam").into())
            .collect();
        assert_eq!(names, want, "app-{d}");
        let own = t.read_dir(&root.join(format!("lib/app-{d}"))).unwrap();
        assert_eq!(own.len(), if d == 7 { 2 } else { 1 }, "app-{d}: {own:?}");
    }
    assert_eq!(
        t.read_link(&root.join("lib/app-7/link")).unwrap(),
        Path::new("ebin")
    );
}
