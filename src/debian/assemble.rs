//! The packages layer: verified `.deb`s unpacked onto the base's file tree
//! (in parallel, each `data.tar` once per cache), what maintainer scripts
//! would have done done by the tool, and the result written as one
//! deterministic gzip layer.

use std::io::Write;
use std::path::PathBuf;

use super::base::BaseFacts;
use super::deb::{Control, Deb};
use super::error::DebianError;
use super::fetch::Cache;
use super::maintainer::{self, Pkg, ScriptsReport, Staging};
use super::plan::DebFile;
use super::unpack::{DataEntry, Entry, Node, Tree, apply, data_entries, slim_excludes};
use crate::layer::{LayerOptions, LayerStats, write_explicit_layer};
use crate::progress::Task;

/// How to build the layer.
#[derive(Clone, Copy)]
pub struct LayerRequest<'a> {
    /// The packages (from [`super::plan::prepare`]).
    pub debs: &'a [DebFile],
    /// The base they go onto ([`BaseFacts::empty`] for a `deb:` base).
    pub base: &'a BaseFacts,
    /// A base made of these packages alone (`deb:SUITE`): the merged-`/usr`
    /// symlinks and `/etc/passwd`, `/etc/group` are made by the tool.
    pub standalone: bool,
    /// Leave out what debian-slim leaves out (documentation but copyright
    /// files, man and info pages, translations).
    pub slim: bool,
    /// Debian's name of the architecture (`amd64`).
    pub architecture: &'a str,
    /// Where unpacked `data.tar`s are kept.
    pub cache: &'a Cache,
    /// Layer format options (mtime, gzip level, threads); the owner comes
    /// from the packages.
    pub options: &'a LayerOptions,
    /// Uncompressed bytes written, as they go.
    pub progress: Option<&'a Task>,
}

/// What the layer holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerReport {
    /// `NAME VERSION` of every package, sorted.
    pub packages: Vec<String>,
    /// What the tool did in the maintainer scripts' stead, and what it left.
    pub scripts: ScriptsReport,
    /// Paths two packages (or a package and the tool) both wrote.
    pub clashes: Vec<String>,
}

struct Unpacked {
    deb: DebFile,
    control: Control,
    entries: Vec<DataEntry>,
}

fn unpack_all(debs: &[DebFile], cache: &Cache) -> Result<Vec<Unpacked>, DebianError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(debs.len().max(1));
    let chunks: Vec<Vec<(usize, &DebFile)>> = (0..threads)
        .map(|t| debs.iter().enumerate().skip(t).step_by(threads).collect())
        .collect();
    let mut out: Vec<(usize, Result<Unpacked, DebianError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, d)| {
                            let what = format!("{} {}", d.package.name, d.package.version);
                            let r = Deb::open(&d.path, &what).and_then(|deb| {
                                let (_, entries) =
                                    data_entries(cache, &deb, &d.path, &d.sha256, &what)?;
                                Ok(Unpacked {
                                    deb: d.clone(),
                                    control: deb.control,
                                    entries,
                                })
                            });
                            (i, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The merged-`/usr` links a `deb:` base starts from, as debootstrap makes
/// them on bookworm (and trixie's base-files ships them).
fn merged_usr(architecture: &str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin")];
    if architecture == "amd64" {
        v.push(("lib64", "usr/lib64"));
    }
    v
}

/// Unpack the packages and write the layer to `out`.
pub fn write_layer<W: Write + Send>(
    req: &LayerRequest<'_>,
    out: W,
) -> Result<(LayerStats, W, LayerReport), DebianError> {
    let mut debs = req.debs.to_vec();
    debs.sort_by(|a, b| a.package.name.cmp(&b.package.name));
    let unpacked = unpack_all(&debs, req.cache)?;
    let mut tree = Tree::new(&req.base.symlinks).with_base_dirs(&req.base.dirs);
    if req.standalone {
        let dir = |package: &str| Entry {
            node: Node::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            package: package.to_owned(),
        };
        tree.put(PathBuf::from("usr"), dir("guildhall-image"));
        for (link, target) in merged_usr(req.architecture) {
            tree.put(PathBuf::from(target), dir("guildhall-image"));
            tree.put(
                PathBuf::from(link),
                Entry {
                    node: Node::Symlink(target.into()),
                    mode: 0o777,
                    ..dir("guildhall-image")
                },
            );
        }
    }
    for u in &unpacked {
        apply(&mut tree, &u.deb.package.name, &u.entries, req.slim);
    }
    let pkgs: Vec<Pkg<'_>> = unpacked
        .iter()
        .map(|u| Pkg {
            name: &u.deb.package.name,
            version: &u.deb.package.version,
            architecture: &u.deb.package.architecture,
            control: &u.control,
            paths: u
                .entries
                .iter()
                .map(|e| e.path.clone())
                .filter(|p| !(req.slim && slim_excludes(p)))
                .collect(),
        })
        .collect();
    let mut staging = Staging::new(req.cache)?;
    let scripts = maintainer::apply(&mut tree, &mut staging, &pkgs, req.base, req.standalone)?;
    staging.finish()?;
    let entries = tree.entries();
    let (stats, out) =
        write_explicit_layer("debian packages", &entries, req.options, out, req.progress)?;
    let report = LayerReport {
        packages: debs
            .iter()
            .map(|d| format!("{} {}", d.package.name, d.package.version))
            .collect(),
        scripts,
        clashes: tree.clashes.clone(),
    };
    drop(staging);
    Ok((stats, out, report))
}

/// Bumped whenever the way this module lays packages out changes, so that
/// remembered layers are not reused across such changes.
const LAYOUT_VERSION: &str = "guildhall-image debian layer v1";

/// What the layer of `req` will be, without building it: the sha256 of
/// everything its bytes depend on (the `.deb`s' sha256, the base's
/// symlinks, directories and dpkg `status`, the flags, the layer options that change
/// bytes). Equal fingerprints give byte-identical layers, so a build can
/// remember the diff ID under it (as it does for the release's layers) and
/// skip unpacking when the layout already holds the layer.
pub fn layer_fingerprint(req: &LayerRequest<'_>) -> crate::image::Digest {
    let mut h = crate::image::Sha256Hasher::new();
    let o = req.options;
    h.update(
        format!(
            "{LAYOUT_VERSION}\n{:?} {} {} standalone={} slim={} arch={}\n",
            o.codec, o.block_size, o.mtime, req.standalone, req.slim, req.architecture
        )
        .as_bytes(),
    );
    let mut debs: Vec<&DebFile> = req.debs.iter().collect();
    debs.sort_by(|a, b| a.package.name.cmp(&b.package.name));
    for d in debs {
        h.update(format!("deb {} {}\n", d.package.name, d.sha256).as_bytes());
    }
    for (p, t) in &req.base.symlinks {
        h.update(b"link ");
        h.update(p.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(t.as_os_str().as_encoded_bytes());
        h.update(b"\n");
    }
    for d in &req.base.dirs {
        h.update(b"dir ");
        h.update(d.as_os_str().as_encoded_bytes());
        h.update(b"\n");
    }
    if let Some(s) = &req.base.dpkg_status {
        h.update(format!("status {}\n", super::fetch::Sha256::of(s)).as_bytes());
    }
    h.finish()
}

/// A one-line description of the layer for the image history.
pub fn history_line(report: &LayerReport) -> String {
    let names: Vec<&str> = report
        .packages
        .iter()
        .map(|p| p.split(' ').next().unwrap_or(p))
        .collect();
    format!("guildhall-image: Debian packages {}", names.join(" "))
}
