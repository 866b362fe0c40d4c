//! Resolution cases, on small archives written as `Packages` text: the
//! situations Debian policy §7 describes (alternatives, virtual packages,
//! versioned provides, conflicts, pre-dependencies) and the base's
//! installed packages.

use super::*;
use crate::debian::base::BaseFacts;
use crate::debian::index::{Archive, Sources, parse_packages};

/// An archive of two pockets from `Packages` stanzas (Filename, Size and
/// SHA256 filled in).
fn archive(release: &str, security: &str) -> Archive {
    let mut out = Vec::new();
    for (pocket, text) in [(0, release), (1, security)] {
        let text: String = text
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                format!(
                    "{}\nFilename: pool/x.deb\nSize: 1\nSHA256: {}\n\n",
                    p.trim(),
                    "00".repeat(32)
                )
            })
            .collect();
        parse_packages(text.as_bytes(), "amd64", pocket, "test", &mut out).unwrap();
    }
    Archive::from_parts(Sources::debian("bookworm", "amd64"), vec![], out)
}

fn run(
    a: &Archive,
    base: &BaseFacts,
    req: &[&str],
    exclude: &[&str],
) -> Result<Resolution, DebianError> {
    let requests: Vec<Request> = req.iter().map(|r| Request::parse(r).unwrap()).collect();
    let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    resolve(
        a,
        ResolveOptions {
            requests: &requests,
            base,
            exclude: &exclude,
        },
    )
}

fn names(r: &Resolution) -> Vec<String> {
    r.packages
        .iter()
        .map(|c| format!("{}={}", c.candidate.name(), c.candidate.version))
        .collect()
}

const LIBC: &str = "Package: libc6\nVersion: 2.36-9+deb12u13\nArchitecture: amd64\nMulti-Arch: same\nPriority: optional\n\nPackage: libgcc-s1\nVersion: 12.2.0-14\nArchitecture: amd64\nDepends: libc6 (>= 2.35)\n";

#[test]
fn dependencies_are_followed_and_the_highest_version_across_pockets_wins() {
    let a = archive(
        &format!(
            "{LIBC}\n\nPackage: libssl3\nVersion: 3.0.17-1~deb12u2\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\n"
        ),
        "Package: libssl3\nVersion: 3.0.20-1~deb12u2\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\n\nPackage: libc6\nVersion: 2.36-9+deb12u14\nArchitecture: amd64\n",
    );
    let r = run(&a, &BaseFacts::empty(), &["libssl3"], &[]).unwrap();
    assert_eq!(
        names(&r),
        ["libc6=2.36-9+deb12u14", "libssl3=3.0.20-1~deb12u2"]
    );
    assert_eq!(r.packages[0].candidate.pocket, 1);
    assert_eq!(
        r.packages[0].why,
        Why::Dependency {
            by: "libssl3 3.0.20-1~deb12u2".into(),
            field: "Depends",
            relation: "libc6 (>= 2.34)".into()
        }
    );
    assert_eq!(r.packages[1].why, Why::Requested("libssl3".into()));
    // A pinned version is taken exactly, from whichever pocket has it.
    let r = run(&a, &BaseFacts::empty(), &["libssl3=3.0.17-1~deb12u2"], &[]).unwrap();
    assert_eq!(r.packages[1].candidate.version.as_str(), "3.0.17-1~deb12u2");
}

#[test]
fn the_first_installable_alternative_is_taken_and_one_already_chosen_satisfies_the_group() {
    let a = archive(
        &format!(
            "{LIBC}\n\nPackage: app\nVersion: 1\nArchitecture: all\nDepends: libfoo2 | libfoo1, default-mta | mail-transport-agent\n\nPackage: libfoo1\nVersion: 1\nArchitecture: amd64\n\nPackage: exim4\nVersion: 4\nArchitecture: all\nProvides: mail-transport-agent\n\nPackage: postfix\nVersion: 3\nArchitecture: amd64\nProvides: mail-transport-agent\n"
        ),
        "",
    );
    // libfoo2 does not exist: libfoo1. default-mta is nowhere: a provider
    // of mail-transport-agent, chosen by name when priorities tie.
    let r = run(&a, &BaseFacts::empty(), &["app"], &[]).unwrap();
    assert_eq!(names(&r), ["app=1", "exim4=4", "libfoo1=1"]);
    // Asking for postfix first makes it satisfy the group.
    let r = run(&a, &BaseFacts::empty(), &["postfix", "app"], &[]).unwrap();
    assert_eq!(names(&r), ["app=1", "libfoo1=1", "postfix=3"]);
}

