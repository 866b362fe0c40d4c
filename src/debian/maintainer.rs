//! What maintainer scripts would have done, where the image depends on it,
//! done by the tool — never by running the scripts:
//!
//! - `ca-certificates`: `/etc/ca-certificates.conf`, the bundle
//!   `/etc/ssl/certs/ca-certificates.crt`, the `NAME.pem` links and the
//!   `HASH.N` links, as its postinst, `update-ca-certificates` and
//!   `openssl rehash` write them (Debian's ca-certificates 20230311 source);
//! - `update-alternatives --install` lines of postinsts (mawk's `awk`):
//!   the `/etc/alternatives` links, highest priority winning;
//! - for a base made only of packages: `/etc/passwd` and `/etc/group` with
//!   `root` and `nobody`/`nogroup` (65534), as base-passwd would;
//! - the dpkg database: an updated `/var/lib/dpkg/status` (with
//!   `info/*.list` and `*.md5sums`) on a base that has one, else
//!   `/var/lib/dpkg/status.d/PKG` as distroless writes it — what `dpkg -l`,
//!   syft and trivy read.
//!
//! Every other script is listed in the report, not run.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::base::BaseFacts;
use super::cert_hash;
use super::deb::Control;
use super::deb822;
use super::error::DebianError;
use super::fetch::Cache;
use super::unpack::{Entry, Node, Tree, add_parents};

/// Bytes the tool writes into the layer, kept in one staging file.
pub(crate) struct Staging {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Staging {
    pub(crate) fn new(cache: &Cache) -> Result<Staging, DebianError> {
        let path = cache.temp_path("generated")?;
        let file = File::create(&path).map_err(DebianError::io("creating", &path))?;
        Ok(Staging { path, file, len: 0 })
    }

    fn add(&mut self, bytes: &[u8]) -> Result<Node, DebianError> {
        self.file
            .write_all(bytes)
            .map_err(DebianError::io("writing", &self.path))?;
        let node = Node::File {
            source: self.path.clone(),
            offset: self.len,
            size: bytes.len() as u64,
        };
        self.len += bytes.len() as u64;
        Ok(node)
    }

