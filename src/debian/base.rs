//! What the packages go onto: the base image's installed packages (its
//! dpkg database, `/var/lib/dpkg/status` and distroless-style
//! `status.d/`) and its symlinks (merged `/usr`: `bin -> usr/bin`, …),
//! read from a root directory, from layer tars, or given as bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::deb822::{self, Paragraph};
use super::error::DebianError;
use super::index::MultiArch;
use super::relation::{Provided, parse_provides};
use super::version::Version;

/// `var/lib/dpkg/status`.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
/// `var/lib/dpkg/status.d` (distroless).
pub const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";

/// A package the base has.
#[derive(Clone, Debug)]
pub struct InstalledPackage {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: Version,
    /// `Architecture`.
    pub architecture: String,
    /// `Multi-Arch`.
    pub multi_arch: MultiArch,
    /// `Provides`.
    pub provides: Vec<Provided>,
    /// `Essential: yes`.
    pub essential: bool,
}

/// The base image, as far as packages care.
#[derive(Clone, Debug, Default)]
pub struct BaseFacts {
    /// Installed packages by name.
    pub installed: BTreeMap<String, InstalledPackage>,
    /// Every symlink: path without leading `/` → target as stored.
    pub symlinks: BTreeMap<PathBuf, PathBuf>,
    /// Every directory (path without leading `/`).
    pub dirs: BTreeSet<PathBuf>,
    /// The bytes of `var/lib/dpkg/status`, when the base has one: the
    /// packages layer writes an updated copy so `dpkg -l` sees the
    /// packages it adds.
    pub dpkg_status: Option<Vec<u8>>,
    /// The text of `/etc/os-release` (or `/usr/lib/os-release`, which
    /// Debian's `/etc/os-release` links to), when the base has one.
    pub os_release: Option<String>,
    /// The dpkg database texts `installed` was read from, in order (what
    /// [`BaseFacts::to_record`] keeps).
    sources: Vec<(String, Vec<u8>)>,
}

/// [`BaseFacts`] as remembered between builds: everything it was made
/// from, so that it is rebuilt exactly (the dpkg `status` bytes go into the
/// packages layer).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    version: u32,
    symlinks: Vec<(PathBuf, PathBuf)>,
    dirs: Vec<PathBuf>,
    dpkg_status: Option<String>,
    os_release: Option<String>,
    sources: Vec<(String, String)>,
}

/// `etc/os-release`, and where Debian keeps the file it links to.
const OS_RELEASE: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// Status values dpkg counts as installed (`install ok installed`, or
/// waiting only on triggers).
fn is_installed(status: Option<&str>) -> bool {
    match status {
        // distroless status.d entries have no Status field.
        None => true,
        Some(s) => matches!(
            s.split_whitespace().nth(2),
            Some("installed" | "triggers-pending" | "triggers-awaited")
        ),
    }
}