#[test]
fn virtual_packages_resolve_through_provides_with_versions_honoured() {
    let a = archive(
        "Package: mawk\nVersion: 1.3.4\nArchitecture: amd64\nProvides: awk\nPriority: required\n\nPackage: gawk\nVersion: 5.2\nArchitecture: amd64\nProvides: awk\nPriority: optional\n\nPackage: needs-awk\nVersion: 1\nArchitecture: all\nDepends: awk\n\nPackage: libssl3t64\nVersion: 3.5.1-1\nArchitecture: amd64\nProvides: libssl3 (= 3.5.1-1)\n\nPackage: needs-ssl\nVersion: 1\nArchitecture: all\nDepends: libssl3 (>= 3.0.0)\n\nPackage: needs-new-ssl\nVersion: 1\nArchitecture: all\nDepends: libssl3 (>= 4)\n",
        "",
    );
    // The required-priority provider wins over the optional one.
    let r = run(&a, &BaseFacts::empty(), &["needs-awk"], &[]).unwrap();
    assert_eq!(names(&r), ["mawk=1.3.4", "needs-awk=1"]);
    // A versioned dependency is met by a versioned Provides (trixie's t64 renames).
    let r = run(&a, &BaseFacts::empty(), &["needs-ssl"], &[]).unwrap();
    assert_eq!(names(&r), ["libssl3t64=3.5.1-1", "needs-ssl=1"]);
    let e = run(&a, &BaseFacts::empty(), &["needs-new-ssl"], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot satisfy libssl3 (>= 4) (needed by needs-new-ssl 1, Depends): libssl3 (>= 4) is not met by libssl3t64 3.5.1-1 (provides libssl3 = 3.5.1-1)"
    );
    // A virtual name asked for directly: its one provider; several is an error.
    let r = run(&a, &BaseFacts::empty(), &["libssl3"], &[]).unwrap();
    assert_eq!(names(&r), ["libssl3t64=3.5.1-1"]);
    let e = run(&a, &BaseFacts::empty(), &["awk"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ask for one of gawk, mawk"), "{e}");
}

#[test]
fn what_the_base_has_at_a_satisfying_version_is_not_added_again() {
    let a = archive(
        &format!(
            "{LIBC}\n\nPackage: libssl3\nVersion: 3.0.20-1~deb12u2\nArchitecture: amd64\nDepends: libc6 (>= 2.34)\n\nPackage: ca-certificates\nVersion: 20230311+deb12u1\nArchitecture: all\nDepends: openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0\n\nPackage: openssl\nVersion: 3.0.20-1~deb12u2\nArchitecture: amd64\nDepends: libc6 (>= 2.34), libssl3 (>= 3.0.9)\n"
        ),
        "",
    );
    let mut base = BaseFacts::empty();
    base.add_dpkg_db(
        "status",
        b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u10\nArchitecture: amd64\nMulti-Arch: same\n\nPackage: debconf\nStatus: install ok installed\nVersion: 1.5.82\nArchitecture: all\nProvides: debconf-2.0\n",
    )
    .unwrap();
    let r = run(&a, &base, &["libssl3", "ca-certificates"], &[]).unwrap();
    assert_eq!(
        names(&r),
        [
            "ca-certificates=20230311+deb12u1",
            "libssl3=3.0.20-1~deb12u2",
            "openssl=3.0.20-1~deb12u2"
        ]
    );
    let in_base: Vec<(&str, &str)> = r
        .in_base
        .iter()
        .map(|b| (b.relation.as_str(), b.satisfied_by.as_str()))
        .collect();
    assert!(
        in_base.contains(&("libc6 (>= 2.34)", "libc6 2.36-9+deb12u10")),
        "{in_base:?}"
    );
    assert!(
        in_base.contains(&("debconf (>= 0.5) | debconf-2.0", "debconf 1.5.82")),
        "{in_base:?}"
    );
    // Too old a base package is not enough: libgcc-s1 needs libc6 >= 2.35.
    let mut old = BaseFacts::empty();
    old.add_dpkg_db(
        "status",
        b"Package: libc6\nVersion: 2.31-13\nArchitecture: amd64\n",
    )
    .unwrap();
    let r = run(&a, &old, &["libgcc-s1"], &[]).unwrap();
    assert_eq!(names(&r), ["libc6=2.36-9+deb12u13", "libgcc-s1=12.2.0-14"]);
    // A request the base already has is skipped and reported.
    let r = run(&a, &base, &["libc6"], &[]).unwrap();
    assert!(r.packages.is_empty());
    assert_eq!(r.in_base[0].satisfied_by, "libc6 2.36-9+deb12u10");
}

#[test]
fn a_conflict_steers_the_choice_to_the_next_alternative_and_otherwise_fails_clearly() {
    let a = archive(
        "Package: app\nVersion: 1\nArchitecture: all\nDepends: libgood | libother\n\nPackage: libgood\nVersion: 1\nArchitecture: amd64\nConflicts: legacy\n\nPackage: libother\nVersion: 1\nArchitecture: amd64\n\nPackage: legacy\nVersion: 1\nArchitecture: amd64\n\nPackage: stubborn\nVersion: 1\nArchitecture: all\nDepends: libgood\n\nPackage: breaker\nVersion: 1\nArchitecture: all\nBreaks: libother (<< 2)\n",
        "",
    );
    let r = run(&a, &BaseFacts::empty(), &["legacy", "app"], &[]).unwrap();
    assert_eq!(names(&r), ["app=1", "legacy=1", "libother=1"]);
    let e = run(&a, &BaseFacts::empty(), &["legacy", "stubborn"], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot satisfy libgood (needed by stubborn 1, Depends): libgood 1 Conflicts: legacy, and legacy 1 is chosen"
    );
    // A chosen package's Breaks (versioned) rules a candidate out too.
    let e = run(&a, &BaseFacts::empty(), &["legacy", "breaker", "app"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("breaker 1 Breaks: libother (<< 2)"), "{e}");
}

#[test]
fn pre_depends_and_arch_qualifiers_are_honoured() {
    let a = archive(
        "Package: dash\nVersion: 0.5.12-2\nArchitecture: amd64\nPre-Depends: libc6 (>= 2.34)\n\nPackage: libc6\nVersion: 2.36\nArchitecture: amd64\n\nPackage: py\nVersion: 1\nArchitecture: all\nDepends: python3:any\n\nPackage: python3\nVersion: 3.11\nArchitecture: amd64\nMulti-Arch: allowed\n\nPackage: tool\nVersion: 1\nArchitecture: all\nDepends: perl:any\n\nPackage: perl\nVersion: 5.36\nArchitecture: amd64\n",
        "",
    );
    let r = run(&a, &BaseFacts::empty(), &["dash"], &[]).unwrap();
    assert_eq!(names(&r), ["dash=0.5.12-2", "libc6=2.36"]);
    assert!(matches!(
        &r.packages[1].why,
        Why::Dependency {
            field: "Pre-Depends",
            ..
        }
    ));
    let r = run(&a, &BaseFacts::empty(), &["py"], &[]).unwrap();
    assert_eq!(names(&r), ["py=1", "python3=3.11"]);
    // `:any` needs Multi-Arch: allowed, as policy says.
    let e = run(&a, &BaseFacts::empty(), &["tool"], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot satisfy perl:any"), "{e}");
}

#[test]
fn excluded_packages_drop_their_relations_and_say_so() {
    let a = archive(
        "Package: dash\nVersion: 0.5.12-2\nArchitecture: amd64\nDepends: debianutils (>= 5.6-0.1), dpkg (>= 1.19.1)\n\nPackage: debianutils\nVersion: 5.7-0.5\nArchitecture: amd64\n\nPackage: dpkg\nVersion: 1.21.22\nArchitecture: amd64\nDepends: tar\n\nPackage: tar\nVersion: 1.34\nArchitecture: amd64\n",
        "",
    );
    let r = run(&a, &BaseFacts::empty(), &["dash"], &["dpkg"]).unwrap();
    assert_eq!(names(&r), ["dash=0.5.12-2", "debianutils=5.7-0.5"]);
    assert_eq!(r.dropped[0].relation, "dpkg (>= 1.19.1)");
    assert_eq!(r.dropped[0].needed_by, "dash 0.5.12-2");
}

#[test]
fn unknown_requests_say_what_exists() {
    let a = archive(LIBC, "");
    let e = run(&a, &BaseFacts::empty(), &["libssl3"], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "libssl3: no such package in bookworm [] (amd64)");
    let e = run(&a, &BaseFacts::empty(), &["libc6=2.99"], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("at that version (it has 2.36-9+deb12u13)"),
        "{e}"
    );
    assert!(Request::parse("Bad_Name").is_err());
    assert!(Request::parse("libc6=not a version").is_err());
    assert_eq!(
        Request::parse(" libc6 = 2.36 ").unwrap().to_string(),
        "libc6=2.36"
    );
}