    /// Make the bytes readable by the layer writer.
    pub(crate) fn finish(&mut self) -> Result<(), DebianError> {
        self.file
            .flush()
            .map_err(DebianError::io("writing", &self.path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A package of the layer, as the scripts step sees it.
pub(crate) struct Pkg<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) architecture: &'a str,
    pub(crate) control: &'a Control,
    /// Its paths as it ships them, in its tar's order.
    pub(crate) paths: Vec<PathBuf>,
}

/// What the step did and left undone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptsReport {
    /// What the tool did in the scripts' stead.
    pub done: Vec<String>,
    /// `PACKAGE: script, script` — maintainer scripts not run.
    pub not_run: Vec<String>,
}

fn put_file(
    tree: &mut Tree<'_>,
    staging: &mut Staging,
    path: &str,
    bytes: &[u8],
    by: &str,
) -> Result<(), DebianError> {
    let path = Path::new(path);
    add_parents(tree, path, by);
    let dest = tree.resolve(path, false);
    let node = staging.add(bytes)?;
    tree.put(dest, entry(node, 0o644, by));
    Ok(())
}

fn put_link(tree: &mut Tree<'_>, path: &str, target: &str, by: &str) {
    let path = Path::new(path);
    add_parents(tree, path, by);
    let dest = tree.resolve(path, false);
    tree.put(dest, entry(Node::Symlink(target.into()), 0o777, by));
}

fn entry(node: Node, mode: u32, by: &str) -> Entry {
    Entry {
        node,
        mode,
        uid: 0,
        gid: 0,
        package: by.to_owned(),
    }
}

/// Run the steps on the tree of the packages being added.
pub(crate) fn apply(
    tree: &mut Tree<'_>,
    staging: &mut Staging,
    pkgs: &[Pkg<'_>],
    base: &BaseFacts,
    standalone: bool,
) -> Result<ScriptsReport, DebianError> {
    let mut report = ScriptsReport::default();
    if pkgs.iter().any(|p| p.name == "ca-certificates") {
        let n = ca_certificates(tree, staging)?;
        report.done.push(format!(
            "ca-certificates: /etc/ssl/certs/ca-certificates.crt and {n} certificate links written by the tool"
        ));
    }
    for line in alternatives(tree, pkgs, base) {
        report.done.push(line);
    }
    if standalone && !tree.exists(Path::new("etc/passwd")) {
        put_file(
            tree,
            staging,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            "guildhall-image",
        )?;
        put_file(
            tree,
            staging,
            "etc/group",
            b"root:x:0:\nnogroup:x:65534:\n",
            "guildhall-image",
        )?;
        report.done.push(
            "/etc/passwd and /etc/group with root and nobody (65534:65534) written by the tool"
                .into(),
        );
    }
    dpkg_database(tree, staging, pkgs, base)?;
    for p in pkgs {
        let scripts: Vec<&str> = p
            .control
            .scripts
            .keys()
            .map(String::as_str)
            .filter(|s| {
                matches!(
                    *s,
                    "preinst" | "postinst" | "prerm" | "postrm" | "config" | "triggers"
                )
            })
            .collect();
        if !scripts.is_empty() {
            report
                .not_run
                .push(format!("{} {}: {}", p.name, p.version, scripts.join(", ")));
        }
    }
    Ok(report)
}

/// `basename CERT .crt | sed -e 's/ /_/g' -e 's/[()]/=/g' -e 's/,/_/g'`.pem
fn pem_name(crt: &str) -> String {
    let base = crt.rsplit('/').next().unwrap_or(crt);
    let base = base.strip_suffix(".crt").unwrap_or(base);
    let mapped: String = base
        .chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            c => c,
        })
        .collect();
    format!("{mapped}.pem")
}

const CA_CONF_HEADER: &str =
    "# This file lists certificates that you wish to use or to ignore to be
# installed in /etc/ssl/certs.
# update-ca-certificates(8) will update /etc/ssl/certs by reading this file.
#
# This is autogenerated by dpkg-reconfigure ca-certificates.
# Certificates should be installed under /usr/share/ca-certificates
# and files with extension '.crt' is recognized as available certs.
#
# line begins with # is comment.
# line begins with ! is certificate filename to be deselected.
#
";

/// The certificate store, as a fresh install of ca-certificates leaves
/// it (every certificate enabled, debconf's default). Returns the number
/// of certificates.
fn ca_certificates(tree: &mut Tree<'_>, staging: &mut Staging) -> Result<usize, DebianError> {
    let dir = tree.resolve(Path::new("usr/share/ca-certificates"), true);
    let mut crts: Vec<String> = tree
        .nodes
        .iter()
        .filter(|(p, e)| {
            p.starts_with(&dir)
                && p.extension().is_some_and(|x| x == "crt")
                && !matches!(e.node, Node::Dir)
        })
        .filter_map(|(p, _)| p.strip_prefix(&dir).ok()?.to_str().map(str::to_owned))
        .collect();
    // The postinst builds the list with `sort` in the C locale: byte order.
    crts.sort();
    let mut conf = CA_CONF_HEADER.to_owned();
    let mut bundle = Vec::new();
    let mut pems: Vec<(String, Vec<u8>)> = Vec::new();
    for crt in &crts {
        conf.push_str(crt);
        conf.push('\n');
        let full = dir.join(crt);
        let bytes = tree
            .read(&full)
            .map_err(DebianError::io("reading the package's certificate", &full))?;
        bundle.extend_from_slice(&bytes);
        if !bytes.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        let pem = pem_name(crt);
        put_link(
            tree,
            &format!("etc/ssl/certs/{pem}"),
            &format!("/usr/share/ca-certificates/{crt}"),
            "ca-certificates",
        );
        pems.push((pem, bytes));
    }
    put_file(
        tree,
        staging,
        "etc/ca-certificates.conf",
        conf.as_bytes(),
        "ca-certificates",
    )?;
    put_file(
        tree,
        staging,
        "etc/ssl/certs/ca-certificates.crt",
        &bundle,
        "ca-certificates",
    )?;
    // openssl rehash: files in name order; HASH.0, HASH.1 … for distinct
    // certificates sharing a subject hash; identical ones skipped.
    pems.sort();
    let mut seen: BTreeMap<u32, Vec<[u8; 32]>> = BTreeMap::new();
    for (pem, bytes) in &pems {
        let certs = cert_hash::pem_certificates(bytes);
        let [der] = certs.as_slice() else { continue };
        let Some(hash) = cert_hash::subject_hash(der) else {
            tracing::warn!("{pem}: certificate subject does not parse; no hash link");
            continue;
        };
        let fp = cert_hash::fingerprint(der);
        let bucket = seen.entry(hash).or_default();
        if bucket.contains(&fp) {
            continue;
        }
        put_link(
            tree,
            &format!("etc/ssl/certs/{hash:08x}.{}", bucket.len()),
            pem,
            "ca-certificates",
        );
        bucket.push(fp);
    }
    Ok(crts.len())
}

/// `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…`
#[derive(Clone, Debug, PartialEq, Eq)]
struct Alternative {
    name: String,
    link: String,
    path: String,
    priority: i64,
    slaves: Vec<(String, String, String)>,
}

fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = words
            .windows(2)
            .position(|w| w[0] == "update-alternatives" && w[1] == "--install")
        else {
            continue;
        };
        let args = &words[i + 2..];
        let [link, name, path, prio, rest @ ..] = args else {
            continue;
        };
        let Ok(priority) = prio.parse() else { continue };
        let mut slaves = Vec::new();
        let mut r = rest;
        while let ["--slave", l, n, p, more @ ..] = r {
            slaves.push((l.to_string(), n.to_string(), p.to_string()));
            r = more;
        }
        let clean = |s: &str| s.trim_matches(|c| c == '"' || c == '\'').to_owned();
        if [link, name, path].iter().any(|s| s.contains('$')) {
            continue; // computed in the script: not ours to guess
        }
        out.push(Alternative {
            name: clean(name),
            link: clean(link),
            path: clean(path),
            priority,
            slaves: slaves
                .into_iter()
                .map(|(l, n, p)| (clean(&l), clean(&n), clean(&p)))
                .collect(),
        });
    }
    out
}