impl BaseFacts {
    /// The Debian codename of the base (`VERSION_CODENAME` of a Debian
    /// `os-release`: `bookworm`, `trixie`); `None` for another
    /// distribution, or when there is no such file.
    pub fn debian_suite(&self) -> Option<String> {
        let text = self.os_release.as_deref()?;
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
                Some(v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
            })
        };
        let debian = field("ID").as_deref() == Some("debian")
            || field("ID_LIKE").is_some_and(|l| l.split_whitespace().any(|w| w == "debian"));
        if !debian {
            return None;
        }
        field("VERSION_CODENAME").filter(|c| !c.is_empty())
    }

    /// These facts as text, to remember them between builds (reading a base's
    /// layers again costs a decompression of all of them); `None` when a
    /// database text is not UTF-8 (then they are simply not remembered).
    pub fn to_record(&self) -> Option<String> {
        let text = |b: &Vec<u8>| String::from_utf8(b.clone()).ok();
        let r = Record {
            version: 1,
            symlinks: self
                .symlinks
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            dirs: self.dirs.iter().cloned().collect(),
            dpkg_status: match &self.dpkg_status {
                Some(b) => Some(text(b)?),
                None => None,
            },
            os_release: self.os_release.clone(),
            sources: self
                .sources
                .iter()
                .map(|(w, b)| Some((w.clone(), text(b)?)))
                .collect::<Option<_>>()?,
        };
        serde_json::to_string(&r).ok()
    }

    /// Facts from [`BaseFacts::to_record`]'s text, exactly as they were.
    pub fn from_record(text: &str) -> Result<BaseFacts, DebianError> {
        let bad = |reason: String| DebianError::Index {
            what: "the remembered base facts".into(),
            reason,
        };
        let r: Record = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if r.version != 1 {
            return Err(bad(format!("version {}", r.version)));
        }
        let mut facts = BaseFacts {
            symlinks: r.symlinks.into_iter().collect(),
            dirs: r.dirs.into_iter().collect(),
            dpkg_status: r.dpkg_status.map(String::into_bytes),
            os_release: r.os_release,
            ..BaseFacts::default()
        };
        for (what, text) in r.sources {
            facts.add_dpkg_db(&what, text.as_bytes())?;
        }
        Ok(facts)
    }

    /// A base with nothing: for `deb:SUITE`.
    pub fn empty() -> BaseFacts {
        BaseFacts::default()
    }

    /// Add the packages of a dpkg `status` file (or one `status.d/`
    /// entry); `what` names it in errors.
    pub fn add_dpkg_db(&mut self, what: &str, bytes: &[u8]) -> Result<(), DebianError> {
        let text = String::from_utf8_lossy(bytes);
        let bad = |reason: String| DebianError::Index {
            what: what.to_owned(),
            reason,
        };
        for p in deb822::parse(&text).map_err(|e| bad(e.to_string()))? {
            if !is_installed(p.get("Status")) {
                continue;
            }
            let pkg = installed_of(&p).map_err(bad)?;
            self.installed.insert(pkg.name.clone(), pkg);
        }
        self.sources.push((what.to_owned(), bytes.to_vec()));
        Ok(())
    }

    /// Read a root file system on disk: its dpkg database and its symlinks
    /// (the whole tree is walked, symlinks are not followed).
    pub fn from_dir(root: &Path) -> Result<BaseFacts, DebianError> {
        let mut facts = BaseFacts::default();
        let status = root.join(DPKG_STATUS);
        if let Ok(bytes) = fs::read(&status) {
            facts.add_dpkg_db(&status.display().to_string(), &bytes)?;
            facts.dpkg_status = Some(bytes);
        }
        let dir = root.join(DPKG_STATUS_D);
        if let Ok(rd) = fs::read_dir(&dir) {
            let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            for p in names {
                if p.extension().is_some_and(|e| e == "md5sums") || !p.is_file() {
                    continue;
                }
                let bytes = fs::read(&p).map_err(DebianError::io("reading", &p))?;
                facts.add_dpkg_db(&p.display().to_string(), &bytes)?;
            }
        }
        facts.os_release = OS_RELEASE
            .iter()
            .find_map(|p| fs::read_to_string(root.join(p)).ok());
        walk(root, Path::new(""), &mut facts.symlinks, &mut facts.dirs)?;
        Ok(facts)
    }

    /// Read an image's layer blobs, bottom first, each with its packing
    /// (`true` = gzip, `false` = tar, or a [`crate::compress::Packing`]):
    /// whiteouts applied, symlinks and the dpkg database collected.
    pub fn from_layers<R: Read, P: Into<crate::compress::Packing>>(
        layers: impl IntoIterator<Item = (R, P)>,
    ) -> Result<BaseFacts, DebianError> {
        let mut symlinks: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let mut db: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        let mut os_release: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (index, (reader, packing)) in layers.into_iter().enumerate() {
            let what = format!("layer {index} of the base image");
            let io = |e: std::io::Error| DebianError::Index {
                what: what.clone(),
                reason: e.to_string(),
            };
            let reader = packing.into().decode(reader).map_err(io)?;
            let mut ar = tar::Archive::new(reader);
            for e in ar.entries().map_err(io)? {
                let mut e = e.map_err(io)?;
                let raw = e.path_bytes().into_owned();
                let path = normalize(Path::new(std::ffi::OsStr::from_bytes(&raw)));
                let name = path
                    .file_name()
                    .map(|n| n.as_bytes().to_vec())
                    .unwrap_or_default();
                if let Some(hidden) = name.strip_prefix(b".wh.") {
                    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
                    if hidden == b".wh..opq" {
                        symlinks.retain(|p, _| !p.starts_with(&parent) || *p == parent);
                        dirs.retain(|p| !p.starts_with(&parent) || *p == parent);
                        db.retain(|p, _| !p.starts_with(&parent));
                        os_release.retain(|p, _| !p.starts_with(&parent));
                    } else {
                        let gone = parent.join(std::ffi::OsStr::from_bytes(hidden));
                        symlinks.retain(|p, _| !p.starts_with(&gone));
                        dirs.retain(|p| !p.starts_with(&gone));
                        db.retain(|p, _| !p.starts_with(&gone));
                        os_release.retain(|p, _| !p.starts_with(&gone));
                    }
                    continue;
                }
                // Anything added replaces what was there.
                symlinks.remove(&path);
                db.remove(&path);
                os_release.remove(&path);
                let kind = e.header().entry_type();
                if kind.is_dir() {
                    dirs.insert(path);
                    continue;
                }
                dirs.remove(&path);
                if kind.is_symlink() {
                    if let Some(t) = e.link_name().map_err(io)? {
                        symlinks.insert(path, t.into_owned());
                    }
                } else if kind.is_file() && OS_RELEASE.iter().any(|p| path == Path::new(p)) {
                    let mut bytes = Vec::new();
                    e.by_ref()
                        .take(64 << 10)
                        .read_to_end(&mut bytes)
                        .map_err(io)?;
                    os_release.insert(path, String::from_utf8_lossy(&bytes).into_owned());
                } else if kind.is_file()
                    && (path == Path::new(DPKG_STATUS)
                        || (path.parent() == Some(Path::new(DPKG_STATUS_D))
                            && path.extension().is_none_or(|x| x != "md5sums")))
                {
                    let mut bytes = Vec::new();
                    e.by_ref()
                        .take(256 << 20)
                        .read_to_end(&mut bytes)
                        .map_err(io)?;
                    db.insert(path, bytes);
                }
            }
        }
        // `etc/os-release` when it is a file, else what it links to.
        let os_release = OS_RELEASE
            .iter()
            .find_map(|p| os_release.remove(Path::new(p)));
        let mut facts = BaseFacts {
            symlinks,
            dirs,
            os_release,
            ..BaseFacts::default()
        };
        for (path, bytes) in db {
            facts.add_dpkg_db(&format!("/{} of the base image", path.display()), &bytes)?;
            if path == Path::new(DPKG_STATUS) {
                facts.dpkg_status = Some(bytes);
            }
        }
        Ok(facts)
    }
}

