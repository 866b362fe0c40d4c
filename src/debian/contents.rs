//! Which package ships a file: the suite's `Contents-ARCH.gz` index
//! (verified against the signed `InRelease` like every index), streamed
//! once for any number of queries. Preflight uses it to name the package
//! that provides a missing library — never a hand-kept table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::SystemTime;

use super::deb::Compression;
use super::error::DebianError;
use super::fetch::{Cache, Fetch};
use super::index::{Sources, signed_index_file, signed_release};

/// `Contents` indexes larger than this are refused (bookworm's is 12 MB).
const MAX_CONTENTS: u64 = 1 << 30;

/// One file of the index that matched a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentsMatch {
    /// The path as the index lists it (`usr/lib/x86_64-linux-gnu/libcrypto.so.3`).
    pub path: String,
    /// The packages that ship it (names, without their section).
    pub packages: Vec<String>,
}

/// What to look for: a path (`usr/lib/x86_64-linux-gnu/libcrypto.so.3`,
/// leading `/` optional), or a bare file name (`libcrypto.so.3`), which
/// matches that name in any directory.
fn matches(query: &str, path: &str) -> bool {
    let q = query.trim_start_matches('/');
    if q.contains('/') {
        path == q
    } else {
        path.rsplit('/').next() == Some(q)
    }
}

/// Look files up in the `Contents` of the suite's first pocket (the
/// release; package names do not change in its updates). Returns, per
/// query, every matching path and its packages.
pub fn find_files(
    fetch: &dyn Fetch,
    cache: &Cache,
    sources: &Sources,
    now: SystemTime,
    queries: &[&str],
) -> Result<BTreeMap<String, Vec<ContentsMatch>>, DebianError> {
    let kind = *sources
        .pockets
        .first()
        .ok_or_else(|| DebianError::Usage("no pocket to look files up in".into()))?;
    let release = signed_release(fetch, cache, sources, kind, now)?;
    let mut out: BTreeMap<String, Vec<ContentsMatch>> = queries
        .iter()
        .map(|q| ((*q).to_owned(), Vec::new()))
        .collect();
    for component in &sources.components {
        let base = format!("{component}/Contents-{}", sources.architecture);
        let Some(path) = [".gz", ""]
            .iter()
            .map(|ext| format!("{base}{ext}"))
            .find(|p| release.file(p).is_some())
        else {
            return Err(DebianError::Release {
                url: release.url.clone(),
                reason: format!("it lists no {base} index"),
            });
        };
        let (file, what) =
            signed_index_file(fetch, cache, sources, kind, &release, &path, MAX_CONTENTS)?;
        let comp = Compression::of_name(&path).unwrap_or(Compression::None);
        let f = File::open(&file).map_err(DebianError::io("opening", &file))?;
        let reader = comp
            .reader(f)
            .map_err(DebianError::io("decompressing", &file))?;
        scan(BufReader::with_capacity(1 << 20, reader), &what, &mut out)?;
    }
    Ok(out)
}

/// Debian's multiarch triplet of an architecture (`amd64` →
/// `x86_64-linux-gnu`): the library directories are named after it.
pub fn multiarch_triplet(architecture: &str) -> Option<&'static str> {
    Some(match architecture {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "armhf" => "arm-linux-gnueabihf",
        "i386" => "i386-linux-gnu",
        "ppc64el" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// The package that ships a shared library where the dynamic linker looks
/// for it (`usr/lib/TRIPLET`, `lib/TRIPLET`, then `usr/lib`, `lib`), among
/// the matches of a file-name query; debug symbols and other copies
/// elsewhere are ignored.
pub fn library_package<'a>(matches: &'a [ContentsMatch], architecture: &str) -> Option<&'a str> {
    let t = multiarch_triplet(architecture).unwrap_or("");
    let dirs = [
        format!("usr/lib/{t}/"),
        format!("lib/{t}/"),
        "usr/lib/".to_owned(),
        "lib/".to_owned(),
    ];
    dirs.iter().find_map(|d| {
        matches
            .iter()
            .find(|m| {
                m.path
                    .strip_prefix(d.as_str())
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .and_then(|m| m.packages.first())
            .map(String::as_str)
    })
}

/// Scan a `Contents` stream (`PATH   section/pkg,section/pkg` lines).
pub fn scan<R: BufRead>(
    mut reader: R,
    what: &str,
    out: &mut BTreeMap<String, Vec<ContentsMatch>>,
) -> Result<(), DebianError> {
    // A file-name query only needs lines ending in it: a cheap pre-check.
    let names: Vec<(String, memchr::memmem::Finder<'static>)> = out
        .keys()
        .map(|q| {
            let q2 = q.trim_start_matches('/');
            let base = q2.rsplit('/').next().unwrap_or(q2);
            (
                q.clone(),
                memchr::memmem::Finder::new(base.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DebianError::Index {
                what: what.to_owned(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        if !names.iter().any(|(_, f)| f.find(&line).is_some()) {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let Some(split) = text.rfind(|c: char| c.is_whitespace()) else {
            continue;
        };
        let (path, locations) = (text[..split].trim_end(), &text[split + 1..]);
        for (q, _) in &names {
            if matches(q, path) {
                let packages = locations
                    .split(',')
                    .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
                    .collect();
                out.get_mut(q).expect("a query").push(ContentsMatch {
                    path: path.to_owned(),
                    packages,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_file_names_find_their_packages() {
        let index = "usr/bin/openssl                                         utils/openssl\nusr/lib/x86_64-linux-gnu/libcrypto.so.3                 libs/libssl3\nusr/lib/x86_64-linux-gnu/libcrypto.so.3.hmac            libs/libssl3\nusr/share/doc/a b/with space.txt                        doc/a,doc/b\nusr/lib/debug/libcrypto.so.3                            debug/libssl3-dbgsym\n";
        let mut out: BTreeMap<String, Vec<ContentsMatch>> = [
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
            "libcrypto.so.3",
            "with space.txt",
            "libnothing.so.1",
        ]
        .iter()
        .map(|q| (q.to_string(), Vec::new()))
        .collect();
        scan(index.as_bytes(), "Contents", &mut out).unwrap();
        assert_eq!(
            out["/usr/lib/x86_64-linux-gnu/libcrypto.so.3"],
            [ContentsMatch {
                path: "usr/lib/x86_64-linux-gnu/libcrypto.so.3".into(),
                packages: vec!["libssl3".into()]
            }]
        );
        assert_eq!(out["libcrypto.so.3"].len(), 2);
        assert_eq!(out["with space.txt"][0].packages, ["a", "b"]);
        assert_eq!(
            out["with space.txt"][0].path,
            "usr/share/doc/a b/with space.txt"
        );
        assert!(out["libnothing.so.1"].is_empty());
        assert_eq!(
            library_package(&out["libcrypto.so.3"], "amd64"),
            Some("libssl3")
        );
        assert_eq!(library_package(&out["libnothing.so.1"], "amd64"), None);
    }
}
