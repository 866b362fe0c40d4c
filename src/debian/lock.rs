//! `guildhall-image.lock`: every Debian package of the image (name,
//! version, architecture, pocket, pool file, size, sha256, and why it is
//! in) as TOML, one table per package, sorted, so a change reads well in a
//! diff. A build from the same lock uses exactly these files, verified by
//! the sha256 recorded here.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::DebianError;
use super::index::{Archive, PocketKind};
use super::release::{format_date, snapshot_stamp};
use super::resolve::Resolution;

/// The lock file's name, beside `guildhall-image.toml`.
pub const LOCK_FILE: &str = "guildhall-image.lock";
/// The format version written.
pub const LOCK_VERSION: u32 = 1;

/// What the packages were resolved from: when any of it changes, the lock
/// no longer says what to build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInputs {
    /// The suite (`bookworm`).
    pub suite: String,
    /// The architecture (`amd64`).
    pub architecture: String,
    /// The base the packages go onto (its digest, or `deb:SUITE`).
    pub base: String,
    /// The requests, sorted (`libssl3`, `tzdata=2024a-0+deb12u1`).
    pub requests: Vec<String>,
    /// Packages left out on purpose, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl LockInputs {
    /// Inputs with the lists sorted and deduplicated.
    pub fn new(
        suite: &str,
        architecture: &str,
        base: &str,
        requests: impl IntoIterator<Item = String>,
        exclude: impl IntoIterator<Item = String>,
    ) -> LockInputs {
        let mut requests: Vec<String> = requests.into_iter().collect();
        requests.sort();
        requests.dedup();
        let mut exclude: Vec<String> = exclude.into_iter().collect();
        exclude.sort();
        exclude.dedup();
        LockInputs {
            suite: suite.to_owned(),
            architecture: architecture.to_owned(),
            base: base.to_owned(),
            requests,
            exclude,
        }
    }
}

/// A pocket the packages came from, and when its index was signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPocket {
    /// `bookworm-security`.
    pub name: String,
    /// `release`, `updates` or `security`.
    pub kind: String,
    /// The `Date` of its `InRelease` at resolution: the snapshot archive
    /// has the files of that day.
    pub date: String,
}

/// One package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
    /// The pocket it was found in (`bookworm-security`).
    pub pocket: String,
    /// The pool file (`pool/main/o/openssl/libssl3_…_amd64.deb`).
    pub filename: String,
    /// Its size.
    pub size: u64,
    /// Its sha256.
    pub sha256: String,
    /// Why it is in (a request, or the dependency that pulled it).
    pub why: String,
}

/// The lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Format version.
    pub version: u32,
    /// What was resolved.
    pub inputs: LockInputs,
    /// The pockets.
    #[serde(rename = "pocket", default)]
    pub pockets: Vec<LockedPocket>,
    /// The packages, sorted by name.
    #[serde(rename = "package", default)]
    pub packages: Vec<LockedPackage>,
}

const HEADER: &str = "# guildhall-image.lock: the Debian packages of the image, resolved and\n# verified by guildhall-image. Builds use exactly these files (checked by\n# sha256); `--update-packages` re-resolves, `--locked` refuses to change it.\n# Commit it; edit guildhall-image.toml instead of this file.\n\n";

fn kind_name(k: PocketKind) -> &'static str {
    match k {
        PocketKind::Release => "release",
        PocketKind::Updates => "updates",
        PocketKind::Security => "security",
    }
}

/// The pocket kind of a lock entry.
pub fn pocket_kind(kind: &str) -> Option<PocketKind> {
    match kind {
        "release" => Some(PocketKind::Release),
        "updates" => Some(PocketKind::Updates),
        "security" => Some(PocketKind::Security),
        _ => None,
    }
}