fn alternatives(tree: &mut Tree<'_>, pkgs: &[Pkg<'_>], base: &BaseFacts) -> Vec<String> {
    let mut best: BTreeMap<String, (Alternative, &str)> = BTreeMap::new();
    for p in pkgs {
        let Some(script) = p.control.scripts.get("postinst") else {
            continue;
        };
        for alt in parse_alternatives(script) {
            let better = best
                .get(&alt.name)
                .is_none_or(|(b, _)| alt.priority > b.priority);
            if better {
                best.insert(alt.name.clone(), (alt, p.name));
            }
        }
    }
    let mut done = Vec::new();
    for (name, (alt, pkg)) in best {
        let etc = format!("etc/alternatives/{name}");
        if base.symlinks.contains_key(Path::new(&etc)) {
            continue; // the base chose already
        }
        let rel = |s: &str| s.trim_start_matches('/').to_owned();
        if !tree.exists(Path::new(&rel(&alt.path))) {
            continue;
        }
        put_link(tree, &etc, &alt.path, pkg);
        put_link(tree, &rel(&alt.link), &format!("/{etc}"), pkg);
        for (link, sname, path) in &alt.slaves {
            if tree.exists(Path::new(&rel(path))) {
                let setc = format!("etc/alternatives/{sname}");
                put_link(tree, &setc, path, pkg);
                put_link(tree, &rel(link), &format!("/{setc}"), pkg);
            }
        }
        done.push(format!(
            "{pkg}: alternative {} -> {} set by the tool",
            alt.link, alt.path
        ));
    }
    done
}

