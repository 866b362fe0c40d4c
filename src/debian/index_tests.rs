//! Tests of the pocket indexes: `Packages` parsing and candidate order.

use super::*;

#[test]
fn a_packages_index_keeps_our_architecture_and_all_with_what_resolution_needs() {
    let text = "Package: libssl3\nVersion: 3.0.20-1~deb12u2\nArchitecture: amd64\nMulti-Arch: same\nPriority: optional\nDepends: libc6 (>= 2.34)\nFilename: pool/main/o/openssl/libssl3_3.0.20-1~deb12u2_amd64.deb\nSize: 2036016\nSHA256: 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025\n\nPackage: libssl3\nVersion: 3.0.20-1~deb12u2\nArchitecture: arm64\nFilename: x\nSize: 1\nSHA256: 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025\n\nPackage: mawk\nVersion: 1.3.4.20200120-3.1\nArchitecture: amd64\nProvides: awk\nPriority: required\nFilename: pool/main/m/mawk/mawk.deb\nSize: 1\nSHA256: 89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025\n";
    let mut out = Vec::new();
    parse_packages(text.as_bytes(), "amd64", 0, "Packages", &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].multi_arch, MultiArch::Same);
    assert_eq!(out[0].depends(), "libc6 (>= 2.34)");
    assert_eq!(out[0].size, 2_036_016);
    assert_eq!(out[1].provides[0].name, "awk");
    assert_eq!(out[1].priority, 0);
    let a = Archive::from_parts(Sources::debian("bookworm", "amd64"), vec![], out);
    assert_eq!(a.providers("awk")[0].name(), "mawk");
    assert_eq!(a.named("libssl3").len(), 1);
}

#[test]
fn a_package_without_its_hash_is_an_index_error_naming_it() {
    let text = "Package: a1\nVersion: 1\nArchitecture: all\nFilename: f\nSize: 1\n";
    let err = parse_packages(
        text.as_bytes(),
        "amd64",
        0,
        "Packages of x",
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Packages of x: package a1: no SHA256 field"
    );
}

#[test]
fn mirror_urls_join_as_directories() {
    let s = Sources::debian("bookworm", "amd64");
    assert_eq!(
        s.url(PocketKind::Security, "dists/bookworm-security/InRelease")
            .unwrap()
            .as_str(),
        "http://deb.debian.org/debian-security/dists/bookworm-security/InRelease"
    );
    assert_eq!(
        join(&Url::parse("http://m/debian/").unwrap(), "pool/a.deb")
            .unwrap()
            .as_str(),
        "http://m/debian/pool/a.deb"
    );
}