impl Lock {
    /// The lock of a resolution.
    pub fn from_resolution(inputs: LockInputs, archive: &Archive, res: &Resolution) -> Lock {
        let mut used = vec![false; archive.pockets.len()];
        let mut packages: Vec<LockedPackage> = res
            .packages
            .iter()
            .map(|c| {
                let k = &c.candidate;
                if let Some(u) = used.get_mut(k.pocket) {
                    *u = true;
                }
                LockedPackage {
                    name: k.name().to_owned(),
                    version: k.version.to_string(),
                    architecture: k.architecture().to_owned(),
                    pocket: archive
                        .pockets
                        .get(k.pocket)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    filename: k.filename().to_owned(),
                    size: k.size,
                    sha256: k.sha256.hex(),
                    why: c.why.to_string(),
                }
            })
            .collect();
        packages.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.architecture.cmp(&b.architecture))
        });
        let pockets = archive
            .pockets
            .iter()
            .zip(used)
            .filter(|(_, u)| *u)
            .map(|(p, _)| LockedPocket {
                name: p.name.clone(),
                kind: kind_name(p.kind).into(),
                date: format_date(p.release.date),
            })
            .collect();
        Lock {
            version: LOCK_VERSION,
            inputs,
            pockets,
            packages,
        }
    }

    /// Parse a lock file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Lock, DebianError> {
        let bad = |reason: String| DebianError::Lock {
            path: path.to_owned(),
            reason,
        };
        let lock: Lock = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if lock.version != LOCK_VERSION {
            return Err(bad(format!(
                "format version {} is not {LOCK_VERSION}; re-resolve with --update-packages",
                lock.version
            )));
        }
        for p in &lock.packages {
            if super::fetch::Sha256::from_hex(&p.sha256).is_none() {
                return Err(bad(format!(
                    "package {}: sha256 {:?} is not a sha256",
                    p.name, p.sha256
                )));
            }
            let pocket = lock.pockets.iter().find(|k| k.name == p.pocket);
            if pocket.and_then(|k| pocket_kind(&k.kind)).is_none() {
                return Err(bad(format!(
                    "package {}: pocket {:?} is not listed",
                    p.name, p.pocket
                )));
            }
            if p.filename.starts_with('/') || p.filename.split('/').any(|c| c == "..") {
                return Err(bad(format!(
                    "package {}: file name {:?} leaves the mirror",
                    p.name, p.filename
                )));
            }
        }
        Ok(lock)
    }

    /// Read the lock at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lock>, DebianError> {
        match fs::read_to_string(path) {
            Ok(text) => Lock::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DebianError::Io {
                action: "reading",
                path: path.to_owned(),
                source: e,
            }),
        }
    }

    /// The lock as TOML, with its header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a lock always serialises");
        format!("{HEADER}{body}")
    }

    /// Write it to `path` (atomically: a temporary file renamed).
    pub fn write(&self, path: &Path) -> Result<(), DebianError> {
        let tmp = path.with_extension("lock.tmp");
        let mut f = fs::File::create(&tmp).map_err(DebianError::io("writing", &tmp))?;
        f.write_all(self.to_toml().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(DebianError::io("writing", &tmp))?;
        fs::rename(&tmp, path).map_err(DebianError::io("writing", path))
    }

    /// Why the lock does not fit these inputs, if it does not.
    pub fn mismatch(&self, inputs: &LockInputs) -> Option<String> {
        let i = &self.inputs;
        if i.suite != inputs.suite {
            return Some(format!(
                "suite {} is locked, {} is asked for",
                i.suite, inputs.suite
            ));
        }
        if i.architecture != inputs.architecture {
            return Some(format!(
                "architecture {} is locked, {} is asked for",
                i.architecture, inputs.architecture
            ));
        }
        if i.base != inputs.base {
            return Some(format!("the base changed ({} → {})", i.base, inputs.base));
        }
        if i.requests != inputs.requests {
            return Some(format!(
                "the packages asked for changed ([{}] → [{}])",
                i.requests.join(", "),
                inputs.requests.join(", ")
            ));
        }
        if i.exclude != inputs.exclude {
            return Some("the excluded packages changed".into());
        }
        None
    }

    /// A snapshot.debian.org mirror URL for a pocket of this lock: the
    /// archive as it was when the lock was made.
    pub fn snapshot_url(&self, pocket: &str) -> String {
        let Some(p) = self.pockets.iter().find(|p| p.name == pocket) else {
            return "https://snapshot.debian.org/".into();
        };
        let archive = if p.kind == "security" {
            "debian-security"
        } else {
            "debian"
        };
        match super::release::parse_date(&p.date) {
            Some(t) => format!(
                "https://snapshot.debian.org/archive/{archive}/{}/",
                snapshot_stamp(t)
            ),
            None => format!("https://snapshot.debian.org/archive/{archive}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            version: 1,
            inputs: LockInputs::new(
                "bookworm",
                "amd64",
                "sha256:abc",
                ["libssl3".to_owned(), "ca-certificates".to_owned()],
                [],
            ),
            pockets: vec![LockedPocket {
                name: "bookworm-security".into(),
                kind: "security".into(),
                date: "Mon, 30 Nov 2026 00:22:33 UTC".into(),
            }],
            packages: vec![LockedPackage {
                name: "libssl3".into(),
                version: "3.0.20-1~deb12u2".into(),
                architecture: "amd64".into(),
                pocket: "bookworm-security".into(),
                filename: "pool/updates/main/o/openssl/libssl3_3.0.20-1~deb12u2_amd64.deb".into(),
                size: 2_036_016,
                sha256: "89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025".into(),
                why: "requested (libssl3)".into(),
            }],
        }
    }

    #[test]
    fn a_lock_round_trips_through_diff_friendly_toml() {
        let lock = sample();
        let text = lock.to_toml();
        assert!(text.starts_with("# guildhall-image.lock"));
        assert!(
            text.contains("[[package]]\nname = \"libssl3\"\nversion = \"3.0.20-1~deb12u2\"\n"),
            "{text}"
        );
        assert!(
            text.contains("requests = [\"ca-certificates\", \"libssl3\"]"),
            "{text}"
        );
        assert_eq!(Lock::parse(&text, Path::new("l")).unwrap(), lock);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LOCK_FILE);
        assert!(Lock::read(&p).unwrap().is_none());
        lock.write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), Some(lock));
    }

    #[test]
    fn a_changed_input_is_named_and_the_snapshot_url_is_the_lock_day() {
        let lock = sample();
        let mut inputs = lock.inputs.clone();
        assert_eq!(lock.mismatch(&inputs), None);
        inputs.requests.push("tzdata".into());
        assert!(
            lock.mismatch(&inputs)
                .unwrap()
                .contains("→ [ca-certificates, libssl3, tzdata]")
        );
        assert_eq!(
            lock.snapshot_url("bookworm-security"),
            "https://snapshot.debian.org/archive/debian-security/20261130T002233Z/"
        );
    }

    #[test]
    fn a_lock_that_points_outside_the_mirror_or_has_no_hash_is_refused() {
        let mut lock = sample();
        lock.packages[0].filename = "../../etc/passwd".into();
        let e = Lock::parse(&lock.to_toml(), Path::new("x.lock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaves the mirror"), "{e}");
        let mut lock = sample();
        lock.packages[0].sha256 = "zz".into();
        assert!(Lock::parse(&lock.to_toml(), Path::new("x.lock")).is_err());
        assert!(
            Lock::parse(
                "version = 9\n[inputs]\nsuite='a'\narchitecture='b'\nbase='c'\nrequests=[]\n",
                Path::new("x")
            )
            .is_err()
        );
    }
}