/// The control paragraph as the dpkg database keeps it: `Status` after
/// `Package`.
fn status_paragraph(control: &Control) -> String {
    let mut out = String::new();
    for (name, value) in control.control.fields() {
        out.push_str(name);
        out.push(':');
        if !value.is_empty() && !value.starts_with('\n') {
            out.push(' ');
        }
        out.push_str(value);
        out.push('\n');
        if name.eq_ignore_ascii_case("Package") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out
}

fn dpkg_database(
    tree: &mut Tree<'_>,
    staging: &mut Staging,
    pkgs: &[Pkg<'_>],
    base: &BaseFacts,
) -> Result<(), DebianError> {
    let Some(status) = &base.dpkg_status else {
        // distroless: one control file per package.
        for p in pkgs {
            let text = p.control.control.to_text();
            put_file(
                tree,
                staging,
                &format!("var/lib/dpkg/status.d/{}", p.name),
                text.as_bytes(),
                p.name,
            )?;
            if !p.control.md5sums.is_empty() {
                put_file(
                    tree,
                    staging,
                    &format!("var/lib/dpkg/status.d/{}.md5sums", p.name),
                    p.control.md5sums.as_bytes(),
                    p.name,
                )?;
            }
        }
        return Ok(());
    };
    let text = String::from_utf8_lossy(status);
    let mut by_name: BTreeMap<(String, String), String> = BTreeMap::new();
    let paragraphs = deb822::parse(&text).map_err(|e| DebianError::Index {
        what: "/var/lib/dpkg/status of the base image".into(),
        reason: e.to_string(),
    })?;
    for p in paragraphs {
        let key = (
            p.get("Package").unwrap_or_default().to_owned(),
            p.get("Architecture").unwrap_or_default().to_owned(),
        );
        by_name.insert(key, p.to_text());
    }
    for p in pkgs {
        by_name.retain(|(n, _), _| n != p.name);
        by_name.insert(
            (p.name.to_owned(), p.architecture.to_owned()),
            status_paragraph(p.control),
        );
        let same = p.control.control.get("Multi-Arch") == Some("same");
        let stem = if same {
            format!("{}:{}", p.name, p.architecture)
        } else {
            p.name.to_owned()
        };
        let mut list = String::from("/.\n");
        for path in &p.paths {
            list.push('/');
            list.push_str(&path.to_string_lossy());
            list.push('\n');
        }
        put_file(
            tree,
            staging,
            &format!("var/lib/dpkg/info/{stem}.list"),
            list.as_bytes(),
            p.name,
        )?;
        if !p.control.md5sums.is_empty() {
            put_file(
                tree,
                staging,
                &format!("var/lib/dpkg/info/{stem}.md5sums"),
                p.control.md5sums.as_bytes(),
                p.name,
            )?;
        }
    }
    let joined: Vec<String> = by_name.into_values().collect();
    put_file(
        tree,
        staging,
        "var/lib/dpkg/status",
        joined.join("\n").as_bytes(),
        "dpkg database",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_names_are_made_as_update_ca_certificates_makes_them() {
        assert_eq!(pem_name("mozilla/ACCVRAIZ1.crt"), "ACCVRAIZ1.pem");
        assert_eq!(
            pem_name("mozilla/Hellenic_Academic_and_Research_Institutions_RootCA_2015.crt"),
            "Hellenic_Academic_and_Research_Institutions_RootCA_2015.pem"
        );
        assert_eq!(
            pem_name("mozilla/NetLock Arany (Class Gold), Root.crt"),
            "NetLock_Arany_=Class_Gold=__Root.pem"
        );
    }

    #[test]
    fn alternatives_are_read_from_postinst_lines_with_their_slaves() {
        let script = "#!/bin/sh\nset -e\nif [ \"$1\" = \"configure\" ]; then\n        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\\n            --slave /usr/bin/nawk nawk /usr/bin/mawk\nfi\nupdate-alternatives --install \"$x\" y z 1\n";
        let alts = parse_alternatives(script);
        assert_eq!(alts.len(), 1, "{alts:?}");
        assert_eq!(alts[0].link, "/usr/bin/awk");
        assert_eq!(alts[0].path, "/usr/bin/mawk");
        assert_eq!(alts[0].priority, 5);
        assert_eq!(
            alts[0].slaves[1],
            (
                "/usr/bin/nawk".into(),
                "nawk".into(),
                "/usr/bin/mawk".into()
            )
        );
    }
}