fn installed_of(p: &Paragraph) -> Result<InstalledPackage, String> {
    let name = p.get("Package").ok_or("a paragraph without Package")?;
    let version = Version::parse(p.get("Version").ok_or(format!("{name}: no Version"))?)
        .map_err(|e| format!("{name}: {e}"))?;
    let provides = parse_provides(p.get("Provides").unwrap_or_default())
        .map_err(|e| format!("{name}: Provides: {e}"))?;
    Ok(InstalledPackage {
        name: name.to_owned(),
        version,
        architecture: p.get("Architecture").unwrap_or("all").to_owned(),
        multi_arch: match p.get("Multi-Arch") {
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            _ => MultiArch::No,
        },
        provides,
        essential: p.get("Essential").is_some_and(|v| v == "yes"),
    })
}

/// `./usr//bin/` → `usr/bin`.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<PathBuf, PathBuf>,
    dirs: &mut BTreeSet<PathBuf>,
) -> Result<(), DebianError> {
    let dir = root.join(rel);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e.map_err(DebianError::io("listing", &dir))?;
        let ft = e
            .file_type()
            .map_err(DebianError::io("reading", e.path()))?;
        let child = rel.join(e.file_name());
        if ft.is_symlink() {
            let t = fs::read_link(e.path()).map_err(DebianError::io("reading link", e.path()))?;
            out.insert(child, t);
        } else if ft.is_dir() {
            dirs.insert(child.clone());
            // Kernel file systems of a chroot are not the image's.
            let virtual_fs = rel.as_os_str().is_empty()
                && ["proc", "sys", "dev"].iter().any(|v| e.file_name() == *v);
            if !virtual_fs {
                walk(root, &child, out, dirs)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_facts_come_back_exactly_as_they_were() {
        let mut f = BaseFacts::default();
        let status = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u9\nArchitecture: amd64\nMulti-Arch: same\n\nPackage: dash\nStatus: install ok installed\nVersion: 0.5.12-2\nArchitecture: amd64\nEssential: yes\nProvides: sh\n";
        f.add_dpkg_db("status", status).unwrap();
        f.dpkg_status = Some(status.to_vec());
        f.symlinks.insert("bin".into(), "usr/bin".into());
        f.dirs.insert("usr/bin".into());
        f.os_release = Some("ID=debian\nVERSION_CODENAME=bookworm\n".into());
        let back = BaseFacts::from_record(&f.to_record().unwrap()).unwrap();
        assert_eq!(back.dpkg_status, f.dpkg_status);
        assert_eq!(back.symlinks, f.symlinks);
        assert_eq!(back.dirs, f.dirs);
        assert_eq!(back.debian_suite().as_deref(), Some("bookworm"));
        let names = |f: &BaseFacts| f.installed.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&back), names(&f));
        assert!(back.installed["dash"].essential);
        assert_eq!(back.to_record(), f.to_record());
    }

    #[test]
    fn the_suite_is_the_codename_of_a_debian_os_release_and_nothing_for_others() {
        let facts = |text: &str| BaseFacts {
            os_release: Some(text.to_owned()),
            ..BaseFacts::default()
        };
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(facts(bookworm).debian_suite().as_deref(), Some("bookworm"));
        let ubuntu = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert_eq!(facts(ubuntu).debian_suite().as_deref(), Some("noble"));
        let alpine = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.0\n";
        assert_eq!(facts(alpine).debian_suite(), None);
        assert_eq!(BaseFacts::empty().debian_suite(), None);
    }

    #[test]
    fn only_installed_entries_of_a_status_file_count() {
        let mut f = BaseFacts::empty();
        f.add_dpkg_db(
            "status",
            b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u14\nArchitecture: amd64\nMulti-Arch: same\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: mawk\nStatus: install ok installed\nVersion: 1.3.4\nProvides: awk\nEssential: yes\n",
        )
        .unwrap();
        assert_eq!(f.installed.keys().collect::<Vec<_>>(), ["libc6", "mawk"]);
        assert_eq!(f.installed["libc6"].multi_arch, MultiArch::Same);
        assert_eq!(f.installed["mawk"].provides[0].name, "awk");
        assert!(f.installed["mawk"].essential);
        // A distroless status.d entry has no Status: it is installed.
        f.add_dpkg_db(
            "status.d/tzdata",
            b"Package: tzdata\nVersion: 2024a\nArchitecture: all\n",
        )
        .unwrap();
        assert!(f.installed.contains_key("tzdata"));
    }

    #[test]
    fn layers_give_symlinks_and_the_dpkg_database_with_whiteouts_applied() {
        fn layer(entries: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for (path, link, data) in entries {
                let mut h = tar::Header::new_gnu();
                match link {
                    Some(t) => {
                        h.set_entry_type(tar::EntryType::Symlink);
                        h.set_size(0);
                        b.append_link(&mut h, path, t).unwrap();
                    }
                    None => {
                        h.set_size(data.len() as u64);
                        h.set_mode(0o644);
                        h.set_cksum();
                        b.append_data(&mut h, path, *data).unwrap();
                    }
                }
            }
            b.into_inner().unwrap()
        }
        let status =
            b"Package: libc6\nStatus: install ok installed\nVersion: 2.36\nArchitecture: amd64\n";
        let l0 = layer(&[
            ("bin", Some("usr/bin"), b""),
            ("lib", Some("usr/lib"), b""),
            ("opt/x", Some("y"), b""),
            ("var/lib/dpkg/status", None, status),
        ]);
        let l1 = layer(&[
            ("opt/.wh.x", None, b""),
            ("usr/bin/awk", Some("/etc/alternatives/awk"), b""),
        ]);
        let f = BaseFacts::from_layers([(l0.as_slice(), false), (l1.as_slice(), false)]).unwrap();
        let links: Vec<_> = f.symlinks.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(links, ["bin", "lib", "usr/bin/awk"]);
        assert!(f.installed.contains_key("libc6"));
        assert_eq!(f.dpkg_status.as_deref(), Some(&status[..]));
    }
}
