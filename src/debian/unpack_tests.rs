//! Laying packages out on the base: symlinks followed, hard links
//! arranged, slim exclusions.

use super::*;

fn e(node: Node) -> Entry {
    Entry {
        node,
        mode: 0o755,
        uid: 0,
        gid: 0,
        package: "p".into(),
    }
}

fn merged_usr() -> BTreeMap<PathBuf, PathBuf> {
    [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ]
    .into_iter()
    .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
    .collect()
}

#[test]
fn paths_resolve_through_the_base_directory_symlinks_and_never_replace_them() {
    let links = merged_usr();
    let mut t = Tree::new(&links);
    let file = |p: &str| DataEntry {
        path: p.into(),
        node: Node::File {
            source: "/x".into(),
            offset: 0,
            size: 1,
        },
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let dir = |p: &str| DataEntry {
        path: p.into(),
        node: Node::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let entries = vec![
        dir("bin"),
        file("bin/dash"),
        DataEntry {
            path: "bin/sh".into(),
            node: Node::Symlink("dash".into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        },
        dir("lib64"),
        DataEntry {
            path: "lib64/ld-linux-x86-64.so.2".into(),
            node: Node::Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        },
        dir("usr"),
        dir("usr/bin"),
        file("usr/bin/cat"),
        DataEntry {
            path: "usr/bin/cat-again".into(),
            node: Node::HardLink("usr/bin/cat".into()),
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    ];
    apply(&mut t, "p", &entries, false);
    let paths: Vec<String> = t.nodes.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "usr",
            "usr/bin",
            "usr/bin/cat",
            "usr/bin/cat-again",
            "usr/bin/dash",
            "usr/bin/sh",
            "usr/lib64",
            "usr/lib64/ld-linux-x86-64.so.2"
        ]
    );
    assert!(
        !t.nodes.contains_key(Path::new("bin")),
        "bin stays the base's symlink"
    );
    assert_eq!(
        t.resolve(Path::new("bin/sh"), false),
        PathBuf::from("usr/bin/sh")
    );
    assert_eq!(
        t.resolve(Path::new("lib64/ld-linux-x86-64.so.2"), true),
        PathBuf::from("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    );
    let ents = t.entries();
    let again = ents
        .iter()
        .find(|e| e.dest == Path::new("usr/bin/cat-again"))
        .unwrap();
    // cat-again sorts after cat: cat holds the bytes, cat-again links.
    assert_eq!(again.kind, ExplicitKind::HardLink("usr/bin/cat".into()));
}

#[test]
fn a_symlink_never_replaces_a_directory_of_the_base() {
    let links = BTreeMap::new();
    let dirs: BTreeSet<PathBuf> = [PathBuf::from("bin"), PathBuf::from("etc")].into();
    let mut t = Tree::new(&links).with_base_dirs(&dirs);
    t.put("bin".into(), e(Node::Symlink("usr/bin".into())));
    assert!(t.nodes.is_empty());
    assert!(
        t.clashes[0].contains("kept the directory"),
        "{:?}",
        t.clashes
    );
    add_parents(&mut t, Path::new("etc/ssl/certs/x.pem"), "p");
    let made: Vec<_> = t.nodes.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        made,
        ["etc/ssl", "etc/ssl/certs"],
        "the base's /etc is not re-made"
    );
}

#[test]
fn a_hard_link_that_sorts_first_takes_the_bytes() {
    let links = BTreeMap::new();
    let mut t = Tree::new(&links);
    t.put(
        "usr/bin/zz".into(),
        e(Node::File {
            source: "/x".into(),
            offset: 3,
            size: 4,
        }),
    );
    t.put("usr/bin/aa".into(), e(Node::HardLink("usr/bin/zz".into())));
    let ents = t.entries();
    assert_eq!(ents[0].dest, Path::new("usr/bin/aa"));
    assert!(matches!(
        ents[0].kind,
        ExplicitKind::File {
            offset: 3,
            size: 4,
            ..
        }
    ));
    assert_eq!(ents[1].kind, ExplicitKind::HardLink("usr/bin/aa".into()));
}

#[test]
fn symlink_loops_and_dot_dots_terminate() {
    let links: BTreeMap<PathBuf, PathBuf> = [("a", "b"), ("b", "a"), ("usr/lib/x", "../share")]
        .into_iter()
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .collect();
    let t = Tree::new(&links);
    let _ = t.resolve(Path::new("a/file"), false);
    assert_eq!(
        t.resolve(Path::new("usr/lib/x/f"), false),
        PathBuf::from("usr/share/f")
    );
}

#[test]
fn slim_keeps_copyright_files_and_drops_docs_man_pages_and_translations() {
    assert!(!slim_excludes(Path::new("usr/share/doc/libssl3/copyright")));
    assert!(!slim_excludes(Path::new("usr/share/doc/libssl3")));
    assert!(slim_excludes(Path::new(
        "usr/share/doc/libssl3/changelog.Debian.gz"
    )));
    assert!(slim_excludes(Path::new("usr/share/man/man1/dash.1.gz")));
    assert!(slim_excludes(Path::new(
        "usr/share/locale/de/LC_MESSAGES/coreutils.mo"
    )));
    assert!(!slim_excludes(Path::new("usr/share/zoneinfo/UTC")));
}
