//! `deb:SUITE` and `deb:auto`: the smallest honest runner for the BEAM,
//! made from Debian packages alone — libc, the shell and tools the
//! release's start scripts run (`sh`, `cut`, `sed`, `grep`, `awk`, `od`,
//! `dirname`, `readlink`, …), the libraries ERTS and its NIFs need (the
//! caller names them, from preflight and `Contents`), `ca-certificates`,
//! `tzdata`, `netbase`, and the file-system layout of `base-files`. No
//! apt, no dpkg, no perl, no debconf: their only users are maintainer
//! scripts, which the tool does not run.

use std::time::SystemTime;

use super::error::DebianError;
use super::fetch::{Cache, Fetch};
use super::index::{Archive, Sources};
use super::resolve::Request;
use super::version::Version;

/// The packages every `deb:` base has, by their names in every supported
/// suite (the libraries ERTS needs come on top, named by the caller).
pub const RUNNER_PACKAGES: &[&str] = &[
    // the root file system layout, /etc/os-release
    "base-files",
    // the dynamic loader and libc
    "libc6",
    // /bin/sh, and the commands of bin/APP, bin/server and erts/bin/erl
    "dash",
    "coreutils",
    "sed",
    "grep",
    "mawk",
    // data an app needs at run time
    "ca-certificates",
    "tzdata",
    "netbase",
];

/// What a `deb:` base leaves out even when a package depends on it: the
/// package manager and its configuration system (used only by maintainer
/// scripts), `openssl`'s command (ca-certificates wants it for `openssl
/// rehash`, which the tool does itself) and `install-info` (grep's
/// documentation hook).
pub const RUNNER_EXCLUDE: &[&str] = &[
    "apt",
    "cdebconf",
    "debconf",
    "dpkg",
    "install-info",
    "openssl",
    "perl-base",
];

/// The suites `deb:auto` chooses from, oldest first (those whose archive
/// keys are built in).
pub const SUITES: &[&str] = &["bookworm", "trixie"];

/// The requests and exclusions of a `deb:` base whose release needs the
/// packages `libraries` (for the fixture: `libstdc++6`, `libtinfo6`,
/// `zlib1g`, `libssl3` or `libssl3t64`).
pub fn runner_requests(libraries: &[String]) -> (Vec<Request>, Vec<String>) {
    let mut names: Vec<String> = RUNNER_PACKAGES
        .iter()
        .map(|s| (*s).to_owned())
        .chain(libraries.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    let requests = names
        .into_iter()
        .map(|name| Request {
            name,
            version: None,
        })
        .collect();
    (
        requests,
        RUNNER_EXCLUDE.iter().map(|s| (*s).to_owned()).collect(),
    )
}

/// How `deb:auto` chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteChoice {
    /// The suite chosen.
    pub suite: String,
    /// One line per suite looked at (`bookworm: libc6 2.36 lacks GLIBC_2.38`).
    pub reasons: Vec<String>,
}

/// The library family a symbol version belongs to, and the minimum
/// upstream version of it that defines that symbol version.
fn need_of(symbol_version: &str) -> Option<(&'static str, Version)> {
    let (family, v) = if let Some(v) = symbol_version.strip_prefix("GLIBC_") {
        ("libc6", v)
    } else if let Some(v) = symbol_version.strip_prefix("OPENSSL_") {
        ("libssl3", v)
    } else {
        return None;
    };
    Version::parse(v).ok().map(|v| (family, v))
}

/// The newest upstream version of a library family in an archive
/// (`libssl3` also through trixie's `libssl3t64`, which provides it).
fn have(archive: &Archive, family: &str) -> Option<(String, Version)> {
    let mut all = archive.named(family);
    if all.is_empty() {
        all = archive.providers(family);
        all.sort_by(|a, b| b.version.cmp(&a.version));
    }
    let c = all.first()?;
    Version::parse(c.version.upstream())
        .ok()
        .map(|v| (c.name().to_owned(), v))
}

/// `deb:auto`: the oldest suite of `suites` whose glibc and OpenSSL define
/// every symbol version of `needs` (`GLIBC_2.34`, `OPENSSL_3.0.0`, as
/// preflight reads them from the release's ELF files). `template` gives
/// the mirrors, architecture and keyring; its suite is ignored.
pub fn choose_suite(
    fetch: &dyn Fetch,
    cache: &Cache,
    template: &Sources,
    suites: &[&str],
    needs: &[String],
    now: SystemTime,
) -> Result<SuiteChoice, DebianError> {
    let wanted: Vec<(&str, (&str, Version))> = needs
        .iter()
        .filter_map(|n| need_of(n).map(|w| (n.as_str(), w)))
        .collect();
    let mut reasons = Vec::new();
    for suite in suites {
        let sources = Sources {
            suite: (*suite).to_owned(),
            ..template.clone()
        };
        let archive = Archive::open(fetch, cache, &sources, now)?;
        let mut missing = Vec::new();
        for (need, (family, min)) in &wanted {
            match have(&archive, family) {
                Some((_, v)) if v >= *min => {}
                Some((name, v)) => missing.push(format!("{name} {v} lacks {need}")),
                None => missing.push(format!("no {family} for {need}")),
            }
        }
        if missing.is_empty() {
            reasons.push(format!("{suite}: has every symbol version needed"));
            return Ok(SuiteChoice {
                suite: (*suite).to_owned(),
                reasons,
            });
        }
        reasons.push(format!("{suite}: {}", missing.join(", ")));
    }
    Err(DebianError::Usage(format!(
        "deb:auto: no suite has the libraries the release needs ({})",
        reasons.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_versions_map_to_the_library_and_its_minimum_upstream_version() {
        let (f, v) = need_of("GLIBC_2.38").unwrap();
        assert_eq!((f, v.as_str()), ("libc6", "2.38"));
        assert!(Version::parse("2.36").unwrap() < v);
        let (f, v) = need_of("OPENSSL_3.4.0").unwrap();
        assert_eq!(f, "libssl3");
        assert!(Version::parse("3.0.20").unwrap() < v);
        assert!(Version::parse("3.5.9").unwrap() >= v);
        assert!(need_of("GLIBCXX_3.4.30").is_none());
    }

    #[test]
    fn the_runner_set_adds_the_release_libraries_and_excludes_the_package_manager() {
        let (reqs, ex) = runner_requests(&["libssl3".into(), "libc6".into()]);
        let names: Vec<&str> = reqs.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"libssl3") && names.contains(&"dash"));
        assert_eq!(names.iter().filter(|n| **n == "libc6").count(), 1);
        assert!(ex.contains(&"dpkg".to_owned()));
    }
}
